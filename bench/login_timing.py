"""Login timing by path: does the time of POST /auth/login tell which path
it took? (docs/api.md, "Auth choices": one argon2 verification on every path.)

Runs the real API in-process (the Flask test client: the whole request
stack, routing, validation, one transaction) against a throwaway migrated
PostgreSQL database, with argon2's parameters as shipped (any ARGON2_*
variable is removed first). The paths are interleaved round by round, so
that load from other processes on the machine falls on all of them alike;
each is reported as its median, and as a ratio to the same run's baseline,
the wrong-password path (the successful login is reported beside it).

    python3 bench/login_timing.py [--rounds 40]

Ends with one JSON line of the figures. Target: every ratio within 25 %.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.stack import REDIS_URL, throwaway_database

PASSWORD = "bench password"
BASELINE = "wrong_password"
TARGET = 0.25


def environment(database_url: str) -> None:
    """The settings as shipped, but this run's database and a 2FA key."""
    from cryptography.fernet import Fernet

    for name in ("ARGON2_TIME_COST", "ARGON2_MEMORY_KIB"):
        os.environ.pop(name, None)
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = REDIS_URL
    os.environ["TOTP_ENCRYPTION_KEY"] = Fernet.generate_key().decode()


def make_users(client: Any) -> None:
    """alice (active), dormant (deactivated below), jailed (locked below),
    guarded (2FA enabled through the API)."""
    import pyotp

    for name in ("alice", "dormant", "jailed", "guarded"):
        created = client.post(
            "/api/v1/auth/register",
            json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
        )
        assert created.status_code == 201, created.json
    token = client.post("/api/v1/auth/login", json={"login": "guarded", "password": PASSWORD}).json[
        "access_token"
    ]
    auth = {"Authorization": f"Bearer {token}"}
    secret = client.post("/api/v1/auth/2fa/setup", headers=auth).json["secret"]
    enabled = client.post(
        "/api/v1/auth/2fa/enable", headers=auth, json={"code": pyotp.TOTP(secret).now()}
    )
    assert enabled.status_code == 200, enabled.json


PATHS: dict[str, tuple[str, str, int]] = {
    # name: (login, password, expected status)
    "success": ("alice", PASSWORD, 200),
    "wrong_password": ("alice", "not the password", 401),
    "unknown_user": ("nobody", PASSWORD, 401),
    "deactivated": ("dormant", PASSWORD, 401),
    "locked": ("jailed", PASSWORD, 423),
    "otp_missing": ("guarded", PASSWORD, 401),
}


def reset(conn: psycopg.Connection) -> None:
    """Between rounds, untimed: no path may lock alice or dormant out."""
    conn.execute("UPDATE users SET failed_login_attempts = 0")
    conn.execute("UPDATE users SET is_active = (username <> 'dormant')")
    conn.execute(
        "UPDATE users SET locked_until = CASE WHEN username = 'jailed'"
        " THEN now() + interval '1 day' END"
    )


def timed(call: Callable[[], int], expected: int) -> float:
    started = time.perf_counter()
    status = call()
    elapsed = time.perf_counter() - started
    assert status == expected, (status, expected)
    return elapsed


def measure(rounds: int, database_url: str) -> dict[str, list[float]]:
    environment(database_url)
    from api import create_app
    from db.engine import libpq_url

    client = create_app({"TESTING": True}).test_client()
    make_users(client)
    times: dict[str, list[float]] = {name: [] for name in PATHS}
    with psycopg.connect(libpq_url(), autocommit=True) as conn:
        for round_number in range(rounds + 2):  # two warm-up rounds, not kept
            reset(conn)
            for name, (login, password, expected) in PATHS.items():
                elapsed = timed(
                    lambda login=login, password=password: (
                        client.post(
                            "/api/v1/auth/login", json={"login": login, "password": password}
                        ).status_code
                    ),
                    expected,
                )
                if round_number >= 2:
                    times[name].append(elapsed)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    with throwaway_database() as url:
        times = measure(args.rounds, url)
    from argon2 import DEFAULT_MEMORY_COST, DEFAULT_TIME_COST

    medians = {name: statistics.median(values) * 1000 for name, values in times.items()}
    baseline = medians[BASELINE]
    ratios = {name: medians[name] / baseline for name in medians}
    print(f"argon2id time_cost={DEFAULT_TIME_COST} memory_kib={DEFAULT_MEMORY_COST}")
    print(f"{'path':<16}{'median ms':>10}{'ratio':>8}")
    for name in PATHS:
        print(f"{name:<16}{medians[name]:>10.1f}{ratios[name]:>8.2f}")
    spread = max(medians.values()) / min(medians.values()) - 1
    print(
        json.dumps(
            {
                "rounds": args.rounds,
                "baseline": BASELINE,
                "median_ms": {k: round(v, 2) for k, v in medians.items()},
                "ratio": {k: round(v, 3) for k, v in ratios.items()},
                "max_over_min": round(spread + 1, 3),
                "within_target": spread <= TARGET,
            }
        )
    )


if __name__ == "__main__":
    main()
