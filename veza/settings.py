"""The settings: one object, built from the environment on first use
(`get_settings()`), by every process (the API, the workers, beat, the relay,
Flower, alembic). Each field is the variable of its name in capitals
(`clamd_port` is CLAMD_PORT); an empty variable counts as unset. README.md's
configuration table lists them all with their defaults, and
tests/test_settings.py holds the two together.

A value that does not parse (CLAMD_PORT=33l0) fails the first build, at the
start of a process, with the variable's name. A default that depends on
something else (the run budget on the time limits, the partitions kept
behind on the rooms' retention) is None here and is computed where it is
used. This module imports nothing of ours: db/ reads it too.
"""

from __future__ import annotations

import functools
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from argon2 import DEFAULT_MEMORY_COST, DEFAULT_TIME_COST
from cryptography.fernet import Fernet
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

SCHEDULE_PREFIX = "VEZA_SCHEDULE_"


def _comma_separated(value: object) -> object:
    """ "400,1280" as the list it means (an environment variable's form)."""
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


def _rendition_ladder(sizes: tuple[int, ...]) -> tuple[int, ...]:
    if not 1 <= len(sizes) <= 5 or not all(16 <= size <= 4096 for size in sizes):
        raise ValueError("give 1 to 5 sizes, each 16 to 4096 pixels")
    return tuple(sorted(set(sizes)))


