"""maintenance.erase_deleted_accounts: an account deleted more than
ACCOUNT_DELETE_GRACE_DAYS ago (DELETE /users/me set `deleted_at`; until
then POST /users/me/restore undoes it) is erased.

What erasure does to a user's data, and why:
- **Their messages stay as rows, as tombstones**: deleted (`is_deleted`)
  and scrubbed as scrub_deleted_content scrubs (veza/messages/scrub.py:
  the text and all derived from it gone, `[deleted]` in its place). The
  rows stay because replies, threads and the other person's DM history
  point at them; the triggers take them out of every message count and
  thread count, and the DM unread counts of the people they wrote to are
  recounted. Archived messages of theirs are scrubbed too.
- **Mentions of them** leave the messages that made them (`mentions`; the
  seed's trigger keeps message_mentions in step); **their reactions,
  memberships, mutes, bans, notifications and sessions** are deleted
  (the triggers keep reaction and member counts exact).
- **Their files** expire now: purge_expired_files releases each blob
  through its content refcount within the hour, as for any expired file
  (and takes the file off the policy's hands, which would move it later);
  so do their data exports' zips, and an export still in flight is failed.
- **The user row stays**, anonymised (`erased_<id>`, an address under
  .invalid, no password, no profile, no 2FA), keeping the id every
  reference needs; `erased_at` records that it is done.

Each step is a set-based UPDATE or DELETE in batches (apply_in_batches,
SKIP LOCKED), whose rows stop matching once done, so a run killed or cut
short by its budget is resumed by the next one; the user row is
anonymised only once nothing of theirs is left, and a user whose steps met
a locked row is left whole for the next run. One audit row per erased user.
Counts: `accounts_erased` and one per step.
"""

from __future__ import annotations

from sqlalchemy import text

from db.engine import session_scope
from veza import audit
from veza.maintenance.batched import apply_in_batches
from veza.maintenance.run import Run
from veza.messages.counters import DM_UNREAD
from veza.messages.enrichment import DERIVED_METADATA
from veza.messages.scrub import KEY, SCRUB, TOMBSTONE
from veza.settings import get_settings

DUE_USERS = """
SELECT id FROM users
WHERE deleted_at IS NOT NULL AND erased_at IS NULL
  AND deleted_at < now() - make_interval(days => :grace_days)
ORDER BY id
"""

# Their messages not yet a scrubbed tombstone.
NOT_ERASED = (
    "author_id = :user_id AND (NOT is_deleted OR content <> :tombstone OR raw_content IS NOT NULL)"
)
ERASE_MESSAGE = (
    f"is_deleted = true, deleted_at = COALESCE(deleted_at, now()), mentions = '{{}}', {SCRUB}"
)
MENTIONING = "mentions @> ARRAY[CAST(:user_id AS integer)]"

# (count key, table, rows of the user's still there): deleted outright.
DELETED = (
    ("reactions_deleted", "reactions", "user_id = :user_id"),
    ("memberships_deleted", "room_members", "user_id = :user_id"),
    ("room_mutes_deleted", "room_mutes", "user_id = :user_id"),
    ("room_bans_deleted", "room_bans", "user_id = :user_id"),
    ("notifications_deleted", "notifications", "user_id = :user_id"),
    ("message_mentions_deleted", "message_mentions", "user_id = :user_id"),
    ("sessions_deleted", "user_sessions", "user_id = :user_id"),
)
FILES_DUE = (
    "uploaded_by = :user_id AND (expires_at IS NULL OR expires_at > now()"
    " OR metadata ? 'expiry_by_policy')"
)
EXPIRE_FILE = "expires_at = now(), metadata = metadata - 'expiry_by_policy'"
# Their data exports: a finished one's zip goes with the next purge, one in
# flight is failed (its task then finds nothing to build).
EXPORTS_DUE = (
    "user_id = :user_id AND (status IN ('pending', 'running')"
    " OR (status = 'done' AND expires_at > now()))"
)
EXPIRE_EXPORT = (
    "expires_at = LEAST(expires_at, now()),"
    " status = CASE WHEN status = 'done' THEN 'done' ELSE 'failed' END,"
    " error = CASE WHEN status = 'done' THEN error ELSE 'account erased' END"
)

ANONYMISE = text(
    "UPDATE users SET username = 'erased_' || id, email = 'erased-' || id || '@erased.invalid',"
    " password_hash = '!', salt = NULL, display_name = NULL, bio = NULL, avatar_url = NULL,"
    " status_message = NULL, totp_secret = NULL, totp_enabled = false, backup_codes = NULL,"
    " totp_last_step = NULL, last_login_at = NULL, last_seen_at = NULL,"
    " email_notifications = false, is_active = false, updated_at = now(), erased_at = now()"
    " WHERE id = :user_id AND erased_at IS NULL"
)


def erase_deleted(run: Run) -> None:
    """Every account past its grace, one after the other, within the run's budget."""
    with session_scope() as session:
        due = list(
            session.scalars(
                text(DUE_USERS), {"grace_days": get_settings().account_delete_grace_days}
            )
        )
    if run.dry_run:
        run.add(accounts_erased=len(due))
        return
    run.add(accounts_erased=0)
    run.expect(len(due), of="accounts_erased")
    with run.phase("erase", left=1):
        for user_id in due:
            if run.out_of_time:
                return
            erase(run, user_id)


def erase(run: Run, user_id: int) -> None:
    params = {
        "user_id": user_id,
        "tombstone": TOMBSTONE,
        "derived": list(DERIVED_METADATA),
    }
    for table, key in (("messages", "messages_erased"), ("archived_messages", "archived_erased")):
        apply_in_batches(run, key, table, NOT_ERASED, params, set_clause=ERASE_MESSAGE, row_id=KEY)
    with session_scope() as session:
        session.execute(
            text(
                DM_UNREAD.fix(
                    "p.conversation_id IN (SELECT conversation_id"
                    " FROM direct_conversation_participants WHERE user_id = :user_id)"
                )
            ),
            params,
        )
    apply_in_batches(
        run,
        "mentions_removed",
        "messages",
        MENTIONING,
        params,
        set_clause="mentions = array_remove(mentions, CAST(:user_id AS integer))",
        row_id=KEY,
    )
    for key, table, rows in DELETED:
        apply_in_batches(run, key, table, rows, params)
    apply_in_batches(run, "files_expired", "files", FILES_DUE, params, set_clause=EXPIRE_FILE)
    apply_in_batches(
        run, "exports_expired", "data_exports", EXPORTS_DUE, params, set_clause=EXPIRE_EXPORT
    )
    _anonymise_when_nothing_is_left(run, user_id, params)


def _anonymise_when_nothing_is_left(run: Run, user_id: int, params: dict[str, object]) -> None:
    leftovers = " OR ".join(
        [
            f"EXISTS (SELECT 1 FROM messages WHERE {NOT_ERASED})",
            f"EXISTS (SELECT 1 FROM messages WHERE {MENTIONING})",
            *(f"EXISTS (SELECT 1 FROM {table} WHERE {rows})" for _, table, rows in DELETED),
            f"EXISTS (SELECT 1 FROM files WHERE {FILES_DUE})",
            f"EXISTS (SELECT 1 FROM data_exports WHERE {EXPORTS_DUE})",
        ]
    )
    with session_scope() as session:
        if session.scalar(text(f"SELECT {leftovers}"), params):
            return  # a row was locked by someone else: the next run finishes
        session.execute(ANONYMISE, params)
        audit.record(
            session,
            "account_erased",
            {"run_id": run.run_id},
            resource_type="user",
            resource_id=user_id,
        )
    run.add(accounts_erased=1)
