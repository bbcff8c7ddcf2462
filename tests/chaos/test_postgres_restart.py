"""Chaos: PostgreSQL restarts while workers are busy. Tasks retry (the base
class retries transient database errors with backoff) and finish.

The test runs its own PostgreSQL cluster, so that restarting it disturbs
nothing else on the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ROOT, start_worker, wait_for
from tests.factories import make_user
from tests.processes import free_port
from tests.uploads import upload

pytestmark = pytest.mark.slow

PG_BIN = Path("/usr/lib/postgresql") / max(os.listdir("/usr/lib/postgresql")) / "bin"


class PrivatePostgres:
    """A throwaway cluster: initdb in a temp dir, trust auth, one port."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="veza-pg-"))
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/veza"

    def _run(self, *argv: str) -> None:
        # PostgreSQL refuses to run as root; the tests run as root in CI.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *argv], check=True, capture_output=True)

    def init(self) -> None:
        if os.geteuid() == 0:
            subprocess.run(["chown", "postgres", str(self.dir)], check=True)
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.dir / "data"), "-A", "trust", "-U", "postgres"
        )
        self.start()
        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE veza")

    def _ctl(self, action: str) -> None:
        self._run(
            str(PG_BIN / "pg_ctl"),
            "-D",
            str(self.dir / "data"),
            "-w",
            "-m",
            "fast",
            "-l",
            str(self.dir / "log"),
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
            action,
        )

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        self._ctl("restart")

    def stop(self) -> None:
        self._ctl("stop")


@pytest.fixture
def private_postgres():
    server = PrivatePostgres()
    server.init()
    try:
        subprocess.run(
            [sys.executable, "-m", "alembic", "upgrade", "head"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            env={**os.environ, "DATABASE_URL": server.url},
        )
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)


@pytest.mark.timeout(600)
def test_tasks_retry_and_finish_across_a_postgres_restart(
    private_postgres, clamd_server, redis_client
):
    from worker import app

    def connect():
        return psycopg.connect(private_postgres.url, autocommit=True)

    with connect() as db:
        user = make_user(db)
        ids = [upload(db, user, os.urandom(2 * 1024 * 1024), f"f{i}.bin") for i in range(30)]

    def states() -> list[str]:
        try:
            with connect() as db:
                return [
                    r[0]
                    for r in db.execute(
                        "SELECT processing_status::text FROM files ORDER BY id"
                    ).fetchall()
                ]
        except psycopg.OperationalError:
            return []

    worker = start_worker(
        "pg-restart", queues="files,scan", concurrency=2, env={"DATABASE_URL": private_postgres.url}
    )
    try:
        for file_id in ids:
            app.send_task("files.process", args=[file_id])
        wait_for(
            lambda: 0 < states().count("completed") < len(ids),
            timeout=120,
            interval=0.05,
            what="the workers to be part-way through",
        )
        private_postgres.restart()
        wait_for(
            lambda: states() == ["completed"] * len(ids),
            timeout=240,
            interval=0.5,
            what="every file to finish after the restart",
        )
        assert worker.proc.poll() is None
    finally:
        worker.stop()
    assert "OperationalError" in worker.output()  # the restart was felt, and survived
