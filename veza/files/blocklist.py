"""The moderation blocklist of images, by perceptual hash (migration 0021).

Operators add images they never want to see again (by file, or by a PDQ
hash from a shared list) with `veza moderation blocklist add`. The file
pipeline's thumbnail step hashes every image it decodes (veza/images.py,
Meta's PDQ) and asks `match` whether it is within PDQ_MATCH_THRESHOLD bits
of an entry, in any of its eight rotations and flips: a resized, recompressed,
rotated or mirrored copy still matches; a crop generally does not.

A match holds the file: `metadata.held` (what the client sees: held, and
why in general terms) and `metadata.blocklist_match` (which entry, how
close: for moderators and the audit). A held file is served to nobody,
its uploader included, and its room message is held for the room's
moderators (veza/messages/moderation.py counts a held attachment as a
reason to hold). A moderator's approval of the message releases its files
(`release`); a rejection leaves them held. A DM has no moderators: its
held files stay held.

Hashes of quality under images.PDQ_MIN_QUALITY (flat, featureless images)
are neither matched nor accepted as entries: their bits say too little,
and would match every other flat image.

Adding an entry does not go back over files already processed: it holds
what is uploaded from then on.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from db.models import AuditSeverity, File, ImageBlocklistEntry, Message
from veza import audit
from veza.images import PDQ_MIN_QUALITY, PerceptualHash
from veza.messages import moderation
from veza.settings import get_settings

PDQ_HEX = re.compile(r"[0-9a-f]{64}")
# What the file's JSON says of a held file (metadata.held.reason).
HELD_REASON = "matches an image on the moderation blocklist"


@dataclass(frozen=True)
class Match:
    entry_id: int
    label: str | None
    distance: int


def parsed_hash(value: str) -> str:
    """A PDQ hash as 64 hex digits, lowercased; ValueError otherwise."""
    pdq = value.strip().lower()
    if not PDQ_HEX.fullmatch(pdq):
        raise ValueError(f"not a PDQ hash (64 hex digits): {value!r}")
    return pdq


def _bits(hex_digits: str) -> str:
    """A hash as PostgreSQL reads a bit(256) literal."""
    return f"x{hex_digits}"


def match(session: Session, image: PerceptualHash) -> Match | None:
    """The nearest entry within the threshold, over the image's eight
    rotations and flips; None for a weak hash or no entry that close. A
    sequential scan with a popcount per entry and variant: about 3 ms per
    image for every thousand entries (32-46 ms at ten thousand, measured
    with EXPLAIN ANALYZE), paid once per uploaded image."""
    if image.quality < PDQ_MIN_QUALITY:
        return None
    row = session.execute(
        text(
            "WITH upload AS (SELECT CAST(v AS bit(256)) AS pdq"
            "  FROM unnest(CAST(:variants AS text[])) AS v)"
            " SELECT b.id, b.label, min(bit_count(b.pdq # upload.pdq)) AS distance"
            " FROM image_blocklist b CROSS JOIN upload GROUP BY b.id"
            " HAVING min(bit_count(b.pdq # upload.pdq)) <= :threshold"
            " ORDER BY distance, b.id LIMIT 1"
        ),
        {
            "variants": [_bits(v) for v in image.variants],
            "threshold": get_settings().pdq_match_threshold,
        },
    ).one_or_none()
    return None if row is None else Match(row.id, row.label, int(row.distance))


def hold(session: Session, file: File, found: Match) -> None:
    """Hold a file (row locked by the caller, its message locked before it)
    that matched, audit it, and hold its room message for review."""
    file.meta = {
        **file.meta,
        "held": {"reason": HELD_REASON, "at": datetime.now(UTC).isoformat()},
        "blocklist_match": {"entry_id": found.entry_id, "distance": found.distance},
    }
    audit.record(
        session,
        "file.blocklisted",
        {
            "file_uuid": str(file.uuid),
            "entry_id": found.entry_id,
            "label": found.label,
            "distance": found.distance,
            "message_id": file.message_id,
        },
        user_id=file.uploaded_by,
        room_id=file.room_id,
        resource_type="file",
        resource_id=file.id,
        severity=AuditSeverity.warning,
    )
    if file.message_id is not None:
        moderation.review(session, file.message_id)


def lock_message(session: Session, message_id: int) -> None:
    """Lock a message before its files: the order a moderator's decision
    takes them in (message, then `release`)."""
    session.execute(select(Message.id).where(Message.id == message_id).with_for_update())


def release(session: Session, message_id: int, moderator_id: int) -> int:
    """A moderator approved the message: its held files are served again
    (each one's match stays on record). Returns how many were released."""
    held = session.scalars(
        select(File)
        .where(File.message_id == message_id, File.meta.has_key("held"))
        .with_for_update()
    ).all()
    released_at = datetime.now(UTC).isoformat()
    for file in held:
        kept = {k: v for k, v in file.meta.items() if k != "held"}
        file.meta = {**kept, "released": {"by": moderator_id, "at": released_at}}
    return len(held)


def add(session: Session, pdq: str, label: str | None, added_by: str) -> tuple[int, bool]:
    """Put a hash on the blocklist; (its entry id, whether it is new). An
    entry already there keeps its label."""
    entry_id = session.scalar(
        insert(ImageBlocklistEntry)
        .values(pdq=_bits(pdq), label=label, added_by=added_by)
        .on_conflict_do_nothing(index_elements=["pdq"])
        .returning(ImageBlocklistEntry.id)
    )
    if entry_id is None:
        existing = session.scalar(
            select(ImageBlocklistEntry.id).where(ImageBlocklistEntry.pdq == _bits(pdq))
        )
        assert existing is not None  # the conflict was with it
        return existing, False
    _audit(session, "image_blocklist.added", entry_id, pdq, label, added_by)
    return entry_id, True


def remove(session: Session, pdq: str, removed_by: str) -> bool:
    """Take a hash off the blocklist; whether it was on it. Files it held
    stay held (a moderator decides on each)."""
    gone = session.execute(
        delete(ImageBlocklistEntry)
        .where(ImageBlocklistEntry.pdq == _bits(pdq))
        .returning(ImageBlocklistEntry.id, ImageBlocklistEntry.label)
    ).one_or_none()
    if gone is None:
        return False
    _audit(session, "image_blocklist.removed", gone.id, pdq, gone.label, removed_by)
    return True


def entries(session: Session) -> Sequence[ImageBlocklistEntry]:
    return session.scalars(select(ImageBlocklistEntry).order_by(ImageBlocklistEntry.id)).all()


def entry_hex(entry: ImageBlocklistEntry) -> str:
    """An entry's hash as 64 hex digits (psycopg reads bit(256) as '0101…')."""
    return f"{int(entry.pdq, 2):064x}"


def _audit(
    session: Session, action: str, entry_id: int, pdq: str, label: str | None, by: str
) -> None:
    audit.record(
        session,
        action,
        {"pdq": pdq, "label": label, "operator": by},
        resource_type="image_blocklist",
        resource_id=entry_id,
        severity=AuditSeverity.warning,
    )
