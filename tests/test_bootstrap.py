"""scripts/bootstrap.sh follows DATABASE_URL and REDIS_URL: a server on this
machine that does not answer is started where the URL says, and its role is
made in the local cluster; a server elsewhere is never installed, started
or touched, and one that does not answer fails the bootstrap with a
message."""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid

import psycopg
import pytest
import redis

from tests.conftest import ROOT
from tests.processes import free_port

# TEST-NET-1 (RFC 5737): routed nowhere, so a connection there never answers.
NOWHERE = "192.0.2.1"


def bootstrap_step(step: str, **env: str) -> subprocess.CompletedProcess:
    """One step of scripts/bootstrap.sh, as scripts/run runs it."""
    return subprocess.run(
        ["bash", "-c", f"source scripts/bootstrap.sh && {step}"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_local_redis_url_nothing_answers_gets_a_redis_server_on_its_port():
    port = free_port()
    result = bootstrap_step("ensure_redis", REDIS_URL=f"redis://:s3cret@127.0.0.1:{port}/0")
    server = redis.Redis(port=port, password="s3cret")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        assert server.ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).get("x")  # the URL's password is required
    finally:
        with contextlib.suppress(redis.ConnectionError):  # not started
            server.shutdown(nosave=True)


@pytest.mark.parametrize(
    ("step", "variable", "url"),
    [
        ("ensure_redis", "REDIS_URL", f"redis://{NOWHERE}:6379/0"),
        # Sentinels are only probed, even on loopback (nothing listens on port 1).
        ("ensure_redis", "REDIS_URL", f"sentinel://127.0.0.1:1/0;sentinel://{NOWHERE}:26379/0"),
        (
            "ensure_postgres",
            "DATABASE_URL",
            f"postgresql+psycopg://veza:veza@{NOWHERE}:5432/veza",
        ),
    ],
)
def test_a_server_elsewhere_that_does_not_answer_fails_and_nothing_is_started(step, variable, url):
    result = bootstrap_step(step, **{variable: url})
    said = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{variable} names" in said
    assert f"{NOWHERE}:" in said
    assert "does not answer" in said
    assert "starting" not in said
    assert "installing" not in said


def can_be_postgres() -> bool:
    return os.geteuid() == 0 or subprocess.run(["sudo", "-n", "true"]).returncode == 0


@pytest.mark.skipif(not can_be_postgres(), reason="needs root or sudo, as bootstrap does")
def test_a_local_database_url_gets_its_own_role_and_database():
    name = f"veza_bootstrap_{uuid.uuid4().hex[:8]}"
    url = f"postgresql://{name}:pw{name}@127.0.0.1:5432/{name}"
    try:
        result = bootstrap_step("ensure_postgres", DATABASE_URL=url)
        assert result.returncode == 0, result.stdout + result.stderr
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_user, current_database()").fetchone() == (
                name,
                name,
            )
    finally:
        as_postgres(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        as_postgres(f'DROP ROLE IF EXISTS "{name}"')


def as_postgres(sql: str) -> None:
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    subprocess.run(
        [*sudo, "runuser", "-u", "postgres", "--", "psql", "-qAtX", "-c", sql],
        check=True,
        capture_output=True,
    )
