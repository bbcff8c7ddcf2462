"""Session expiry and login-lock reset, and the pruning of read notifications."""

from __future__ import annotations

from veza.maintenance.batched import apply_in_batches
from veza.maintenance.run import Run
from veza.settings import get_settings


def expire(run: Run) -> None:
    """Sessions past expires_at stop working at once (deactivated), and are
    deleted SESSION_DELETE_GRACE_DAYS later, so that an operator looking
    into a recent incident still finds them."""
    apply_in_batches(
        run,
        "sessions_deactivated",
        "user_sessions",
        "is_active AND expires_at < now()",
        set_clause="is_active = false",
    )
    apply_in_batches(
        run,
        "sessions_deleted",
        "user_sessions",
        "expires_at < now() - make_interval(days => :days)",
        {"days": get_settings().session_delete_grace_days},
    )


def reset_expired_locks(run: Run) -> None:
    """A user whose lock has run out starts again from zero failed logins."""
    apply_in_batches(
        run,
        "locks_reset",
        "users",
        "locked_until < now()",
        set_clause="locked_until = NULL, failed_login_attempts = 0",
    )


def prune_read_notifications(run: Run) -> None:
    """A notification read long ago is history nobody pages back to; unread
    ones stay, however old (the feed is where they are found)."""
    apply_in_batches(
        run,
        "notifications_deleted",
        "notifications",
        "read_at < now() - make_interval(days => :days)",
        {"days": get_settings().notification_retention_days},
    )
