"""Chaos: a worker whose database accepts connections and never answers
(a blackholed host, a hung server). The task's connection attempt times out
well inside its soft time limit, so the task is retried, not lost, and it
does its work once the database answers again.

The "database" is a test-owned TCP proxy on loopback: first it holds every
connection open and silent, then it forwards to the real PostgreSQL.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from urllib.parse import urlsplit

import pytest

from tests.conftest import start_worker, wait_for

pytestmark = pytest.mark.slow

QUEUE = "unreachable-db"


class SilentThenForwarding:
    """Accepts TCP on a free loopback port. While silent, each connection is
    held open and never answered; once `forward()` is called, new ones are
    piped to `target`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.forwarding = threading.Event()
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def forward(self) -> None:
        self.forwarding.set()

    def close(self) -> None:
        for sock in [self.listener, *self.sockets]:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.sockets.append(client)
            if self.forwarding.is_set():
                server = socket.create_connection(self.target)
                self.sockets.append(server)
                for source, sink in ((client, server), (server, client)):
                    threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def database_behind_proxy(database_url):
    url = urlsplit(database_url)
    proxy = SilentThenForwarding((url.hostname, url.port or 5432))
    yield (
        proxy,
        url._replace(netloc=f"{url.username}:{url.password}@127.0.0.1:{proxy.port}").geturl(),
    )
    proxy.close()


def test_a_task_whose_database_never_answers_is_retried_and_then_done(
    api, db, database_behind_proxy
):
    from tasks.messages import index

    proxy, silent_url = database_behind_proxy
    alice = api.register()
    room = api.room(alice)
    message = api.say(room, alice, "counted by messages.index")  # no relay: not run yet
    count = "SELECT message_count FROM room_members WHERE user_id = %s"
    assert db.execute(count, (alice.id,)).fetchone() == (0,)

    worker = start_worker(
        "unreachable-db",
        queues=QUEUE,
        concurrency=1,
        env={"DATABASE_URL": silent_url, "DB_CONNECT_TIMEOUT_SECONDS_WORKER": "1"},
    )
    try:
        task_id = index.apply_async((message["id"],), queue=QUEUE).id
        wait_for(
            lambda: f"Task messages.index[{task_id}] retry" in worker.output(),
            timeout=60,
            what="the task to be retried on its database timeout",
        )
        assert db.execute(count, (alice.id,)).fetchone() == (0,)

        proxy.forward()
        wait_for(
            lambda: db.execute(count, (alice.id,)).fetchone() == (1,),
            timeout=120,
            what="the retried task to do its work",
        )
        # The work commits before the worker logs the task's success.
        wait_for(
            lambda: f"Task messages.index[{task_id}] succeeded" in worker.output(),
            timeout=30,
            what="the task's success in the worker's log",
        )
        assert "SoftTimeLimitExceeded" not in worker.output()
    finally:
        worker.stop()
