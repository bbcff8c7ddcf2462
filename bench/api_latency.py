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
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("VEZA_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("VEZA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
BENCH_DB = f"veza_bench_{os.getpid()}"
DATABASE_URL = ADMIN_URL.rsplit("/", 1)[0] + "/" + BENCH_DB
GOAL_P50_MS, GOAL_P99_MS = 10.0, 100.0
PASSWORD = "bench password"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def admin(sql: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


def cpu_seconds_by_process() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, user+system CPU seconds, command line), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        table[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / ticks,
                                  cmdline)
    return table


def cpu_usage(roots: dict[str, int]) -> dict[str, float]:
    """CPU seconds used so far by each root process with its descendants,
    and by the PostgreSQL backends serving the bench database."""
    table = cpu_seconds_by_process()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)

    def tree(pid: int) -> float:
        return table.get(pid, (0, 0.0, ""))[1] + sum(tree(c) for c in children.get(pid, []))

    usage = {name: tree(pid) for name, pid in roots.items()}
    usage["postgres"] = sum(cpu for _, cpu, cmd in table.values() if BENCH_DB in cmd)
    usage["client (this script)"] = tree(os.getpid()) - sum(usage[n] for n in roots)
    return usage


class Stack:
    """The API server, relay and worker, as child processes."""

    def __init__(self, port: int, api_workers: int, worker_concurrency: int,
                 worker_pool: str) -> None:
        env = {**os.environ, "DATABASE_URL": DATABASE_URL, "REDIS_URL": REDIS_URL,
               "LOG_LEVEL": "WARNING", "DB_POOL_SIZE": "8"}
        self.log = open(f"/tmp/veza-bench-{os.getpid()}.log", "ab")
        argvs = [
            ["gunicorn", "-w", str(api_workers), "-k", "gthread", "--threads", "6",
             "--keep-alive", "60", "-b", f"127.0.0.1:{port}",
             "--log-level", "warning", "api:create_app()"],
            [sys.executable, "-m", "worker.cli", "relay"],
            [sys.executable, "-m", "celery", "-A", "worker", "worker", "-Q", "default",
             "-c", str(worker_concurrency), "-P", worker_pool,
             "-n", f"bench-{os.getpid()}@%h", "--without-mingle", "--without-gossip",
             "-l", "WARNING"],
        ]
        self.procs = [subprocess.Popen(argv, cwd=ROOT, env=env, stdout=self.log,
                                       stderr=subprocess.STDOUT) for argv in argvs]

    def roots(self) -> dict[str, int]:
        return dict(zip(("api", "relay", "worker"), (p.pid for p in self.procs)))

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.log.close()


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if value := predicate():
                return value
        except (requests.ConnectionError, psycopg.OperationalError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def setup_rooms(base: str, clients: int, rooms: int) -> tuple[list[int], list[str]]:
    """One user per client, `rooms` rooms; client i is a member of room
    i % rooms and posts there. Returns the room ids and the users' tokens."""
    tokens = []
    for i in range(clients):
        name = f"bench{i}"
        requests.post(f"{base}/auth/register", json={
            "username": name, "email": f"{name}@example.com", "password": PASSWORD})
        login = requests.post(f"{base}/auth/login", json={"login": name, "password": PASSWORD})
        tokens.append(login.json()["access_token"])
    room_ids = [requests.post(f"{base}/rooms", json={"name": f"bench {r}"},
                              headers={"Authorization": f"Bearer {tokens[r]}"}).json()["id"]
                for r in range(rooms)]
    for i, token in enumerate(tokens[rooms:], start=rooms):
        requests.post(f"{base}/rooms/{room_ids[i % rooms]}/members", json={},
                      headers={"Authorization": f"Bearer {token}"})
    return room_ids, tokens


def post_load(port: int, rooms: list[int], tokens: list[str], rate: float, seconds: float
              ) -> tuple[list[float], int]:
    """Post at `rate` per second for `seconds`; each request's latency in ms.
    http.client with one keep-alive connection per client thread: the
    client should cost the shared CPUs as little as possible."""
    local = threading.local()
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()

    def post(i: int) -> None:
        nonlocal failures
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port)
        body = json.dumps({"content": f"load message {i} @bench1"})
        client = i % len(tokens)
        headers = {"Authorization": f"Bearer {tokens[client]}",
                   "Content-Type": "application/json"}
        started = time.perf_counter()
        try:
            local.conn.request("POST", f"/api/v1/rooms/{rooms[client % len(rooms)]}/messages",
                               body, headers)
            response = local.conn.getresponse()
            response.read()
            ok = response.status == 201
        except (OSError, http.client.HTTPException):
            local.conn.close()  # counted as a failure; the next request reconnects
            ok = False
        elapsed = (time.perf_counter() - started) * 1000
        with lock:
            if ok:
                latencies.append(elapsed)
            else:
                failures += 1

    total = int(rate * seconds)
    with ThreadPoolExecutor(max_workers=len(tokens)) as pool:
        start = time.perf_counter()
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(post, i)
    return latencies, failures


