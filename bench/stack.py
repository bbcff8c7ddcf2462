"""What the end-to-end benchmarks share: the real stack on 127.0.0.1 as
child processes (gunicorn serving the API, the outbox relay, Celery
workers), a throwaway migrated database, users and rooms made through the
API, an open-loop request scheduler, CPU accounting from /proc, and
percentiles. Used by bench/api_latency.py and bench/load.py.

Redis: VEZA_BENCH_REDIS_URL (default DB 11); PostgreSQL admin connection:
VEZA_BENCH_ADMIN_URL.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import psycopg
import requests
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("VEZA_BENCH_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("VEZA_BENCH_REDIS_URL", "redis://127.0.0.1:6379/11")
BENCH_DB = f"veza_bench_{os.getpid()}"
DATABASE_URL = ADMIN_URL.rsplit("/", 1)[0] + "/" + BENCH_DB
PASSWORD = "bench password"


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def admin(statement: str, database: str) -> None:
    """`statement` with `{}` for the name of `database`."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql.SQL(statement).format(sql.Identifier(database)))


@contextmanager
def throwaway_database() -> Iterator[str]:
    """A freshly migrated database for one run, dropped afterwards whatever
    happened. Yields its URL."""
    admin("CREATE DATABASE {}", BENCH_DB)
    try:
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=ROOT,
            check=True,
            env={**os.environ, "DATABASE_URL": DATABASE_URL},
            capture_output=True,
        )
        yield DATABASE_URL
    finally:
        admin("DROP DATABASE IF EXISTS {} WITH (FORCE)", BENCH_DB)


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
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = (
            int(fields[1]),
            (int(fields[11]) + int(fields[12])) / ticks,
            cmdline,
        )
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


def bare_inserts(
    room: int, author: int, count: int, conn: psycopg.Connection | None = None
) -> list[float]:
    """The floor: one autocommitted INSERT into messages per round trip,
    on `conn` (autocommit) or a connection of its own; each one's latency
    in ms."""
    if conn is None:
        with psycopg.connect(DATABASE_URL, autocommit=True) as own:
            return bare_inserts(room, author, count, own)
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        conn.execute(
            "INSERT INTO messages (room_id, author_id, content) VALUES (%s, %s, %s)",
            (room, author, f"bare insert {i}"),
        )
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def celery_worker(name: str, queues: str, concurrency: int, pool: str = "prefork") -> list[str]:
    """The command line of a Celery worker serving `queues`."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker",
        "worker",
        "-Q",
        queues,
        "-c",
        str(concurrency),
        "-P",
        pool,
        "-n",
        f"bench-{name}-{os.getpid()}@%h",
        "--without-mingle",
        "--without-gossip",
        "-l",
        "WARNING",
    ]


class Stack:
    """The API server, the relay and the given Celery workers (name ->
    command line), as child processes sharing one log file."""

    def __init__(self, port: int, api_workers: int, workers: dict[str, list[str]]) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": DATABASE_URL,
            "REDIS_URL": REDIS_URL,
            "LOG_LEVEL": "WARNING",
            "DB_POOL_SIZE": "8",
            # The load comes from one address and few users by design: the
            # rate limits would answer it 429 (they have a test of their own).
            # bench/login_flood.py turns them on to measure them.
            "RATE_LIMIT_ENABLED": os.environ.get("RATE_LIMIT_ENABLED", "false"),
        }
        # Open for the stack's lifetime, shared by its processes; stop() closes it.
        self.log = open(f"/tmp/veza-bench-{os.getpid()}.log", "ab")  # noqa: SIM115
        argvs = {
            "api": [
                "gunicorn",
                "-w",
                str(api_workers),
                "-k",
                "gthread",
                "--threads",
                "6",
                "--keep-alive",
                "60",
                "-b",
                f"127.0.0.1:{port}",
                "--log-level",
                "warning",
                "api:create_app()",
            ],
            "relay": [sys.executable, "-m", "worker.cli", "relay"],
            **workers,
        }
        self.procs: dict[str, subprocess.Popen] = {}
        try:
            for name, argv in argvs.items():
                self.procs[name] = subprocess.Popen(
                    argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
                )
        except BaseException:
            self.stop()
            raise

    def roots(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items()}

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
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
        requests.post(
            f"{base}/auth/register",
            json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
        )
        login = requests.post(f"{base}/auth/login", json={"login": name, "password": PASSWORD})
        tokens.append(login.json()["access_token"])
    room_ids = [
        requests.post(
            f"{base}/rooms",
            json={"name": f"bench {r}"},
            headers={"Authorization": f"Bearer {tokens[r]}"},
        ).json()["id"]
        for r in range(rooms)
    ]
    for i, token in enumerate(tokens[rooms:], start=rooms):
        requests.post(
            f"{base}/rooms/{room_ids[i % rooms]}/members",
            json={},
            headers={"Authorization": f"Bearer {token}"},
        )
    return room_ids, tokens


NOT_SENT = 0  # Reply.status of a request still waiting for a client thread at the cutoff


class Reply(NamedTuple):
    index: int
    ms: float
    status: int | None  # None: the connection failed


def open_loop(
    port: int,
    rate: float,
    seconds: float,
    threads: int,
    send: Callable[[http.client.HTTPConnection, int], None],
    cutoff: float | None = None,
) -> list[Reply]:
    """Request i is due at start + i/rate whatever the earlier ones did.
    `send(conn, i)` issues request i on a keep-alive connection owned by
    the calling thread (http.client: the client should cost the shared CPUs
    as little as possible); the reply is read and timed here. With a
    cutoff, requests that no thread could start within `cutoff` seconds of
    the start are not sent (status NOT_SENT): when the server serves fewer
    than `rate`, the run still ends on time."""
    local = threading.local()
    replies: list[Reply] = []
    lock = threading.Lock()

    def request(i: int) -> None:
        if cutoff is not None and time.perf_counter() - start > cutoff:
            with lock:
                replies.append(Reply(i, 0.0, NOT_SENT))
            return
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port)
        started = time.perf_counter()
        try:
            send(local.conn, i)
            response = local.conn.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException):
            local.conn.close()  # counted as a failure; the next request reconnects
            status = None
        reply = Reply(i, (time.perf_counter() - started) * 1000, status)
        with lock:
            replies.append(reply)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        start = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(request, i)
    return replies
