"""gunicorn's configuration for the API and the operator console: the one
file the Procfile, the Dockerfile, docker-compose.yml and the docs all use
(`gunicorn -c deploy/gunicorn.conf.py --bind ADDR "api:create_app()"`;
`veza console` runs the console under it with one worker).

Why not gunicorn's default sync worker: it serves one connection at a time,
so two clients that open a connection and send nothing stall the whole API
(/healthz took 36 s with 2 sync workers). gthread accepts in its main loop;
a thread waits at most 5 s (gunicorn's DEFAULT_WORKER_DATA_TIMEOUT) for a new
connection's first byte, then parks it in the main loop's poller, where
kept-alive connections wait too, holding no thread.

What gunicorn 27 does not bound on its own: once a client has sent a byte,
a thread reads the request's headers (and the app its body) from a blocking
socket with no timeout, so a client that sends headers byte by byte holds
that thread for as long as it likes (slowloris). _BoundedReadConn below puts
a timeout on every read and write of the socket: a client silent for
SOCKET_TIMEOUT_SECONDS mid-request loses its connection. A client that
trickles a byte just inside that bound still holds a thread until the
request's size limits (limit_request_*, MAX_UPLOAD_BYTES) are reached: a
reverse proxy that buffers whole requests with a total deadline (nginx's
client_header_timeout, client_body_timeout, proxy_request_buffering on)
must stand in front of any API exposed to the internet (docs/operations.md).
"""

from __future__ import annotations

from gunicorn.http import wsgi
from gunicorn.workers import gthread

from api.access_log import JsonLogger

worker_class = "gthread"
workers = 2
# Each worker serves this many requests at once; a slow client costs one
# thread, never the worker. Threads are cheap and wait on the network; only
# those running a query take one of the worker's DB_POOL_SIZE +
# DB_MAX_OVERFLOW connections (15), the others wait for one.
threads = 32
# Connections open at once per worker: kept-alive and waiting ones beyond
# the threads wait in the poller (threads are what a request needs).
worker_connections = 1000
# A worker whose main loop is silent this long is killed and replaced (the
# API's database statements are bounded far below this: db/engine.py).
timeout = 30
# On a restart or stop, requests in flight get this long to finish.
graceful_timeout = 20
# Kept-alive connections idle this long are closed (in the poller).
keepalive = 5
# Request-line and header sizes (gunicorn's defaults, stated): the upper
# bound on what a header-trickling client can make a thread read.
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
# One JSON object per line, as every process logs (api/access_log.py): an
# access line per request, with its request id, and gunicorn's own lines.
accesslog = "-"
logger_class = JsonLogger

# Every read or write of a client socket in a thread must progress within
# this many seconds, or the connection is closed.
SOCKET_TIMEOUT_SECONDS = 10


class _BoundedReadConn(gthread.TConn):
    """gthread's connection, with a timeout on its socket in the thread that
    serves it: gthread makes the socket blocking (no timeout) before every
    request, then calls init(), so the timeout is set again each time."""

    def init(self) -> None:
        super().init()
        self.sock.settimeout(SOCKET_TIMEOUT_SECONDS)


# gthread's accept() builds the module's TConn: every connection is bounded.
gthread.TConn = _BoundedReadConn
# No server banner: gunicorn always sends a Server header, with this value
# ("gunicorn" by default); blank, it names nothing.
wsgi.SERVER = ""
