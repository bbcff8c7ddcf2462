"""Redis for our own keys (the heartbeat, redelivery counts, the
exporter's reads), beside Celery's use of it as broker."""

from __future__ import annotations

import redis

from veza import limits
from veza.settings import get_settings

# The time the last system.heartbeat ran; stale means no worker consumes.
HEARTBEAT_KEY = "veza:heartbeat"


def redis_client() -> redis.Redis:
    """Redis for our own keys (heartbeat, redelivery counts, metrics), with
    the broker's time bounds: a hung Redis fails a command, never hangs it."""
    return redis.Redis.from_url(
        get_settings().redis_url,
        socket_timeout=get_settings().broker_socket_timeout,
        socket_connect_timeout=get_settings().broker_socket_timeout,
        socket_keepalive=True,
        health_check_interval=limits.BROKER_HEALTH_CHECK_INTERVAL,
    )
