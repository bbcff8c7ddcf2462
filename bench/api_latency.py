"""Write-API latency under load, and outbox commit-to-task-start latency.

Starts, on 127.0.0.1 and a throwaway database: gunicorn serving the API,
the outbox relay and a Celery worker. Concurrent clients then post messages
at a fixed rate (open loop: request i is due at start + i/rate), and the
script reports
  - p50/p99 of POST /rooms/{id}/messages, beside a bare psycopg INSERT into
    messages measured in the same run (ratio = API / INSERT);
  - p50/p99 from outbox row to task start (outbox.started_at -
    outbox.created_at, stamped by the task base class), beside the goal
    (p50 <= 10 ms, p99 <= 100 ms). created_at is taken at the INSERT, a
    moment before COMMIT, so this slightly over-states commit-to-start.
Ends with one JSON line of the figures.

    python3 bench/api_latency.py [--rate 200] [--seconds 15] [--clients 24] [--rooms 8]
                                 [--api-workers 2] [--worker-concurrency 4]
                                 [--worker-pool prefork|threads]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.stack import (
    DATABASE_URL,
    Stack,
    bare_inserts,
    celery_worker,
    cpu_usage,
    open_loop,
    percentile,
    setup_rooms,
    throwaway_database,
    wait_until,
)
from tests.processes import free_port

GOAL_P50_MS, GOAL_P99_MS = 10.0, 100.0


def post_load(
    port: int, rooms: list[int], tokens: list[str], rate: float, seconds: float
) -> tuple[list[float], int]:
    """Post at `rate` per second for `seconds`, one client thread per user;
    the latency in ms of each request that succeeded, and the failures."""

    def post(conn, i: int) -> None:
        client = i % len(tokens)
        conn.request(
            "POST",
            f"/api/v1/rooms/{rooms[client % len(rooms)]}/messages",
            json.dumps({"content": f"load message {i} @bench1"}),
            {"Authorization": f"Bearer {tokens[client]}", "Content-Type": "application/json"},
        )

    replies = open_loop(port, rate, seconds, len(tokens), post)
    latencies = [reply.ms for reply in replies if reply.status == 201]
    return latencies, len(replies) - len(latencies)


def outbox_latencies(expected: int) -> dict[str, list[float]]:
    """Per task, in ms: row to task start (the figure), and its two legs:
    row to published (the relay) and published to started (broker, worker)."""
    query = (
        "SELECT count(*) FILTER (WHERE started_at IS NOT NULL) FROM outbox "
        "WHERE task_name = 'messages.index'"
    )
    legs = (
        "SELECT extract(epoch FROM started_at - created_at) * 1000, "
        "extract(epoch FROM sent_at - created_at) * 1000, "
        "extract(epoch FROM started_at - sent_at) * 1000 "
        "FROM outbox WHERE task_name = 'messages.index'"
    )
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        wait_until(
            lambda: conn.execute(query).fetchone()[0] >= expected, 120, "every task to start"
        )
        rows = conn.execute(legs).fetchall()
    return {
        name: [float(r[i]) for r in rows] for i, name in enumerate(("start", "relay", "broker"))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument(
        "--rooms",
        type=int,
        default=8,
        help="rooms the clients post into (1 = every post updates one hot row)",
    )
    parser.add_argument("--api-workers", type=int, default=2, help="gunicorn processes")
    parser.add_argument("--worker-concurrency", type=int, default=4, help="Celery children")
    parser.add_argument(
        "--worker-pool",
        default="prefork",
        choices=("prefork", "threads"),
        help="Celery pool of the default-queue worker",
    )
    args = parser.parse_args()

    with throwaway_database():
        port = free_port()
        base = f"http://127.0.0.1:{port}/api/v1"
        stack = Stack(
            port,
            args.api_workers,
            {
                "worker": celery_worker(
                    "default", "default", args.worker_concurrency, args.worker_pool
                )
            },
        )
        try:
            wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz").ok, 60, "the API")
            rooms, tokens = setup_rooms(base, args.clients, args.rooms)
            before = cpu_usage(stack.roots())
            api_ms, failures = post_load(port, rooms, tokens, args.rate, args.seconds)
            outbox_ms = outbox_latencies(len(api_ms))
            after = cpu_usage(stack.roots())
            task_ms = outbox_ms["start"]
            insert_ms = bare_inserts(rooms[0], 1, 500)
        finally:
            stack.stop()

    figures = {
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "clients": args.clients,
        "rooms": args.rooms,
        "api_workers": args.api_workers,
        "worker_concurrency": args.worker_concurrency,
        "worker_pool": args.worker_pool,
        "posts_ok": len(api_ms),
        "posts_failed": failures,
        "api_post_p50_ms": round(statistics.median(api_ms), 2),
        "api_post_p99_ms": round(percentile(api_ms, 99), 2),
        "bare_insert_p50_ms": round(statistics.median(insert_ms), 2),
        "bare_insert_p99_ms": round(percentile(insert_ms, 99), 2),
        "commit_to_start_p50_ms": round(statistics.median(task_ms), 2),
        "commit_to_start_p99_ms": round(percentile(task_ms, 99), 2),
        "relay_leg_p50_ms": round(statistics.median(outbox_ms["relay"]), 2),
        "broker_worker_leg_p50_ms": round(statistics.median(outbox_ms["broker"]), 2),
        "cpu_ms_per_post": {
            name: round((after[name] - before[name]) * 1000 / len(api_ms), 2) for name in after
        },
    }
    f = figures
    print(
        f"POST /rooms/{{id}}/messages at {args.rate:.0f}/s: {f['posts_ok']} ok, "
        f"{f['posts_failed']} failed"
    )
    print(
        f"  p50 {f['api_post_p50_ms']} ms vs bare INSERT {f['bare_insert_p50_ms']} ms "
        f"(x{f['api_post_p50_ms'] / f['bare_insert_p50_ms']:.1f})"
    )
    print(
        f"  p99 {f['api_post_p99_ms']} ms vs bare INSERT {f['bare_insert_p99_ms']} ms "
        f"(x{f['api_post_p99_ms'] / f['bare_insert_p99_ms']:.1f})"
    )
    print(f"outbox commit -> task start over {len(task_ms)} tasks:")
    print(
        f"  p50 {f['commit_to_start_p50_ms']} ms vs goal {GOAL_P50_MS} ms "
        f"(x{f['commit_to_start_p50_ms'] / GOAL_P50_MS:.2f})"
    )
    print(
        f"  p99 {f['commit_to_start_p99_ms']} ms vs goal {GOAL_P99_MS} ms "
        f"(x{f['commit_to_start_p99_ms'] / GOAL_P99_MS:.2f})"
    )
    print(
        f"  legs (p50): row -> published {f['relay_leg_p50_ms']} ms, "
        f"published -> started {f['broker_worker_leg_p50_ms']} ms"
    )
    print(
        "  CPU per post (ms): "
        + ", ".join(f"{name} {ms}" for name, ms in f["cpu_ms_per_post"].items())
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
