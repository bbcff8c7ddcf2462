"""Sustained write load with uploads mixed in: do the workers keep up?

    python3 bench/load.py [--rate 200] [--seconds 60] [--upload-share 0.1]
                          [--clients 24] [--rooms 8] [--api-workers 2]
                          [--message-concurrency 4] [--file-concurrency 2]
                          [--drain-timeout 90]

Starts the real stack on 127.0.0.1 with a throwaway database (bench/stack.py):
gunicorn serving the API, the outbox relay, a Celery worker for `default`
(messages.index), one for `files,scan` (the file pipeline) and a clamd
(tests/clamav.py, one signature). Clients then write at a fixed rate, open
loop: `--upload-share` of the writes are POST /rooms/{id}/files with a small
PNG or JPEG made by Pillow (every other one a repeat of a few popular
images, so the duplicate path runs too), the rest POST /rooms/{id}/messages.

Reported, each beside a same-run baseline where one makes sense:
  - requests served and errors; served rate vs offered rate. The client
    has --clients threads: when the API serves fewer writes than offered,
    requests wait for a thread, and those still waiting 5 s after the load
    window are not sent (counted apart from errors), so a run stays short;
  - queue depth every second (worker.metrics.queue_depth for each queue in
    worker.celery_app.QUEUES, and the outbox backlog), printed every 5 s;
    its maximum, its value when the load stopped, whether it drained
    after the load stopped and how long that took;
  - its maximum over the last half of the load beside the first half's
    (bounded: no higher);
  - commit-to-done latency p50/p90/p99, beside commit-to-start;
  - CPU ms per served write of each process (and PostgreSQL), over load
    and drain, beside the CPU of a bare INSERT into messages (500 of them
    from one connection once the work has drained: PostgreSQL's and this
    script's CPU per INSERT).

How "done" is measured. The outbox row id is the task id of the task it
becomes, and Celery carries it as root_id into every task that task
chains. This script listens to the workers' own Celery events (they send
them anyway for Flower and the exporter): task-received gives each task's
root_id, task-succeeded its finish timestamp. The relay publishes many
messages.index rows as one messages.index_batch task, whose arguments
(in its task-received event) name every row it carries. A message post is
done when the task that carried its row (alone or in a batch) succeeded; an
upload when the last task of its chain (process -> scan -> thumbnail)
succeeded and the file row is in a final state (completed or failed).
Commit time is outbox.created_at, stamped at the INSERT a moment before
COMMIT (so both figures slightly over-state); the baseline commit-to-start
is outbox.started_at, stamped by the task base class when the first task
starts. All timestamps come from
the one machine's clock. Listening costs this script some CPU (three events
per task), counted in its "client" CPU.

The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import os
import random
import shutil
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import psycopg
import requests
import urllib3

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# The test helpers set the environment (a temporary STORAGE_DIR, CLAMD_SOCKET)
# and bring the clamd used below; the bench's own database and Redis DB win.
from tests import conftest  # noqa: F401
from tests.clamav import CLAMD_DIR, Clamd

# isort: split
from bench.stack import (
    DATABASE_URL,
    NOT_SENT,
    REDIS_URL,
    Stack,
    bare_inserts,
    celery_worker,
    cpu_seconds_by_process,
    cpu_usage,
    open_loop,
    percentile,
    setup_rooms,
    throwaway_database,
    wait_until,
)
from tests.processes import free_port
from veza.settings import reload_settings

os.environ["DATABASE_URL"], os.environ["REDIS_URL"] = DATABASE_URL, REDIS_URL
reload_settings()

import redis  # noqa: E402

from veza import jobs, outbox  # noqa: E402
from worker.celery_app import QUEUES, app  # noqa: E402
from worker.metrics import queue_depth  # noqa: E402

POPULAR_IMAGES = 6
FINAL_FILE_STATES = ("completed", "failed")
QUEUES_AND_OUTBOX = (*QUEUES, "outbox")
# A write not started by seconds + this (all client threads busy: the API
# serves fewer than offered) is counted as not sent, so a run ends on time.
CUTOFF_GRACE_S = 5


def make_image(seed: int) -> tuple[str, bytes, str]:
    """A small picture whose pixels depend on `seed`: (name, bytes, type)."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    image = Image.new("RGB", (160, 120), tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = rng.randrange(140), rng.randrange(100)
        draw.ellipse(
            (x, y, x + rng.randrange(10, 60), y + rng.randrange(10, 60)),
            fill=tuple(rng.randrange(256) for _ in range(3)),
        )
    out = io.BytesIO()
    kind = ("PNG", "png", "image/png") if seed % 2 else ("JPEG", "jpg", "image/jpeg")
    image.save(out, kind[0])
    return f"picture-{seed}.{kind[1]}", out.getvalue(), kind[2]


