"""Session expiry, the reset of login locks and mutes that ran out, and the
pruning of read notifications."""

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


def reset_expired_mutes(run: Run) -> None:
    """A mute that has run out is lifted in the row as well: the API already
    lets the member write again (api/access.py muted_now reads muted_until),
    but `is_muted` stayed true, so the seed's partial index
    idx_room_members_active (WHERE is_muted = false) left the member out.
    A mute kept for a member who left (room_mutes, applied again on rejoin)
    that has run out is deleted: rejoining would lift it anyway
    (api/rooms.py restore_mute). A mute with no end (muted_until NULL) lasts
    until lifted, in either table."""
    apply_in_batches(
        run,
        "mutes_reset",
        "room_members",
        "is_muted AND muted_until < now()",
        set_clause="is_muted = false, muted_until = NULL",
    )
    apply_in_batches(run, "room_mutes_pruned", "room_mutes", "muted_until < now()")


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
