"""Maintenance settings, from the environment (listed in docs/maintenance.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from veza import limits
from veza.settings import env_int

# A run must end well inside its soft time limit: what its phases leave
# undone the next run resumes, while a run killed at the limit is recorded
# failed and wastes its last batch.
DEFAULT_RUN_BUDGET_SECONDS = limits.MAINTENANCE_TIME_LIMITS[0] - 300


@dataclass(frozen=True)
class MaintenanceSettings:
    # Archived messages stay restorable this long after they were archived.
    archive_retention_days: int = field(default_factory=lambda: env_int("ARCHIVE_RETENTION_DAYS", 30))
    audit_retention_months: int = field(default_factory=lambda: env_int("AUDIT_RETENTION_MONTHS", 12))
    # A blob or upload on disk with no row is removed only once this old:
    # the row of an upload in flight may not be committed yet.
    orphan_grace_seconds: int = field(default_factory=lambda: env_int("ORPHAN_GRACE_SECONDS", 3600))
    session_delete_grace_days: int = field(
        default_factory=lambda: env_int("SESSION_DELETE_GRACE_DAYS", 7)
    )
    stale_file_minutes: int = field(default_factory=lambda: env_int("STALE_FILE_MINUTES", 30))
    max_file_attempts: int = field(default_factory=lambda: env_int("MAX_FILE_ATTEMPTS", 3))
    max_scan_retries: int = field(default_factory=lambda: env_int("MAX_SCAN_RETRIES", 3))
    rescan_days: int = field(default_factory=lambda: env_int("RESCAN_DAYS", 7))
    # The time a phased run (purge_retention) shares among its phases.
    run_budget_seconds: int = field(
        default_factory=lambda: env_int("MAINTENANCE_RUN_BUDGET_SECONDS", DEFAULT_RUN_BUDGET_SECONDS)
    )
    outbox_retention_days: int = field(default_factory=lambda: env_int("OUTBOX_RETENTION_DAYS", 7))
    # A row sent this long ago whose work never finished is sent again; each
    # later re-drive waits twice as long as the one before (outbox.redrive).
    outbox_redrive_after_seconds: int = field(
        default_factory=lambda: env_int("OUTBOX_REDRIVE_AFTER_SECONDS", 600)
    )
    outbox_max_redrives: int = field(default_factory=lambda: env_int("OUTBOX_MAX_REDRIVES", 5))


maintenance_settings = MaintenanceSettings()
