"""A Prometheus exporter for what Flower does not export.

- queue depth per Celery queue (flower#1191), and messages delivered but
  not yet acknowledged;
- per task: runs by outcome, retries, and durations, read from Celery's
  event stream (the same events Flower shows);
- the outbox backlog, the age of its oldest unsent row, and its dead rows;
- files by terminal state (clean, infected, failed, unscannable);
- maintenance runs by task and outcome, each task's last success and its
  schedule's period, and the work runs sent again (re-drives);
- the age of the last worker heartbeat: a stall alarm when workers stop
  consuming (celery#10205: workers can go silent after a Redis reconnect);
- whether each source (Redis, PostgreSQL) could be read: `veza_exporter_up`.

Every labelled series exists from the first scrape, at 0 until something
happens (each task x outcome, each state, each kind): a `rate()` or
`increase()` alert then reads 0, not "no data". What is state in PostgreSQL
is read from it on each scrape, by indexed queries (veza/files/states.py,
veza/maintenance/outcomes.py); deploy/alerts.yml has the alert rules.

Run it with `veza exporter`: it listens on METRICS_ADDRESS (default
127.0.0.1) and METRICS_PORT (default 9808); with METRICS_BASIC_AUTH
("user:password") a scrape without those credentials gets 401.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any
from wsgiref.simple_server import make_server

import redis
from celery import Celery
from kombu.transport.redis import Channel
from prometheus_client import Counter, Histogram, make_wsgi_app
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from beat_schedule import period_seconds
from db.engine import session_scope
from veza import outbox
from veza.basic_auth import authenticated, credentials, logins
from veza.files.states import terminal_state_counts
from veza.maintenance import outcomes
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
TASK_OUTCOMES = ("succeeded", "failed", "rejected")


def prefill_task_series(tasks: Iterable[str]) -> None:
    """Every task's runs (by outcome), retries and durations at 0: a task
    that has not failed yet has a `failed` series, so rate() reads 0."""
    for task in tasks:
        for outcome in TASK_OUTCOMES:
            TASK_RUNS.labels(task, outcome)
        TASK_RETRIES.labels(task)
        TASK_DURATION.labels(task)


def registered_tasks(app: Celery) -> list[str]:
    """The tasks the worker app registers (tasks/), without Celery's own."""
    app.loader.import_default_modules()
    return sorted(name for name in app.tasks if not name.startswith("celery."))


def schedule_periods(app: Celery) -> dict[str, float]:
    """Each scheduled task's longest wait between runs (beat_schedule.py,
    with VEZA_SCHEDULE_* overrides); tasks with no period are left out."""
    periods = {}
    for entry in app.conf.beat_schedule.values():
        period = period_seconds(entry["schedule"])
        if period is not None:
            periods[entry["task"]] = period
    return periods


def queue_depth(client: redis.Redis, queue: str) -> int:
    """Messages waiting in a queue: kombu keeps one Redis list per priority
    step (`name`, `name\\x06\\x163`, ...)."""
    keys = [queue] + [f"{queue}{Channel.sep}{step}" for step in Channel.priority_steps if step]
    pipe = client.pipeline()
    for key in keys:
        pipe.llen(key)
    return sum(pipe.execute())


class RunTotals:
    """Finished maintenance runs by (task, outcome) since the table began,
    counted once each: the first scrape counts them all, each later one
    adds the runs that finished since, up to SETTLE_SECONDS ago (a run's
    row commits a moment after its finished_at is taken: finish_run's one
    short transaction). So a scrape reads a few index entries, not every
    run there ever was; a run shows in the counts 10 to 25 s after it ends.
    Scrapes may come at once (a threading server): one counts at a time,
    or both would add the same runs."""

    SETTLE_SECONDS = 10

    def __init__(self, tasks: Iterable[str]) -> None:
        self.tasks = list(tasks)
        self.totals = outcomes.zero_counts(self.tasks)
        self.counted_up_to: datetime | None = None
        self._lock = threading.Lock()

    def update(self, session: Session) -> dict[tuple[str, str], int]:
        with self._lock:
            up_to = session.scalar(select(func.now() - timedelta(seconds=self.SETTLE_SECONDS)))
            new = outcomes.outcome_counts(session, self.tasks, self.counted_up_to, up_to)
            for key, n in new.items():
                self.totals[key] += n
            self.counted_up_to = up_to
            return dict(self.totals)


