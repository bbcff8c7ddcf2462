"""Settings, all from the environment. Every variable is listed in README.md."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from db.engine import database_url


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


@dataclass(frozen=True)
class Settings:
    database_url: str = field(default_factory=database_url)
    redis_url: str = field(
        default_factory=lambda: os.environ.get("REDIS_URL", "redis://localhost:6379/0")
    )
    # clamd: a unix socket when CLAMD_SOCKET is set, else TCP host and port.
    clamd_socket: str | None = field(default_factory=lambda: os.environ.get("CLAMD_SOCKET"))
    clamd_host: str = field(default_factory=lambda: os.environ.get("CLAMD_HOST", "127.0.0.1"))
    clamd_port: int = field(default_factory=lambda: env_int("CLAMD_PORT", 3310))
    clamd_timeout: int = field(default_factory=lambda: env_int("CLAMD_TIMEOUT", 120))
    # Base of the exponential backoff (seconds, with full jitter) between
    # scan attempts while clamd is unavailable.
    clamd_retry_backoff: float = field(
        default_factory=lambda: float(os.environ.get("CLAMD_RETRY_BACKOFF", "5"))
    )
    storage_dir: Path = field(
        default_factory=lambda: Path(os.environ.get("STORAGE_DIR", "var/storage")).resolve()
    )
    max_upload_bytes: int = field(default_factory=lambda: env_int("MAX_UPLOAD_BYTES", 104_857_600))
    worker_max_memory_kib: int = field(
        default_factory=lambda: env_int("WORKER_MAX_MEMORY_KIB", 512_000)
    )
    metrics_port: int = field(default_factory=lambda: env_int("METRICS_PORT", 9808))
    log_level: str = field(default_factory=lambda: os.environ.get("LOG_LEVEL", "INFO"))


settings = Settings()