# Comma-separated long sides, in pixels, as a sorted ladder.
RenditionSizes = Annotated[
    tuple[int, ...],
    NoDecode,
    BeforeValidator(_comma_separated),
    AfterValidator(_rendition_ladder),
]
SCHEDULES = SCHEDULE_PREFIX + "<NAME>"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(frozen=True, env_ignore_empty=True)

    # A bare postgresql:// URL is pointed at psycopg 3 (see the validator).
    database_url: str = "postgresql+psycopg://veza:veza@127.0.0.1:5432/veza"
    # One Redis (redis://, rediss://, unix://), or the Sentinels that watch a
    # primary and its replicas (sentinel://...;sentinel://...: see
    # redis_sentinel_master below).
    redis_url: str = "redis://localhost:6379/0"
    # clamd: a unix socket when CLAMD_SOCKET is set, else TCP host and port.
    clamd_socket: str | None = None
    clamd_host: str = "127.0.0.1"
    clamd_port: int = 3310
    clamd_timeout: int = 120
    # Base of the exponential backoff (seconds, with full jitter) between
    # scan attempts while clamd is unavailable.
    clamd_retry_backoff: float = 5
    # Blob storage (veza/storage/, docs/files.md): `local` keeps everything
    # under STORAGE_DIR; `s3` keeps it in a bucket of an S3-compatible store
    # and STORAGE_DIR is only scratch space (a step's copy of what it reads).
    storage_backend: Literal["local", "s3"] = "local"
    storage_dir: Path = Path("var/storage")
    # The bucket: unset endpoint is AWS; unset keys are boto3's own chain
    # (environment, instance profile). Keys are prefixed with S3_PREFIX, so
    # that one bucket can hold several installations.
    s3_endpoint_url: str | None = None
    s3_bucket: str = "veza"
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_prefix: str = ""
    # Path-style URLs (http://host/bucket/key) work with every S3-compatible
    # server; AWS also takes `virtual` (http://bucket.host/key).
    s3_addressing_style: Literal["path", "virtual", "auto"] = "path"
    # How the API hands out a file's bytes from S3: `stream` them through
    # itself, or `redirect` to a presigned URL valid this many seconds.
    # Either way the scan's verdict is checked at request time.
    s3_serve: Literal["stream", "redirect"] = "stream"
    s3_presign_seconds: int = Field(default=60, ge=1, le=604_800)
    # Copies of what a machine's steps fetched from the bucket, kept in its
    # scratch space for the file's next step there (veza/storage/scratch_cache.py);
    # 0: none, every step fetches its own.
    s3_scratch_cache_mib: int = Field(default=256, ge=0)
    max_upload_bytes: int = 104_857_600
    worker_max_memory_kib: int = 512_000
    # A file the scanner could not inspect (encrypted, a format it does not
    # unpack: docs/files.md) is never served; with this on, its uploader
    # alone may download it back (it is theirs, and they know what is in it).
    serve_unscannable_to_uploader: bool = False
    # Per-user upload quotas over a rolling window counted from the files
    # table (0: unlimited): one user cannot fill the storage or the scanner.
    upload_quota_bytes_per_day: int = 1_073_741_824
    upload_quota_files_per_hour: int = 100
    # The most memory a thumbnail may take to decode, computed from the
    # image's header before any pixel is decoded (veza/images.py): a small
    # PNG can declare 7000x7000 pixels, ~190 MiB once decoded.
    thumbnail_decode_budget_mib: int = 128
    # The renditions made of every image, video and PDF: WebP within these
    # long sides, never upscaled (veza/media/renditions.py). The smallest
    # is the thumbnail; each is made from the next larger one.
    rendition_sizes: RenditionSizes = (400, 1280)
    db_pool_size: int = 5
    db_max_overflow: int = 10
    # The database bounds of each kind of work (db/engine.py's KINDS);
    # unset, the kind's default (db/engine.py's DEFAULT_BOUNDS); 0 no limit.
    db_statement_timeout_ms_api: int | None = None
    db_statement_timeout_ms_relay: int | None = None
    db_statement_timeout_ms_worker: int | None = None
    db_statement_timeout_ms_maintenance: int | None = None
    db_idle_in_transaction_timeout_ms_api: int | None = None
    db_idle_in_transaction_timeout_ms_relay: int | None = None
    db_idle_in_transaction_timeout_ms_worker: int | None = None
    db_idle_in_transaction_timeout_ms_maintenance: int | None = None
    db_connect_timeout_seconds_api: int | None = None
    db_connect_timeout_seconds_relay: int | None = None
    db_connect_timeout_seconds_worker: int | None = None
    db_connect_timeout_seconds_maintenance: int | None = None
    log_level: str = "INFO"
    # Flower (flowerconfig.py): it refuses to start without credentials;
    # without a cookie secret it derives one from them.
    flower_basic_auth: str | None = None
    flower_cookie_secret: str | None = None
    flower_address: str = "127.0.0.1"
    flower_port: int = 5555
    flower_max_tasks: int = 10_000
    # The operator console (console/, `veza console`): it refuses to start
    # without at least one "user:password" login (comma-separate several: the
    # user is the operator's name in the audit rows of their actions).
    console_basic_auth: str | None = None
    console_address: str = "127.0.0.1"
    console_port: int = 5556
    metrics_port: int = 9808
    # The exporter listens on loopback unless told otherwise; with
    # METRICS_BASIC_AUTH ("user:password") every scrape must authenticate.
    metrics_address: str = "127.0.0.1"
    metrics_basic_auth: str | None = None
    # Rate limits (api/rate_limits.py), in `limits`' syntax ("10/minute;100/hour"):
    # every /auth/ route and every write, per client IP and per user. Counted
    # in Redis (RATE_LIMIT_STORAGE_URL, else REDIS_URL); fail open without it.
    rate_limit_enabled: bool = True
    rate_limit_storage_url: str | None = None
    rate_limit_auth_per_ip: str = "20/minute;200/hour"
    rate_limit_auth_per_user: str = "20/minute;200/hour"
    rate_limit_writes_per_ip: str = "120/minute;3000/hour"
    rate_limit_writes_per_user: str = "60/minute;1500/hour"
    # How long a beat process's lock in Redis lives without being renewed: a
    # second beat takes over at most this long, and one tick (a fifth of it,
    # beat_max_loop_interval), after the first one died.
    beat_lock_timeout: int = 60
    # argon2id's cost, argon2-cffi's defaults unless set (api/auth.py).
    argon2_time_cost: int = DEFAULT_TIME_COST
    argon2_memory_kib: int = DEFAULT_MEMORY_COST
    # A login's sessions (its family: every refresh descends from it) end
    # this long after the login, however often they are refreshed: a stolen
    # refresh token cannot be kept alive for ever (api/sessions.py).
    session_absolute_lifetime_days: int = Field(default=30, ge=1)
    # The password policy (veza/passwords.py): at least this many
    # characters, and at least this zxcvbn score (0-4; 3 is "safely
    # unguessable": ~10^10 guesses, an offline attack on a slow hash).
    password_min_length: int = Field(default=10, ge=8, le=72)
    password_min_score: int = Field(default=3, ge=0, le=4)
    # Fernet keys (comma-separated, newest first: the first encrypts, all
    # decrypt, so a key is rotated by putting the new one in front) that
    # encrypt users.totp_secret at rest. Unset, 2FA cannot be set up: a
    # secret is never stored in the clear (veza/two_factor.py).
    totp_encryption_key: SecretStr | None = None
    # Maintenance (docs/maintenance.md).
    # Archived messages stay restorable this long after they were archived.
    archive_retention_days: int = 30
    audit_retention_months: int = 12
    partition_months_ahead: int = 3
    # Unset: the longest room retention in use, at least 2 (db/partitions.py).
    partition_months_behind: int | None = None
    # The time a phased run (purge_retention, backfill_enrichment) shares
    # among its phases; unset, limits.DEFAULT_RUN_BUDGET_SECONDS (veza/limits.py).
    maintenance_run_budget_seconds: int | None = None
    # A blob or upload on disk with no row is removed only once this old:
    # the row of an upload in flight may not be committed yet.
    orphan_grace_seconds: int = 3600
    session_delete_grace_days: int = 7
    # The content of a soft-deleted message is scrubbed (replaced by a
    # tombstone) this long after its deletion: long enough for a moderator
    # to look into a report, not forever (scrub_deleted_content).
    deleted_content_grace_days: int = Field(default=30, ge=1)
    # An upload attached to no message expires this long after it was made
    # (purge_expired_files sets files.expires_at by policy, then purges).
    unattached_file_ttl_hours: int = Field(default=24, ge=1)
    # A deleted account can be restored this long, then it is erased
    # (erase_deleted_accounts: veza/accounts/erasure.py).
    account_delete_grace_days: int = Field(default=14, ge=1)
    # A data export (POST /users/me/export) can be downloaded this long after
    # it was made; then purge_expired_files removes its zip.
    export_retention_hours: int = Field(default=48, ge=1)
    stale_file_minutes: int = 30
    max_file_attempts: int = 3
    max_scan_retries: int = 3
    rescan_days: int = 7
    outbox_retention_days: int = 7
    # How old the oldest unsent row may get before the outbox counts as
    # stalled (relay down, or the broker unreachable).
    outbox_stale_seconds: int = 120
    # A row sent this long ago whose work never finished is sent again; each
    # later re-drive waits twice as long as the one before (outbox.redrive).
    outbox_redrive_after_seconds: int = 600
    outbox_max_redrives: int = 5
    # Rooms (docs/api.md, "Access rules and choices"). Distinct reactions one
    # user may put on one message: a handful is expression, hundreds is
    # flooding the message (and its aggregated answer) for everyone.
    max_reactions_per_user_per_message: int = Field(default=20, ge=1)
    # How long a kick bans from the room when the kicker names no duration
    # (?ban_seconds=); at most a year and a day, as a named duration.
    kick_ban_default_seconds: int = Field(default=86_400, ge=1, le=31_622_400)
    # Seconds a Redis connect or command may take before it fails. A Redis that
    # accepts connections and never answers (SIGSTOPped, a half-open connection
    # after a failover) would otherwise hang a publish, a task's Redis call or
    # the relay forever. Redis answers in milliseconds; this is generous, and
    # longer than kombu's 1 s BRPOP, which a read must be allowed to outwait.
    broker_socket_timeout: float = 5
    # With REDIS_URL naming Sentinels (`sentinel://h1:26379/0;sentinel://h2:26379/0`,
    # as Celery and kombu spell them), every client asks them where the
    # primary of this group is, and asks again after a failover
    # (docs/operations.md, "Redis Sentinel").
    redis_sentinel_master: str = "mymaster"
    # The Sentinels' own password (their `requirepass`), if they have one: it
    # is not the primary's, which is the URL's, as with one Redis.
    redis_sentinel_password: SecretStr | None = None
    # Notifications (docs/api.md, "Notifications"). A notification still
    # unread this long after it was written, whose user has used no session
    # since, goes out in a missed-message email; a user gets at most one
    # such email per NOTIFY_EMAIL_PERIOD_SECONDS, listing all they missed.
    notify_email_delay_seconds: int = Field(default=600, ge=0)
    notify_email_period_seconds: int = Field(default=3600, ge=0)
    # Read notifications are kept this long, then deleted (expire_sessions).
    notification_retention_days: int = Field(default=90, ge=1)
    # Moderation (docs/api.md, "Moderation"): a room message reported by this
    # many distinct users is held for review, unless the room's
    # metadata.flag_hold_threshold says otherwise.
    flag_hold_threshold: int = Field(default=3, ge=1, le=100)
    # An uploaded image within this many bits (of PDQ's 256) of an image on
    # the moderation blocklist is held for review (veza/files/blocklist.py).
    # 31 is PDQ's own advice: resized and recompressed copies are within ~20,
    # unrelated images ~128 apart; the cap keeps it from matching at random.
    pdq_match_threshold: int = Field(default=31, ge=0, le=64)
    # Where users reach this server: the emails' links start with it.
    public_url: str = "http://localhost:8000"
    # The SMTP server of the missed-message emails; unset, none are sent.
    # STARTTLS is asked for unless SMTP_STARTTLS=false (a relay on loopback).
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "Veza <noreply@localhost>"
    smtp_starttls: bool = True
    smtp_timeout_seconds: float = Field(default=30, gt=0)
    # Signs the emails' one-click unsubscribe links (veza/notifications/
    # unsubscribe.py); required with SMTP_HOST. Changing it voids the links
    # of emails already sent.
    notify_signing_key: SecretStr | None = None
    # VEZA_SCHEDULE_<NAME>: a beat entry's schedule ({name: expression}),
    # overriding beat_schedule.py's (five cron fields, or seconds). Gathered
    # by _ScheduleOverrides; the alias, which no variable can be named, keeps
    # the environment source from reading a variable of the field's name.
    schedules: dict[str, str] = Field(default={}, validation_alias=SCHEDULES)

    @field_validator("database_url")
    @classmethod
    def _psycopg3(cls, url: str) -> str:
        for bare in ("postgresql://", "postgres://"):
            if url.startswith(bare):
                return "postgresql+psycopg://" + url[len(bare) :]
        return url

    @field_validator("redis_url")
    @classmethod
    def _sentinels_agree(cls, url: str) -> str:
        sentinels_of(url)  # raises ValueError, naming what is wrong
        return url

    @property
    def redis_sentinels(self) -> Sentinels | None:
        """REDIS_URL's Sentinels; None when it names one Redis."""
        return sentinels_of(self.redis_url)

    @field_validator("totp_encryption_key")
    @classmethod
    def _fernet_keys(cls, keys: SecretStr | None) -> SecretStr | None:
        # A key that Fernet would refuse fails the process at start, not the
        # first 2FA setup. The message never includes the value.
        for key in keys.get_secret_value().split(",") if keys else []:
            try:
                Fernet(key.strip())
            except ValueError:
                raise ValueError(
                    "each key must be 32 url-safe base64-encoded bytes (Fernet.generate_key())"
                ) from None
        return keys

    @model_validator(mode="after")
    def _emails_can_be_unsubscribed(self) -> Settings:
        # An email without a working unsubscribe link is not sent at all.
        if self.smtp_host and not self.notify_signing_key:
            raise ValueError("SMTP_HOST is set: NOTIFY_SIGNING_KEY must be set too")
        return self

    @field_validator("storage_dir")
    @classmethod
    def _absolute(cls, path: Path) -> Path:
        return path.resolve()  # a worker's working directory may change

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The process environment only: no .env file, no secrets directory.
        return init_settings, env_settings, _ScheduleOverrides(settings_cls)