def upload_bodies(count: int) -> list[tuple[bytes, str]]:
    """Multipart bodies, encoded before the load so the client stays cheap:
    even uploads are unique pictures, odd ones repeat a few popular ones."""
    bodies = []
    for j in range(count):
        seed = j if j % 2 == 0 else -1 - (j % POPULAR_IMAGES)
        bodies.append(urllib3.encode_multipart_formdata({"file": make_image(seed)}))
    return bodies


class TaskEvents(threading.Thread):
    """Collects task-received (root_id) and task-succeeded (timestamp) events
    from the workers, until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.root_of: dict[str, str] = {}
        self.rows_of: dict[str, list[str]] = {}  # batch task -> the outbox rows it carries
        self.succeeded_at: dict[str, float] = {}
        self.workers_seen: set[str] = set()
        self.receiver = None

    def run(self) -> None:
        with app.connection() as connection:
            self.receiver = app.events.Receiver(
                connection,
                handlers={
                    "task-received": self.received,
                    "task-succeeded": lambda e: self.succeeded_at.__setitem__(
                        e["uuid"], e["timestamp"]
                    ),
                    "worker-heartbeat": lambda e: self.workers_seen.add(e["hostname"]),
                },
            )
            self.receiver.capture(limit=None, timeout=None, wakeup=True)

    def received(self, event: dict) -> None:
        self.root_of[event["uuid"]] = event["root_id"]
        if event["name"] == jobs.INDEX_MESSAGES.name:
            rows = ast.literal_eval(event["args"])[0]
            self.rows_of[event["uuid"]] = [row_id for row_id, _, _ in rows]

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        if self.is_alive():
            self.join(5)

    def done_times(self) -> dict[str, float]:
        """Outbox row id -> when the last succeeded task rooted there, or
        carrying it in a batch, finished."""
        done: dict[str, float] = {}
        for task, at in list(self.succeeded_at.items()):  # the listener thread adds meanwhile
            for row in self.rows_of.get(task) or [self.root_of.get(task, task)]:
                done[row] = max(at, done.get(row, at))
        return done


class DepthSampler(threading.Thread):
    """Every second: each queue's depth and the outbox backlog."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(REDIS_URL)
        self.samples: list[tuple[float, dict[str, int]]] = []
        self.started = time.monotonic()
        self.stopping = threading.Event()

    def sample(self) -> dict[str, int]:
        depths = {queue: queue_depth(self.client, queue) for queue in QUEUES}
        return {**depths, "outbox": outbox.summary().unsent}

    def run(self) -> None:
        while not self.stopping.wait(1.0 - (time.monotonic() - self.started) % 1.0):
            self.samples.append((time.monotonic() - self.started, self.sample()))

    def stop(self) -> None:
        self.stopping.set()
        if self.is_alive():
            self.join(5)