def bare_inserts(room: int, author: int, count: int) -> list[float]:
    """The floor: one autocommitted INSERT into messages per round trip."""
    latencies = []
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        for i in range(count):
            started = time.perf_counter()
            conn.execute("INSERT INTO messages (room_id, author_id, content) VALUES (%s, %s, %s)",
                         (room, author, f"bare insert {i}"))
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def outbox_latencies(expected: int) -> dict[str, list[float]]:
    """Per task, in ms: row to task start (the figure), and its two legs:
    row to published (the relay) and published to started (broker, worker)."""
    query = ("SELECT count(*) FILTER (WHERE started_at IS NOT NULL) FROM outbox "
             "WHERE task_name = 'messages.index'")
    legs = ("SELECT extract(epoch FROM started_at - created_at) * 1000, "
            "extract(epoch FROM sent_at - created_at) * 1000, "
            "extract(epoch FROM started_at - sent_at) * 1000 "
            "FROM outbox WHERE task_name = 'messages.index'")
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        wait_until(lambda: conn.execute(query).fetchone()[0] >= expected, 120,
                   "every task to start")
        rows = conn.execute(legs).fetchall()
    return {name: [float(r[i]) for r in rows]
            for i, name in enumerate(("start", "relay", "broker"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--rooms", type=int, default=8,
                        help="rooms the clients post into (1 = every post updates one hot row)")
    parser.add_argument("--api-workers", type=int, default=2, help="gunicorn processes")
    parser.add_argument("--worker-concurrency", type=int, default=4, help="Celery children")
    parser.add_argument("--worker-pool", default="prefork", choices=("prefork", "threads"),
                        help="Celery pool of the default-queue worker")
    args = parser.parse_args()

    admin(f'CREATE DATABASE "{BENCH_DB}"')
    subprocess.run([sys.executable, "-m", "alembic", "upgrade", "head"], cwd=ROOT, check=True,
                   env={**os.environ, "DATABASE_URL": DATABASE_URL}, capture_output=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}/api/v1"
    stack = Stack(port, args.api_workers, args.worker_concurrency, args.worker_pool)
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
        admin(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)')

    figures = {
        "rate_per_s": args.rate, "seconds": args.seconds, "clients": args.clients,
        "rooms": args.rooms,
        "api_workers": args.api_workers, "worker_concurrency": args.worker_concurrency,
        "worker_pool": args.worker_pool,
        "posts_ok": len(api_ms), "posts_failed": failures,
        "api_post_p50_ms": round(statistics.median(api_ms), 2),
        "api_post_p99_ms": round(percentile(api_ms, 99), 2),
        "bare_insert_p50_ms": round(statistics.median(insert_ms), 2),
        "bare_insert_p99_ms": round(percentile(insert_ms, 99), 2),
        "commit_to_start_p50_ms": round(statistics.median(task_ms), 2),
        "commit_to_start_p99_ms": round(percentile(task_ms, 99), 2),
        "relay_leg_p50_ms": round(statistics.median(outbox_ms["relay"]), 2),
        "broker_worker_leg_p50_ms": round(statistics.median(outbox_ms["broker"]), 2),
        "cpu_ms_per_post": {name: round((after[name] - before[name]) * 1000 / len(api_ms), 2)
                            for name in after},
    }
    f = figures
    print(f"POST /rooms/{{id}}/messages at {args.rate:.0f}/s: {f['posts_ok']} ok, "
          f"{f['posts_failed']} failed")
    print(f"  p50 {f['api_post_p50_ms']} ms vs bare INSERT {f['bare_insert_p50_ms']} ms "
          f"(x{f['api_post_p50_ms'] / f['bare_insert_p50_ms']:.1f})")
    print(f"  p99 {f['api_post_p99_ms']} ms vs bare INSERT {f['bare_insert_p99_ms']} ms "
          f"(x{f['api_post_p99_ms'] / f['bare_insert_p99_ms']:.1f})")
    print(f"outbox commit -> task start over {len(task_ms)} tasks:")
    print(f"  p50 {f['commit_to_start_p50_ms']} ms vs goal {GOAL_P50_MS} ms "
          f"(x{f['commit_to_start_p50_ms'] / GOAL_P50_MS:.2f})")
    print(f"  p99 {f['commit_to_start_p99_ms']} ms vs goal {GOAL_P99_MS} ms "
          f"(x{f['commit_to_start_p99_ms'] / GOAL_P99_MS:.2f})")
    print(f"  legs (p50): row -> published {f['relay_leg_p50_ms']} ms, "
          f"published -> started {f['broker_worker_leg_p50_ms']} ms")
    print("  CPU per post (ms): " + ", ".join(
        f"{name} {ms}" for name, ms in f["cpu_ms_per_post"].items()))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
