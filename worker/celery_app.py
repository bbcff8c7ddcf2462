"""The Celery application: broker, queues, reliability settings.

Why each setting is what it is:
- JSON only: no pickle from a shared broker.
- acks_late + reject_on_worker_lost: a message is acknowledged only after
  its task finished, so a killed worker's task is delivered again; the task
  base class bounds how often (veza.limits.MAX_DELIVERIES).
- visibility_timeout is derived from the longest hard time limit plus the
  longest retry countdown (veza/limits.py).
- Socket and connect timeouts on every Redis connection (broker and result
  backend), keepalives and health checks: without them a Redis that hangs
  (accepts, never answers) hangs a publish forever. For Redis the connect
  timeout is the `socket_connect_timeout` transport option
  (broker_connection_timeout is AMQP's). retry_on_timeout stays off: a
  timed-out write may have happened, and Celery's publish retry policy, not
  redis-py, decides whether to send again.
- With REDIS_URL naming Sentinels (`sentinel://`), the broker, the result
  backend and redbeat each find the primary through them, with their own
  documented options (below; docs/operations.md, "Redis Sentinel").
- prefetch multiplier 1: file and maintenance tasks are long and uneven;
  a worker must not sit on messages another idle worker could run.
- Results expire after an hour: job state lives in our own tables (files'
  statuses, outbox, maintenance_runs); the result backend only carries
  progress for Flower and operators.
"""

from __future__ import annotations

from celery import Celery, Task
from celery.signals import task_postrun, task_prerun, worker_process_init
from kombu.entity import Queue
from redis.backoff import NoBackoff
from redis.retry import Retry

from beat_schedule import BEAT_SCHEDULE
from db.engine import dispose_engines, set_kind
from veza import limits
from veza.redis_store import sentinel_kwargs
from veza.settings import Settings, get_settings
from worker import task_logs  # noqa: F401  (connects Celery's logging signals)

QUEUES = ("default", "files", "scan", "maintenance")


def sentinel_transport_options(settings: Settings) -> dict[str, object]:
    """What kombu's Sentinel transport (broker_transport_options) and
    Celery's Sentinel result backend (result_backend_transport_options)
    both take to find the primary: its group's name and how to talk to the
    Sentinels. Nothing for one Redis."""
    if settings.redis_sentinels is None:
        return {}
    return {
        "master_name": settings.redis_sentinel_master,
        "sentinel_kwargs": sentinel_kwargs(settings.broker_socket_timeout),
    }


def redbeat_connection(settings: Settings) -> tuple[str, dict[str, object]]:
    """redbeat_redis_url and redbeat_redis_options. A call to Redis fails
    fast: a hung Redis (SIGSTOP, a dead host) must not hold a tick past the
    lock's time to live.

    One Redis: retried once (a pooled connection that died with a Redis
    restart). Sentinels: redbeat wants a `redis-sentinel` URL (it reads the
    scheme, and shows the rest in beat's banner) and its own `sentinels`
    and `service_name` options, and opens the primary with `socket_timeout`
    (redis-py's connect timeout too) and no retry: worker/beat.py's backoff
    covers that."""
    timeout = limits.beat_redis_timeout()
    found = settings.redis_sentinels
    if found is None:
        return settings.redis_url, {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "retry": Retry(NoBackoff(), retries=1),
        }
    host, port = found.addresses[0]  # for beat's banner: the options say where to go
    return f"redis-sentinel://{host}:{port}/{found.db}", {
        "socket_timeout": timeout,
        "sentinels": list(found.addresses),
        "service_name": settings.redis_sentinel_master,
        "db": found.db,
        "username": found.username,
        "password": found.password,
        "sentinel_kwargs": sentinel_kwargs(timeout),
    }


settings = get_settings()
redbeat_redis_url, redbeat_redis_options = redbeat_connection(settings)
app = Celery("veza")
app.conf.update(
    broker_url=settings.redis_url,
    result_backend=settings.redis_url,
    result_expires=3600,
    task_ignore_result=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    event_serializer="json",
    timezone="UTC",
    enable_utc=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_soft_time_limit=limits.DEFAULT_TIME_LIMITS[0],
    task_time_limit=limits.DEFAULT_TIME_LIMITS[1],
    broker_connection_retry_on_startup=True,
    broker_transport_options={
        "visibility_timeout": limits.VISIBILITY_TIMEOUT,
        "socket_timeout": settings.broker_socket_timeout,
        "socket_connect_timeout": settings.broker_socket_timeout,
        "socket_keepalive": True,
        "health_check_interval": limits.BROKER_HEALTH_CHECK_INTERVAL,
        **sentinel_transport_options(settings),
    },
    result_backend_transport_options=sentinel_transport_options(settings),
    redis_socket_timeout=settings.broker_socket_timeout,
    redis_socket_connect_timeout=settings.broker_socket_timeout,
    redis_socket_keepalive=True,
    redis_backend_health_check_interval=limits.BROKER_HEALTH_CHECK_INTERVAL,
    task_queues=[Queue(name) for name in QUEUES],
    task_default_queue="default",
    # Queues are chosen here, by task name, not on the tasks (Celery 5.5+
    # deprecates the task-level `queue` attribute).
    task_routes={
        "files.scan": {"queue": "scan"},
        "files.*": {"queue": "files"},
        # An export reads a user's history and copies their files: storage
        # work, like a file's steps.
        "accounts.*": {"queue": "files"},
        "maintenance.*": {"queue": "maintenance"},
        "system.*": {"queue": "default"},
        "messages.*": {"queue": "default"},
    },
    # Flower and the exporter build their view from worker events. No
    # "task-sent" event: it would double the relay's publishes, and Flower
    # shows a task from the moment a worker receives it.
    worker_send_task_events=True,
    task_send_sent_event=False,
    # A child that grew past this (a pathological image, say) is replaced
    # after its task instead of carrying the memory on.
    worker_max_memory_per_child=settings.worker_max_memory_kib,
    # One beat at a time across machines: redbeat holds a lock in Redis.
    # worker/beat.py's scheduler survives Redis outages and lost locks.
    beat_scheduler="worker.beat:Scheduler",
    redbeat_redis_url=redbeat_redis_url,
    redbeat_lock_timeout=settings.beat_lock_timeout,
    redbeat_redis_options=redbeat_redis_options,
    beat_max_loop_interval=settings.beat_lock_timeout // 5,
    beat_schedule=BEAT_SCHEDULE,
    include=[
        "tasks.system",
        "tasks.files",
        "tasks.messages",
        "tasks.maintenance",
        "tasks.accounts",
    ],
)


@worker_process_init.connect
def _forget_parent_connections(**_: object) -> None:
    # A prefork child inherits the parent's pooled sockets; using them from
    # two processes corrupts both sessions.
    dispose_engines()


@task_prerun.connect
def _database_bounds_of_the_task(task: Task, **_: object) -> None:
    # A maintenance task's statements get maintenance's longer bounds
    # (db/engine.py), its raw connections included; any other is a worker's.
    kind = "maintenance" if task.name.startswith("maintenance.") else "worker"
    task.request.veza_db_kind = set_kind(kind)


@task_postrun.connect
def _restore_database_bounds(task: Task, **_: object) -> None:
    previous = getattr(task.request, "veza_db_kind", None)
    if previous is not None:
        set_kind(previous)