def write_load(port: int, rooms: list[int], tokens: list[str], args) -> tuple[list, list[int]]:
    """Writes at args.rate for args.seconds; returns the replies and the
    indexes of the requests that were uploads."""
    writes = int(args.rate * args.seconds)
    uploads = [
        i for i in range(writes) if int((i + 1) * args.upload_share) > int(i * args.upload_share)
    ]
    bodies = dict(zip(uploads, upload_bodies(len(uploads)), strict=True))

    def write(conn, i: int) -> None:
        client = i % len(tokens)
        room = rooms[client % len(rooms)]
        headers = {"Authorization": f"Bearer {tokens[client]}"}
        if i in bodies:
            body, content_type = bodies[i]
            conn.request(
                "POST",
                f"/api/v1/rooms/{room}/files",
                body,
                {**headers, "Content-Type": content_type},
            )
        else:
            conn.request(
                "POST",
                f"/api/v1/rooms/{room}/messages",
                json.dumps({"content": f"load message {i}"}),
                {**headers, "Content-Type": "application/json"},
            )

    return open_loop(
        port, args.rate, args.seconds, len(tokens), write, cutoff=args.seconds + CUTOFF_GRACE_S
    ), uploads


def unfinished(db: psycopg.Connection, events: TaskEvents) -> int:
    """Writes whose work is not done yet: unsent or unfinished messages.index
    tasks, and files not in a final state."""
    message_rows = [
        str(row[0])
        for row in db.execute("SELECT id FROM outbox WHERE task_name = 'messages.index'")
    ]
    open_files = db.execute(
        "SELECT count(*) FROM files WHERE processing_status::text <> ALL(%s)",
        (list(FINAL_FILE_STATES),),
    ).fetchone()[0]
    done = events.done_times()
    return sum(row not in done for row in message_rows) + open_files


def latencies(
    db: psycopg.Connection, events: TaskEvents, task_name: str
) -> tuple[list[float], list[float]]:
    """Per outbox row of `task_name`, in ms: commit to done, commit to start."""
    rows = db.execute(
        "SELECT id::text, extract(epoch FROM created_at), "
        "extract(epoch FROM started_at - created_at) * 1000 FROM outbox WHERE task_name = %s",
        (task_name,),
    ).fetchall()
    done = events.done_times()
    to_done = [
        (done[row_id] - float(created)) * 1000 for row_id, created, _ in rows if row_id in done
    ]
    to_start = [float(start) for _, _, start in rows if start is not None]
    return to_done, to_start


def message_tasks(events: TaskEvents) -> dict[str, float]:
    """How the relay published the messages.index rows: tasks of one row,
    batch tasks, and rows per batch."""
    singles = sum(
        1 for task, root in events.root_of.items() if task == root and task not in events.rows_of
    )
    sizes = [len(rows) for rows in events.rows_of.values()]
    return {
        "batches": len(sizes),
        "rows_per_batch_mean": round(statistics.mean(sizes), 1) if sizes else 0,
        "rows_per_batch_max": max(sizes, default=0),
        "other_root_tasks": singles,
    }


