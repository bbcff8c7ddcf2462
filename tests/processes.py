"""What tests start besides conftest's workers and relay: a free loopback
port, a redis-server of the test's own (which it may stop, hang or wipe
without disturbing the suite's Redis) with a relay and a worker on it, and
the `veza` command line; and the pool children of a worker, for the tests
that kill them.

conftest imports tests.clamav (to set CLAMD_SOCKET) before it defines its
own names, and clamav takes free_port from here: so conftest's names are
imported inside the functions that use them, never at import time."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import redis

if TYPE_CHECKING:
    from tests.conftest import ManagedProcess


def free_port() -> int:
    """A loopback TCP port nobody listens on (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def status(port: int, path: str, login: str | None = None) -> int:
    """The HTTP status of GET `path` on a loopback server of ours, with a
    basic-auth `login` if given; 0 while nothing listens there."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if login:
        request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0  # not listening (yet)


def start_redis(port: int, *options: str, password: str | None = None) -> ManagedProcess:
    """A redis-server without persistence on `port`, answering PING; the
    test stops it. `options` are more of redis-server's (`--replicaof ...`);
    with a `password`, it is the server's requirepass."""
    from tests.conftest import ManagedProcess, wait_for

    auth = ["--requirepass", password] if password else []
    proc = ManagedProcess(
        "redis",
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            *auth,
            *options,
        ],
    ).start()
    client = redis.Redis(port=port, password=password)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    wait_for(answers, timeout=10, what="redis-server to answer")
    return proc


def on_redis(port: int) -> dict[str, str]:
    """The environment of a process whose broker is the redis-server on `port`."""
    return {"REDIS_URL": f"redis://127.0.0.1:{port}/0"}


def start_relay_on(port: int, name: str) -> ManagedProcess:
    from tests.conftest import ManagedProcess

    return ManagedProcess(
        name, [sys.executable, "-m", "worker.cli", "relay"], on_redis(port)
    ).start()


def start_worker_on(
    port: int, name: str, queues: str = "default", env: dict[str, str] | None = None
) -> ManagedProcess:
    """A Celery worker whose broker is the redis-server on `port`. Not
    waited for: conftest's start_worker pings through the suite's Redis,
    which this worker does not listen on; the tests' warm-up task shows it
    is there."""
    from tests.conftest import ManagedProcess

    return ManagedProcess(
        name, worker_argv(queues, 2, f"{name}-{port}@%h"), {**on_redis(port), **(env or {})}
    ).start()


def worker_argv(queues: str, concurrency: int, hostname: str) -> list[str]:
    """The command line of a test's Celery worker: no mingle or gossip (a
    worker of its own starts faster and hears no other test's workers)."""
    return [
        *(sys.executable, "-m", "celery", "-A", "worker", "worker"),
        *("-Q", queues, "-c", str(concurrency), "-n", hostname),
        *("--without-mingle", "--without-gossip", "-l", "INFO"),
    ]


def flower_argv(port: int) -> list[str]:
    """Flower as scripts/run starts it (flowerconfig.py), on `port`."""
    return [sys.executable, "-m", "celery", "-A", "worker", "flower", f"--port={port}"]


def start_flower(port: int, login: str) -> ManagedProcess:
    """Flower on `port` behind the basic-auth `login`, answering its health
    check; the test stops it."""
    import urllib.request

    from tests.conftest import ManagedProcess, wait_for

    proc = ManagedProcess(
        "flower", flower_argv(port), {"FLOWER_BASIC_AUTH": login, "FLOWER_PORT": str(port)}
    ).start()

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthcheck", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for(healthy, timeout=60, what="flower to answer its health check")
    return proc


def pool_children(worker) -> list[int]:
    """The pids of a worker's pool processes (the ones that run tasks)."""
    result = subprocess.run(["pgrep", "-P", str(worker.proc.pid)], capture_output=True, text=True)
    return [int(pid) for pid in result.stdout.split()]


def veza(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """`veza ARGS` as an operator runs it, with `env` added to the suite's
    environment; never raises on a non-zero exit (the tests check it)."""
    from tests.conftest import ROOT

    return subprocess.run(
        [sys.executable, "-m", "worker.cli", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