SENTINEL_SCHEME = "sentinel"
SENTINEL_PORT = 26379  # Redis Sentinel's own, and kombu's default for the scheme


@dataclass(frozen=True)
class Sentinels:
    """The Sentinels a `sentinel://` REDIS_URL names, and what the primary
    they point to is opened with: its database, user and password."""

    addresses: tuple[tuple[str, int], ...]
    db: int
    username: str | None
    password: str | None


def sentinels_of(url: str) -> Sentinels | None:
    """The Sentinels of `url`, in Celery's and kombu's form
    (`sentinel://[:PASSWORD@]HOST[:PORT][/DB]`, `;`-separated), or None for a
    URL of one Redis. Both libraries take the database, user and password
    from the first URL alone: a later one naming others (`/3` on the last
    only, say) would be silently ignored by them, so it is refused here."""
    if urllib.parse.urlsplit(url).scheme != SENTINEL_SCHEME:
        return None
    parsed = [_sentinel(part) for part in url.split(";")]
    db, username, password = parsed[0][1]
    first = (db or 0, username, password)
    for _, named in parsed[1:]:
        if any(value not in (None, first[i]) for i, value in enumerate(named)):
            raise ValueError(
                "a sentinel URL after the first may name only the first's database, user and"
                " password (Celery and kombu read the first's alone)"
            )
    return Sentinels(tuple(address for address, _ in parsed), *first)