class BacklogCollector(Collector):
    """Read on every scrape: queue depths, unacked and heartbeat from Redis,
    the outbox, files and maintenance runs from PostgreSQL. Each source is
    read on its own: an outage of one drops its metrics and sets
    veza_exporter_up{source} to 0, while the other's (queue depth above
    all, during a database outage) still reach Prometheus."""

    def __init__(
        self,
        client: redis.Redis,
        maintenance_tasks: Iterable[str] = (),
        periods: dict[str, float] | None = None,
    ) -> None:
        self.client = client
        self.maintenance_tasks = list(maintenance_tasks)
        self.runs = RunTotals(self.maintenance_tasks)
        self.periods = periods or {}

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
        yield self.schedule()

    def schedule(self) -> Metric:
        """Configuration, not a source: the alert on a task's last success
        compares it with twice this (deploy/alerts.yml)."""
        period = GaugeMetricFamily(
            "veza_maintenance_schedule_period_seconds",
            "Longest wait between two scheduled runs of the task (beat_schedule.py)",
            labels=["task"],
        )
        for task, seconds in sorted(self.periods.items()):
            if task in self.maintenance_tasks:
                period.add_metric([task], seconds)
        return period

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
        with session_scope() as session:
            files = terminal_state_counts(session)
            runs = self.runs.update(session)
            successes = outcomes.last_successes(session, self.maintenance_tasks)
            redrives = outcomes.redrive_counts(session)
        yield from self.file_metrics(files)
        yield from self.maintenance_metrics(runs, successes, redrives)

    def file_metrics(self, states: dict[str, int]) -> Iterator[Metric]:
        by_state = GaugeMetricFamily(
            "veza_files",
            "Files by terminal state: clean, infected (quarantined), failed, unscannable",
            labels=["state"],
        )
        for state, n in states.items():
            by_state.add_metric([state], n)
        yield by_state

    def maintenance_metrics(
        self,
        runs: dict[tuple[str, str], int],
        successes: dict[str, datetime | None],
        redrives: dict[str, int],
    ) -> Iterator[Metric]:
        by_outcome = CounterMetricFamily(
            "veza_maintenance_runs",
            "Finished maintenance runs by task and outcome (maintenance_runs)",
            labels=["task", "outcome"],
        )
        for (task, outcome), n in sorted(runs.items()):
            by_outcome.add_metric([task, outcome], n)
        yield by_outcome
        last = GaugeMetricFamily(
            "veza_maintenance_last_success_timestamp_seconds",
            "When the task's latest succeeded run ended, Unix time (0: never)",
            labels=["task"],
        )
        for task, finished in successes.items():
            last.add_metric([task], finished.timestamp() if finished else 0.0)
        yield last
        sent_again = CounterMetricFamily(
            "veza_redrives",
            "Work maintenance runs sent again: outbox rows re-driven (outbox),"
            " stalled files requeued (stale_file), failed files requeued (failed_file)",
            labels=["kind"],
        )
        for kind, n in redrives.items():
            sent_again.add_metric([kind], n)
        yield sent_again


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


def with_basic_auth(inner: WsgiApp, known: dict[str, str]) -> WsgiApp:
    """`inner` behind HTTP basic auth for the `known` logins (prometheus_client's
    own server has none): anything else answers 401."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if authenticated(known, *credentials(environ.get("HTTP_AUTHORIZATION", ""))):
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
    return with_basic_auth(app, logins("METRICS_BASIC_AUTH", basic_auth))


def serve(app: Celery, address: str, port: int, basic_auth: str | None) -> None:
    wsgi = exporter_app(basic_auth)
    tasks = registered_tasks(app)
    prefill_task_series(tasks)
    maintenance = [task for task in tasks if task.startswith("maintenance.")]
    REGISTRY.register(BacklogCollector(redis_client(), maintenance, schedule_periods(app)))
    server = make_server(address, port, wsgi, ThreadingWSGIServer)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    log.info("metrics on %s:%d/metrics (basic auth: %s)", address, port, bool(basic_auth))
    record_task_events(app)
