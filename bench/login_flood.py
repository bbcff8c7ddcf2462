"""A login flood against the API as shipped, with and without rate limits.

Starts gunicorn serving the API (bench/stack.py) on a throwaway database,
with argon2's real cost. A probe client reads one room's messages, one
request after another, and its latency is measured: alone (the baseline),
then while `--clients` threads send wrong-password logins as fast as they
can, first with RATE_LIMIT_ENABLED=false, then with the shipped limits. The
issue's finding: 8 such clients raised latency from 0.04 s to 1.1 s.
Ends with one JSON line of the figures.

    python3 bench/login_flood.py [--clients 8] [--probes 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.stack import Stack, percentile, setup_rooms, throwaway_database, wait_until
from tests.processes import free_port


def probe(base: str, room: int, token: str, count: int) -> list[float]:
    """The latency in ms of `count` sequential reads of a room's messages."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        session.get(f"{base}/rooms/{room}/messages").raise_for_status()
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def flood(
    base: str, clients: int, stop: threading.Event, statuses: Counter
) -> list[threading.Thread]:
    def attacker(i: int) -> None:
        session = requests.Session()
        while not stop.is_set():
            reply = session.post(
                f"{base}/auth/login", json={"login": f"nobody{i}", "password": "wrong password"}
            )
            statuses[reply.status_code] += 1

    threads = [threading.Thread(target=attacker, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    return threads


def measure(port: int, rate_limited: bool, room: int, token: str, args) -> dict:
    os.environ["RATE_LIMIT_ENABLED"] = "true" if rate_limited else "false"
    base = f"http://127.0.0.1:{port}/api/v1"
    stack = Stack(port, 2, {})
    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz").ok, 60, "the API")
        probe(base, room, token, 5)  # warm up
        alone = probe(base, room, token, args.probes)
        stop, statuses = threading.Event(), Counter()
        threads = flood(base, args.clients, stop, statuses)
        time.sleep(1)
        flooded = probe(base, room, token, args.probes)
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        stack.stop()
    return {
        "alone_p50_ms": round(statistics.median(alone), 2),
        "flooded_p50_ms": round(statistics.median(flooded), 2),
        "flooded_p99_ms": round(percentile(flooded, 99), 2),
        "ratio_p50": round(statistics.median(flooded) / statistics.median(alone), 2),
        "login_statuses": dict(statuses),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--probes", type=int, default=60)
    args = parser.parse_args()
    with throwaway_database():
        port = free_port()
        os.environ["RATE_LIMIT_ENABLED"] = "false"
        stack = Stack(port, 2, {})
        try:
            wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz").ok, 60, "the API")
            rooms, tokens = setup_rooms(f"http://127.0.0.1:{port}/api/v1", args.clients, 1)
        finally:
            stack.stop()
        unlimited = measure(port, False, rooms[0], tokens[0], args)
        limited = measure(port, True, rooms[0], tokens[0], args)
    for name, figures in (("no rate limits", unlimited), ("rate limits on", limited)):
        print(
            f"{name}: probe p50 {figures['alone_p50_ms']} ms alone, "
            f"{figures['flooded_p50_ms']} ms under {args.clients} login clients "
            f"(x{figures['ratio_p50']}); logins answered {figures['login_statuses']}"
        )
    print(json.dumps({"clients": args.clients, "unlimited": unlimited, "limited": limited}))


if __name__ == "__main__":
    main()