def _sentinel(part: str) -> tuple[tuple[str, int], tuple[int | None, str | None, str | None]]:
    """One `sentinel://` URL: its address, and the database, user and
    password it names (None for each it leaves out)."""
    parts = urllib.parse.urlsplit(part.strip())
    if parts.scheme != SENTINEL_SCHEME or not parts.hostname:
        raise ValueError(f"each ;-separated URL must be sentinel://HOST[:PORT][/DB], not {part!r}")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"a sentinel URL's path is a database number, not {db!r}")
    named = (
        int(db) if db else None,
        urllib.parse.unquote(parts.username) if parts.username else None,
        urllib.parse.unquote(parts.password) if parts.password else None,
    )
    return (parts.hostname, parts.port or SENTINEL_PORT), named


class _ScheduleOverrides(PydanticBaseSettingsSource):
    """Every VEZA_SCHEDULE_<NAME> variable, as `schedules`: one variable per
    beat entry, named by the entry, rather than one variable to parse."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ gathers them all at once

    def __call__(self) -> dict[str, Any]:
        found = {
            name[len(SCHEDULE_PREFIX) :].lower(): value
            for name, value in os.environ.items()
            if name.startswith(SCHEDULE_PREFIX) and value
        }
        return {SCHEDULES: found} if found else {}


class InvalidSettings(ValueError):
    """The environment holds a value its setting cannot take; the message
    names each such variable."""

    def __init__(self, error: ValidationError) -> None:
        problems = "; ".join(
            f"{str(problem['loc'][0]).upper()}={_shown(problem['loc'][0], problem['input'])}: "
            f"{problem['msg']}"
            if problem["loc"]
            else problem["msg"]  # a rule across settings (a model validator)
            for problem in error.errors()
        )
        super().__init__(f"invalid configuration: {problems}")


# Settings whose value is a secret: a refusal names the variable, not the value.
SECRETS = {"totp_encryption_key", "s3_secret_access_key", "smtp_password", "notify_signing_key"}


def _shown(field: object, value: object) -> str:
    return "<hidden>" if field in SECRETS else repr(value)


@functools.cache
def get_settings() -> Settings:
    """The settings, built from the environment on first use and kept for
    the life of the process."""
    try:
        return Settings()
    except ValidationError as error:
        raise InvalidSettings(error) from None


def reload_settings() -> Settings:
    """Build the settings again from the environment as it is now: for the
    tests and benchmarks that change it in-process. A real process never
    needs this: its environment is set before it starts."""
    get_settings.cache_clear()
    return get_settings()