def spread(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p90": None, "p99": None}
    return {
        "p50": round(statistics.median(values), 1),
        "p90": round(percentile(values, 90), 1),
        "p99": round(percentile(values, 99), 1),
    }


def halves_max(samples: list[tuple[float, dict[str, int]]], load_end: float) -> dict:
    """Each queue's (and the outbox's) maximum depth over the first and the
    last half of the load: bounded when the second is no higher."""
    first = [d for t, d in samples if t <= load_end / 2]
    last = [d for t, d in samples if load_end / 2 < t <= load_end]
    return {
        name: [max((d[name] for d in half), default=0) for half in (first, last)]
        for name in QUEUES_AND_OUTBOX
    }


def bare_insert_cpu(room: int, author: int, count: int = 500) -> dict[str, float]:
    """CPU ms per bare INSERT into messages: its PostgreSQL backend's (read
    while the connection lives) and this script's."""
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        backend = conn.info.backend_pid
        before, client_before = cpu_seconds_by_process()[backend][1], time.process_time()
        bare_inserts(room, author, count, conn)
        after, client_after = cpu_seconds_by_process()[backend][1], time.process_time()
    return {
        "postgres": round((after - before) * 1000 / count, 3),
        "client": round((client_after - client_before) * 1000 / count, 3),
    }


def print_series(samples: list[tuple[float, dict[str, int]]], load_end: float) -> None:
    print("queue depth (every 5 s; * = load running):")
    print("      t  " + " ".join(f"{name:>11}" for name in samples[0][1]))
    for t, depths in samples[4::5]:
        mark = "*" if t <= load_end else " "
        print(f"  {t:5.0f}s{mark} " + " ".join(f"{n:>11}" for n in depths.values()))


def run(args) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}/api/v1"
    clamd_server = Clamd()
    events = TaskEvents()
    sampler = DepthSampler()
    stack = None
    try:
        clamd_server.start()
        stack = Stack(
            port,
            args.api_workers,
            {
                "worker-default": celery_worker("default", "default", args.message_concurrency),
                "worker-files": celery_worker("files", "files,scan", args.file_concurrency),
            },
        )
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz").ok, 60, "the API")
        rooms, tokens = setup_rooms(base, args.clients, args.rooms)
        events.start()
        wait_until(lambda: len(events.workers_seen) >= 2, 30, "both workers' heartbeats")
        before = cpu_usage(stack.roots())
        sampler.started = time.monotonic()
        sampler.start()
        replies, uploads = write_load(port, rooms, tokens, args)
        load_end = time.monotonic() - sampler.started
        with psycopg.connect(DATABASE_URL, autocommit=True) as db:
            deadline = time.monotonic() + args.drain_timeout
            while unfinished(db, events) and time.monotonic() < deadline:
                time.sleep(0.25)
            drained_after = time.monotonic() - sampler.started - load_end
            left = unfinished(db, events)
            time.sleep(1)  # the last events of chains whose row is already final
            after = cpu_usage(stack.roots())
            sampler.stop()
            bare_cpu = bare_insert_cpu(rooms[0], 1)
            events.stop()
            message_done, message_start = latencies(db, events, "messages.index")
            file_done, file_start = latencies(db, events, "files.process")
            file_states = dict(
                db.execute(
                    "SELECT processing_status::text, count(*) FROM files GROUP BY 1"
                ).fetchall()
            )
    finally:
        sampler.stop()
        events.stop()
        if stack is not None:
            stack.stop()
        clamd_server.stop()

    upload_set = set(uploads)
    served = [r for r in replies if r.status in (201, 202)]
    not_sent = sum(reply.status == NOT_SENT for reply in replies)
    errors = Counter(
        str(reply.status) for reply in replies if reply.status not in (201, 202, NOT_SENT)
    )
    at_load_end = next(
        (d for t, d in reversed(sampler.samples) if t <= load_end), sampler.samples[0][1]
    )
    print_series(sampler.samples, load_end)
    writes = len(replies)
    return {
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "upload_share": args.upload_share,
        "clients": args.clients,
        "rooms": args.rooms,
        "api_workers": args.api_workers,
        "message_concurrency": args.message_concurrency,
        "file_concurrency": args.file_concurrency,
        "cpus": os.cpu_count(),
        "writes_offered": writes,
        "uploads_offered": len(uploads),
        "served": len(served),
        "not_sent_by_cutoff": not_sent,
        "errors": sum(errors.values()),
        "errors_by_status": dict(errors),
        "load_wall_seconds": round(load_end, 1),
        "served_rate_per_s": round(len(served) / load_end, 1),
        "api_message_ms": spread([r.ms for r in served if r.index not in upload_set]),
        "api_upload_ms": spread([r.ms for r in served if r.index in upload_set]),
        "depth_max": {name: max(d[name] for _, d in sampler.samples) for name in QUEUES_AND_OUTBOX},
        "depth_max_first_last_half": halves_max(sampler.samples, load_end),
        "depth_at_load_end": at_load_end,
        "depth_final": sampler.samples[-1][1],
        "drained": left == 0,
        "drain_seconds": round(drained_after, 1),
        "unfinished_at_end": left,
        "depth_series_5s": [[round(t), *d.values()] for t, d in sampler.samples[4::5]],
        "message_commit_to_done_ms": spread(message_done),
        "message_commit_to_start_ms": spread(message_start),
        "messages_done": len(message_done),
        "message_tasks": message_tasks(events),
        "upload_commit_to_done_ms": spread(file_done),
        "upload_commit_to_start_ms": spread(file_start),
        "uploads_done": len(file_done),
        "file_states": file_states,
        "cpu_ms_per_write": {
            name: round((after[name] - before[name]) * 1000 / max(len(served), 1), 2)
            for name in after
        },
        "bare_insert_cpu_ms": bare_cpu,
    }


