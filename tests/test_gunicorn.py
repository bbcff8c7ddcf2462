"""gunicorn as shipped: idle and slow clients do not stall the API, and no
Server banner names it."""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest

from tests.gunicorn_helpers import get, gunicorn

# Before gthread: 36 s with two idle clients. "Answers at all" within this.
ANSWER_BOUND_SECONDS = 5


def idle_socket(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def partial_headers(port: int) -> socket.socket:
    """A client that started a request and sends its headers no further."""
    sock = idle_socket(port)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    return sock


def partial_body(port: int) -> socket.socket:
    """A client that announced a body and sends a byte of it."""
    sock = idle_socket(port)
    sock.sendall(
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    return sock


def timed_healthz(port: int) -> float:
    started = time.monotonic()
    assert get(port, "/healthz", timeout=ANSWER_BOUND_SECONDS).status == 200
    return time.monotonic() - started


@pytest.mark.parametrize("kind", [idle_socket, partial_headers, partial_body])
def test_healthz_answers_while_slow_clients_hold_connections(db, redis_client, kind):
    with gunicorn() as server:
        port = server.port
        # Six times the two idle clients that stalled the sync workers 36 s.
        clients = [kind(port) for _ in range(12)]
        try:
            time.sleep(1)  # let the workers take them
            figures = [timed_healthz(port) for _ in range(5)]
        finally:
            for sock in clients:
                sock.close()
    print(f"{kind.__name__}: /healthz in {max(figures):.3f} s at worst (5 tries, 12 clients)")


def test_a_client_silent_mid_headers_loses_its_connection(db, redis_client):
    """deploy/gunicorn.conf.py's socket timeout: a thread reading a
    request's headers gives up on a client that stops sending."""
    with gunicorn() as server:
        port = server.port
        sock = partial_headers(port)
        sock.settimeout(30)
        started = time.monotonic()
        try:
            closed = sock.recv(1024) == b""  # the server closed it
        except ConnectionResetError:
            closed = True
        waited = time.monotonic() - started
        sock.close()
    print(f"silent client dropped after {waited:.1f} s")
    assert closed


def test_no_server_banner_and_nosniff_through_gunicorn(db, redis_client):
    with gunicorn() as server:
        port = server.port
        for path, status in (
            ("/healthz", 200),
            ("/api/v1/openapi.json", 200),
            ("/api/v1/nothing-here", 404),
            ("/api/v1/auth/login", 405),
        ):
            response = get(port, path)
            assert response.status == status, path
            assert "gunicorn" not in (response.getheader("Server") or "").lower(), path
            assert response.getheader("X-Content-Type-Options") == "nosniff", path


def test_gunicorn_logs_json_lines_and_each_request_with_the_id_its_client_got(db, redis_client):
    """The access line is written after the response: it must still name
    the request id the client was given (the one it sent, or a new one)."""
    sent = str(uuid.uuid4())
    with gunicorn() as server:
        echoed = get(server.port, "/healthz", headers={"X-Request-ID": sent})
        made = get(server.port, "/api/v1/nothing-here").getheader("X-Request-ID")
    lines = [json.loads(line) for line in server.process.output().splitlines()]
    access = {line["request_id"]: line for line in lines if line["logger"] == "gunicorn.access"}
    assert echoed.getheader("X-Request-ID") == sent
    assert access[sent]["method"] == "GET"
    assert access[sent]["path"] == "/healthz"
    assert access[sent]["status"] == 200
    assert access[sent]["remote_addr"] == "127.0.0.1"
    assert access[sent]["duration_ms"] >= 0
    assert access[made]["status"] == 404
    assert any(line["message"].startswith("Booting worker") for line in lines)
