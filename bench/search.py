"""Message search: GET /search/messages's query (veza/messages/search.py)
beside a bare SELECT on the same index, in one run.

Data: MESSAGES messages in four languages (English, French, German,
Spanish), a quarter each, over ROOMS public rooms, each stemmed in its own
language as messages.index leaves it (search_config, search_vector), made
set-based in SQL. Words: a common one (in about one message in ten of its
language) and a rare one (about one in ten thousand).

Each query runs ROUNDS times; p50 and p95 of ours (the search: visibility,
ranking, snippets, the words stemmed in every configuration) beside the
bare `SELECT id FROM messages WHERE search_vector @@ to_tsquery(<its
language>, word) LIMIT 20` (the index alone). Goal: p95 <= 50 ms and
<= 1.5x the bare query. The last line is one JSON object.

Usage: VEZA_BENCH_ADMIN_URL=postgresql://root@127.0.0.1:5432/postgres \\
    python3 bench/search.py [--messages 1000000] [--rounds 50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.maintenance_data import bench_database

# Per language: its configuration, filler words, a common word and a rare one.
LANGUAGES = {
    "english": ("the team shipped a release and the users were happy", "deploy", "zeppelin"),
    "french": ("les coureurs courent dans le parc tous les matins", "plage", "ornithorynque"),
    "german": ("die mannschaft hat eine neue version ausgeliefert", "zug", "zeitgeist"),
    "spanish": ("el equipo publicó una nueva versión para todos", "playa", "murciélago"),
}


def generate(conn: psycopg.Connection, messages: int, rooms: int) -> None:
    conn.execute(
        "SELECT create_monthly_partitions('messages', (now() - interval '2 months')::date, 4)"
    )
    conn.execute(
        "INSERT INTO users (username, email, password_hash)"
        " VALUES ('viewer', 'viewer@example.com', 'x')"
    )
    conn.execute(
        "INSERT INTO rooms (name, owner_id) SELECT 'room' || g, 1 FROM generate_series(1, %s) g",
        (rooms,),
    )
    with conn.transaction():
        conn.execute("ALTER TABLE messages DISABLE TRIGGER USER")
        for n, (config, (filler, common, rare)) in enumerate(LANGUAGES.items()):
            conn.execute(
                "INSERT INTO messages (room_id, author_id, content, created_at, search_config)"
                " SELECT g %% %(rooms)s + 1, 1,"
                "  %(filler)s || ' ' || g"
                "  || CASE WHEN g %% 10 = 0 THEN ' ' || %(common)s ELSE '' END"
                "  || CASE WHEN g %% 10000 = 0 THEN ' ' || %(rare)s ELSE '' END,"
                "  now() - (g::float / %(count)s) * interval '30 days', %(config)s::regconfig"
                " FROM generate_series(%(first)s::int, %(last)s::int) g",
                {
                    "rooms": rooms,
                    "filler": filler,
                    "common": common,
                    "rare": rare,
                    "count": messages,
                    "config": config,
                    "first": n * messages // 4 + 1,
                    "last": (n + 1) * messages // 4,
                },
            )
        conn.execute("UPDATE messages SET search_vector = to_tsvector(search_config, content)")
        conn.execute("ALTER TABLE messages ENABLE TRIGGER USER")
    conn.execute("VACUUM ANALYZE")


def timings(action, rounds: int) -> list[float]:
    spent = []
    for _ in range(rounds):
        started = time.perf_counter()
        action()
        spent.append((time.perf_counter() - started) * 1000)
    return spent


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--rooms", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args()

    figures: dict[str, object] = {"messages": args.messages, "rounds": args.rounds}
    with bench_database("veza_bench_search") as url:
        from db.engine import libpq_url, session_scope
        from veza.messages.search import Filters, search

        conn = psycopg.connect(libpq_url(url, kind="maintenance"), autocommit=True)
        started = time.perf_counter()
        generate(conn, args.messages, args.rooms)
        print(f"generated {args.messages} messages in {time.perf_counter() - started:.0f} s")
        worst = 0.0
        for config, (_, common, rare) in LANGUAGES.items():
            for kind, word in (("common", common), ("rare", rare)):

                def ours(word: str = word) -> None:
                    with session_scope() as session:
                        search(session, 1, word, Filters(), None, 21)

                def bare(word: str = word, config: str = config) -> None:
                    conn.execute(
                        "SELECT id FROM messages WHERE search_vector @@ to_tsquery("
                        "CAST(%s AS regconfig), %s) LIMIT 21",
                        (config, word),
                    ).fetchall()

                ours_ms, bare_ms = timings(ours, args.rounds), timings(bare, args.rounds)
                key = f"{config}_{kind}"
                figures |= {
                    f"{key}_p50_ms": round(statistics.median(ours_ms), 2),
                    f"{key}_p95_ms": round(p95(ours_ms), 2),
                    f"{key}_bare_p50_ms": round(statistics.median(bare_ms), 2),
                    f"{key}_bare_p95_ms": round(p95(bare_ms), 2),
                    f"{key}_p95_ratio": round(p95(ours_ms) / p95(bare_ms), 2),
                }
                worst = max(worst, p95(ours_ms))
                ours_p50, bare_p50 = statistics.median(ours_ms), statistics.median(bare_ms)
                print(
                    f"{key:<18} ours p50 {ours_p50:7.2f} ms p95 {p95(ours_ms):7.2f} ms"
                    f" | bare p50 {bare_p50:7.2f} ms p95 {p95(bare_ms):7.2f} ms"
                    f" | p95 ratio {p95(ours_ms) / p95(bare_ms):5.2f}"
                )
        conn.close()
    figures["worst_p95_ms"] = round(worst, 2)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
