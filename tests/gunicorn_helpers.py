"""The API under gunicorn as shipped (deploy/gunicorn.conf.py), on a free
loopback port, for the tests that need a real HTTP server."""

from __future__ import annotations

import http.client
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

from tests.conftest import ManagedProcess, wait_for
from tests.processes import free_port

CONFIG = "deploy/gunicorn.conf.py"


def get(
    port: int, path: str, timeout: float = 5, headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


class Server(NamedTuple):
    port: int
    process: ManagedProcess  # its output is gunicorn's log


@contextmanager
def gunicorn(env: dict[str, str] | None = None) -> Iterator[Server]:
    """gunicorn with the shipped config and its 2 workers; yields it once
    /healthz answers, and stops it after."""
    port = free_port()
    server = ManagedProcess(
        "gunicorn",
        [
            *(sys.executable, "-m", "gunicorn", "-c", CONFIG),
            *("--bind", f"127.0.0.1:{port}", "api:create_app()"),
        ],
        env,
    ).start()

    def answers() -> bool:
        if server.proc.poll() is not None:
            raise AssertionError(f"gunicorn exited:\n{server.output()}")
        try:
            return get(port, "/healthz", timeout=2).status == 200
        except OSError:
            return False

    try:
        wait_for(answers, timeout=30, what="gunicorn to answer /healthz")
        yield Server(port, server)
    finally:
        server.stop()