def ratio(ours: float | None, baseline: float | None) -> str:
    return f"x{ours / baseline:.2f}" if ours and baseline else "n/a"


def report(f: dict) -> None:
    offered = f["writes_offered"] / f["seconds"]
    print(
        f"writes: {f['writes_offered']} offered ({f['uploads_offered']} uploads), "
        f"{f['served']} served, {f['errors']} errors {f['errors_by_status'] or ''}, "
        f"{f['not_sent_by_cutoff']} not sent (every client thread busy until the cutoff)"
    )
    print(
        f"  served {f['served_rate_per_s']}/s vs offered {offered:.0f}/s "
        f"({ratio(f['served_rate_per_s'], offered)})"
    )
    for kind in ("message", "upload"):
        api = f[f"api_{kind}_ms"]
        print(f"  POST {kind}: p50 {api['p50']} ms, p99 {api['p99']} ms")
    print("queue depth: max " + ", ".join(f"{k} {v}" for k, v in f["depth_max"].items()))
    print("  at load end " + ", ".join(f"{k} {v}" for k, v in f["depth_at_load_end"].items()))
    print(
        "  max in the first vs the last half of the load: "
        + ", ".join(
            f"{k} {first} vs {last}{'' if last <= first else ' (GROWING)'}"
            for k, (first, last) in f["depth_max_first_last_half"].items()
        )
    )
    print(
        f"  drained: {f['drained']} ({f['drain_seconds']} s after the load stopped vs "
        f"{f['seconds']} s of load, x{f['drain_seconds'] / f['seconds']:.2f}; "
        f"{f['unfinished_at_end']} writes unfinished)"
    )
    for kind, count in (("message", "messages_done"), ("upload", "uploads_done")):
        done, start = f[f"{kind}_commit_to_done_ms"], f[f"{kind}_commit_to_start_ms"]
        print(f"{kind} commit -> done over {f[count]} writes (vs commit -> start):")
        for pct in ("p50", "p90", "p99"):
            print(f"  {pct} {done[pct]} ms vs {start[pct]} ms ({ratio(done[pct], start[pct])})")
    tasks = f["message_tasks"]
    print(
        f"messages.index rows went as {tasks['batches']} batch tasks of"
        f" {tasks['rows_per_batch_mean']} rows on average (max {tasks['rows_per_batch_max']});"
        f" {tasks['other_root_tasks']} tasks of one row or of other jobs"
    )
    print(f"file states: {f['file_states']}")
    cpu, bare = f["cpu_ms_per_write"], f["bare_insert_cpu_ms"]
    print("CPU per write (ms): " + ", ".join(f"{name} {ms}" for name, ms in cpu.items()))
    total, bare_total = sum(cpu.values()), sum(bare.values())
    print(
        f"  PostgreSQL {cpu['postgres']} vs a bare INSERT's {bare['postgres']}"
        f" ({ratio(cpu['postgres'], bare['postgres'])}); all processes {total:.2f} vs the"
        f" bare INSERT's PostgreSQL + client {bare_total:.3f} ({ratio(total, bare_total)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200, help="writes per second")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--upload-share", type=float, default=0.1)
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--rooms", type=int, default=8)
    parser.add_argument("--api-workers", type=int, default=2, help="gunicorn processes")
    parser.add_argument(
        "--message-concurrency", type=int, default=4, help="children of the default-queue worker"
    )
    parser.add_argument(
        "--file-concurrency", type=int, default=2, help="children of the files,scan worker"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=90,
        help="seconds to wait for the work to finish after the load",
    )
    args = parser.parse_args()
    try:
        with throwaway_database():
            figures = run(args)
    finally:
        from db.engine import dispose_engines

        dispose_engines()
        shutil.rmtree(os.environ["STORAGE_DIR"], ignore_errors=True)
        shutil.rmtree(CLAMD_DIR, ignore_errors=True)
    report(figures)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
