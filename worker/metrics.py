"""A Prometheus exporter for what Flower does not export.

- queue depth per Celery queue (flower#1191), and messages delivered but
  not yet acknowledged;
- per task: runs by outcome, retries, and durations, read from Celery's
  event stream (the same events Flower shows);
- the outbox backlog, the age of its oldest unsent row, and its dead rows;
- the age of the last worker heartbeat: a stall alarm when workers stop
  consuming (celery#10205: workers can go silent after a Redis reconnect);
- whether each source (Redis, PostgreSQL) could be read: `veza_exporter_up`.

Run it with `veza exporter`: it listens on METRICS_ADDRESS (default
127.0.0.1) and METRICS_PORT (default 9808); with METRICS_BASIC_AUTH
("user:password") a scrape without those credentials gets 401.
"""

from __future__ import annotations

import base64
import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.simple_server import make_server

import redis
from celery import Celery
from kombu.transport.redis import Channel
from prometheus_client import Counter, Histogram, make_wsgi_app
from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from veza import outbox
from veza.redis_store import HEARTBEAT_KEY, redis_client
from worker.celery_app import QUEUES

log = logging.getLogger(__name__)

TASK_RUNS = Counter("veza_task_runs_total", "Task runs by outcome", ["task", "outcome"])
TASK_RETRIES = Counter("veza_task_retries_total", "Task retries", ["task"])
TASK_DURATION = Histogram(
    "veza_task_duration_seconds",
    "Task run time",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)


def queue_depth(client: redis.Redis, queue: str) -> int:
    """Messages waiting in a queue: kombu keeps one Redis list per priority
    step (`name`, `name\\x06\\x163`, ...)."""
    keys = [queue] + [f"{queue}{Channel.sep}{step}" for step in Channel.priority_steps if step]
    pipe = client.pipeline()
    for key in keys:
        pipe.llen(key)
    return sum(pipe.execute())


class BacklogCollector(Collector):
    """Read on every scrape: queue depths, unacked and heartbeat from Redis,
    the outbox from PostgreSQL. Each source is read on its own: an outage
    of one drops its metrics and sets veza_exporter_up{source} to 0, while
    the other's (queue depth above all, during a database outage) still
    reach Prometheus."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "veza_exporter_up", "1 when this scrape could read the source", labels=["source"]
        )
        for source, read in (("redis", self.from_redis), ("postgres", self.from_postgres)):
            try:
                metrics = list(read())
            except Exception as exc:  # noqa: BLE001 (any failure of the source: report it, serve the rest)
                log.warning("metrics: %s unavailable (%s: %s)", source, type(exc).__name__, exc)
                up.add_metric([source], 0)
                continue
            up.add_metric([source], 1)
            yield from metrics
        yield up

    def from_redis(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "veza_queue_depth", "Messages waiting per queue", labels=["queue"]
        )
        for queue in QUEUES:
            depth.add_metric([queue], queue_depth(self.client, queue))
        yield depth
        yield GaugeMetricFamily(
            "veza_unacked_messages",
            "Messages delivered to workers and not yet acknowledged",
            value=self.client.hlen(Channel.unacked_key),
        )
        stamp = self.client.get(HEARTBEAT_KEY)
        yield GaugeMetricFamily(
            "veza_worker_heartbeat_age_seconds",
            "Seconds since a worker last ran the heartbeat task (-1: never)",
            value=time.time() - float(stamp) if stamp else -1.0,
        )

    def from_postgres(self) -> Iterator[Metric]:
        owed = outbox.summary()
        yield GaugeMetricFamily(
            "veza_outbox_backlog", "Outbox rows not yet published", value=owed.unsent
        )
        yield GaugeMetricFamily(
            "veza_outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox row (0 when none)",
            value=owed.oldest_unsent_age or 0.0,
        )
        yield GaugeMetricFamily(
            "veza_outbox_dead",
            "Outbox rows recorded dead, waiting for `veza outbox replay`",
            value=owed.dead,
        )


def record_task_events(app: Celery) -> None:
    """Consume Celery events forever, counting task outcomes and durations.
    Events for succeeded/failed carry only the task id, so a State keeps
    the id→name mapping from the received event."""
    state = app.events.State()

    def on_event(event: dict[str, Any]) -> None:
        state.event(event)
        task = state.tasks.get(event.get("uuid"))
        name = task.name if task and task.name else "unknown"
        kind = event["type"]
        if kind == "task-succeeded":
            TASK_RUNS.labels(name, "succeeded").inc()
            TASK_DURATION.labels(name).observe(event.get("runtime") or 0.0)
        elif kind == "task-failed":
            TASK_RUNS.labels(name, "failed").inc()
        elif kind == "task-rejected":  # a poison message dropped (worker/base.py)
            TASK_RUNS.labels(name, "rejected").inc()
        elif kind == "task-retried":
            TASK_RETRIES.labels(name).inc()

    while True:
        try:
            with app.connection() as connection:
                receiver = app.events.Receiver(connection, handlers={"*": on_event})
                receiver.capture(limit=None, timeout=None, wakeup=True)
        except (ConnectionError, OSError, redis.RedisError) as exc:
            log.warning("event stream lost (%s); reconnecting", exc)
            time.sleep(2)


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def with_basic_auth(inner: WsgiApp, credentials: str) -> WsgiApp:
    """`inner` behind HTTP basic auth for one "user:password" (prometheus_client's
    own server has none): anything else answers 401."""
    expected = ("Basic " + base64.b64encode(credentials.encode()).decode()).encode()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        given = environ.get("HTTP_AUTHORIZATION", "").encode()
        if hmac.compare_digest(given, expected):
            return inner(environ, start_response)
        start_response(
            "401 Unauthorized",
            [("WWW-Authenticate", 'Basic realm="veza metrics"'), ("Content-Length", "0")],
        )
        return [b""]

    return app


def exporter_app(basic_auth: str | None) -> WsgiApp:
    """The metrics app; refuses to build with credentials of an empty user or
    password, which would look protected and be guessable."""
    app: WsgiApp = make_wsgi_app()
    if basic_auth is None:
        return app
    user, colon, password = basic_auth.partition(":")
    if not (user and colon and password):
        raise SystemExit("METRICS_BASIC_AUTH must be user:password, both non-empty")
    return with_basic_auth(app, basic_auth)


def serve(app: Celery, address: str, port: int, basic_auth: str | None) -> None:
    wsgi = exporter_app(basic_auth)
    REGISTRY.register(BacklogCollector(redis_client()))
    server = make_server(address, port, wsgi, ThreadingWSGIServer)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    log.info("metrics on %s:%d/metrics (basic auth: %s)", address, port, bool(basic_auth))
    record_task_events(app)
