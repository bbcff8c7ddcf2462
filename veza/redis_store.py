"""Redis for our own keys (the heartbeat, redelivery counts, the
exporter's reads), beside Celery's use of it as broker; and `connect`, the
one way anything of ours that is not Celery opens a client of REDIS_URL:
one Redis, or the primary that its Sentinels name (docs/operations.md,
"Redis Sentinel")."""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

from veza import limits
from veza.settings import get_settings, sentinels_of

# The time the last system.heartbeat ran; stale means no worker consumes.
HEARTBEAT_KEY = "veza:heartbeat"


def connect(url: str, timeout: float, **options: Any) -> redis.Redis:
    """A client of the Redis `url` names, whose connects and commands give
    up after `timeout` seconds (`options` go to redis-py as they are).

    With Sentinels (a `sentinel://` URL), a client of the current primary of
    REDIS_SENTINEL_MASTER: each new connection asks a Sentinel where the
    primary is, and a connection to a primary that died or was demoted
    fails and is replaced, so after a failover the next command goes to the
    new primary. Only the primary is ever used: a replica may lag it.

    A command that meets a dead connection (a pooled one whose Redis
    restarted or failed over) is sent once more, on a new connection, or the
    first command after every failover would fail; our keys bear the rare
    double (a SET, reads, a count of redeliveries). One that timed out is
    not sent again: a hung Redis must cost one timeout, not two."""
    bounds = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1, supported_errors=(redis.ConnectionError,)),
        **options,
    }
    found = sentinels_of(url)
    if found is None:
        return redis.Redis.from_url(url, **bounds)
    sentinel = Sentinel(
        list(found.addresses),
        sentinel_kwargs=sentinel_kwargs(timeout),
        db=found.db,
        username=found.username,
        password=found.password,
        **bounds,
    )
    primary: redis.Redis = sentinel.master_for(get_settings().redis_sentinel_master)
    return primary


def sentinel_kwargs(timeout: float) -> dict[str, Any]:
    """How a client talks to the Sentinels themselves (redis-py's
    `sentinel_kwargs`, which Celery's and kombu's transport options take
    too): the same time bounds as to Redis (given any sentinel_kwargs,
    redis-py no longer copies them), and REDIS_SENTINEL_PASSWORD, never the
    primary's password."""
    password = get_settings().redis_sentinel_password
    return {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "password": password.get_secret_value() if password else None,
    }


def redis_client() -> redis.Redis:
    """Redis for our own keys (heartbeat, redelivery counts, metrics), with
    the broker's time bounds: a hung Redis fails a command, never hangs it."""
    settings = get_settings()
    return connect(
        settings.redis_url,
        settings.broker_socket_timeout,
        socket_keepalive=True,
        health_check_interval=limits.BROKER_HEALTH_CHECK_INTERVAL,
    )
