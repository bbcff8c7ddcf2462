"""The image blocklist (issue 15, item 1): operators block images with
`veza moderation blocklist`, and an upload that matches one (resized,
recompressed, turned) is held with its message, through the HTTP stack, the
outbox, a real files worker and the real clamd, until a moderator decides."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.api_helpers import error_code
from tests.conftest import start_worker, wait_for
from tests.console_helpers import audit_rows
from tests.processes import veza
from tests.test_api_moderation import listed, queue
from tests.test_api_moderation import room_of_four as room_of_four  # a fixture
from tests.test_api_notifications import indexed
from tests.uploads import encoded


def photo(seed: int) -> Image.Image:
    """A photo-like image: smooth shapes of colour, no two seeds alike."""
    noise = np.random.default_rng(seed).integers(0, 256, (45, 60, 3), dtype=np.uint8)
    return (
        Image.fromarray(noise).resize((800, 600), Image.BICUBIC).filter(ImageFilter.GaussianBlur(4))
    )


def blocklist(*args: str) -> list[dict]:
    """`veza moderation blocklist ARGS`'s JSON lines; it must succeed."""
    done = veza("moderation", "blocklist", *args)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def refused(*args: str) -> str:
    done = veza("moderation", "blocklist", *args)
    assert (done.returncode, done.stdout) == (2, ""), (done.stdout, done.stderr)
    return done.stderr


def attach(api, user, room: int, message_id: int, content: bytes, name: str) -> str:
    answer = api.post(
        f"/rooms/{room}/files",
        user,
        content_type="multipart/form-data",
        data={"file": (io.BytesIO(content), name, "image/jpeg"), "message_id": str(message_id)},
    )
    assert answer.status_code == 202, answer.json
    return answer.json["uuid"]


@pytest.mark.slow  # real Celery workers
def test_a_copy_of_a_blocked_image_is_held_with_its_message_until_a_moderator_approves(
    api, db, tmp_path, clamd_server, relay, room_of_four
):
    room, _owner, moderator, alice, bob = room_of_four
    original = tmp_path / "known.png"
    photo(1).save(original)
    [added] = blocklist("add", str(original), "--label", "known bad", "--operator", "ops")
    assert added["new"]
    assert added["quality"] >= 50

    held_post = api.say(room, alice, "look at this")
    other_post = api.say(room, alice, "and this")
    indexed(held_post["id"], other_post["id"])
    # What a user would send of it: smaller, recompressed and turned.
    copy = photo(1).resize((640, 480)).rotate(90, expand=True)
    worker = start_worker("files", queues="files,scan")
    try:
        held = attach(api, alice, room, held_post["id"], encoded(copy, "JPEG", quality=70), "a.jpg")
        fine = attach(api, alice, room, other_post["id"], encoded(photo(2), "JPEG"), "b.jpg")

        def processed() -> bool:
            files = [api.get(f"/files/{u}", alice).json for u in (held, fine)]
            return all(f["processing_status"] == "completed" for f in files)

        wait_for(processed, timeout=120, what="both images to be processed")
    finally:
        worker.stop()

    assert api.get(f"/files/{held}", alice).json["metadata"]["held"]["reason"]
    for user in (alice, moderator):  # its uploader too: nobody gets it
        for part in ("/content", "/thumbnail"):
            answer = api.get(f"/files/{held}{part}", user)
            assert (answer.status_code, error_code(answer)) == (403, "file_held")
    # The message is held: hidden from the room, queued for its moderators.
    assert listed(api, room, bob) == [other_post["id"]]
    assert api.get(f"/files/{held}", bob).status_code == 404
    assert queue(api, room, moderator) == [held_post["id"]]
    shown = api.get(f"/rooms/{room}/messages", moderator).json["messages"][1]
    assert (shown["moderation_status"], shown["moderation_reason"]) == (
        "pending",
        "blocklisted image",
    )
    [audited] = audit_rows(db, "file.blocklisted")
    assert (audited["entry_id"], audited["label"]) == (added["id"], "known bad")
    assert audited["distance"] <= 31
    assert api.get(f"/files/{fine}/content", bob).status_code == 200  # unrelated: served

    approved = api.post(
        f"/messages/{held_post['id']}/moderation",
        moderator,
        json={"action": "approve", "reason": "a false match"},
    )
    assert approved.status_code == 200, approved.json
    assert listed(api, room, bob) == [other_post["id"], held_post["id"]]
    assert api.get(f"/files/{held}/content", bob).status_code == 200
    assert "held" not in api.get(f"/files/{held}", bob).json["metadata"]


def test_operators_add_list_and_remove_entries_by_file_or_hash(db, tmp_path):
    image = tmp_path / "known.jpg"
    photo(3).save(image, quality=90)
    [first] = blocklist("add", str(image), "--operator", "ops")
    [again] = blocklist("add", first["pdq"].upper(), "--label", "ignored")
    assert (again["id"], again["new"], again["quality"]) == (first["id"], False, None)
    [entry] = blocklist("list")
    assert (entry["pdq"], entry["label"], entry["added_by"]) == (first["pdq"], None, "ops")

    removed = blocklist("remove", str(image), "--operator", "ops2")
    assert removed == [{"pdq": first["pdq"], "removed": True}]
    assert blocklist("remove", first["pdq"]) == [{"pdq": first["pdq"], "removed": False}]
    assert blocklist("list") == []
    assert [(row["pdq"], row["operator"]) for row in audit_rows(db, "image_blocklist.added")] == [
        (first["pdq"], "ops")
    ]
    assert [(r["pdq"], r["operator"]) for r in audit_rows(db, "image_blocklist.removed")] == [
        (first["pdq"], "ops2")
    ]


@pytest.mark.parametrize(
    ("argument", "says"),
    [
        ("abc123", "not a PDQ hash"),
        ("g" * 64, "not a PDQ hash"),
        ("flat.png", "too flat"),
        ("notes.png", "not a JPEG, PNG, GIF, WebP, BMP, TIFF, HEIC or AVIF image"),
    ],
)
def test_what_cannot_be_blocked_is_refused_and_nothing_is_added(db, tmp_path, argument, says):
    Image.new("RGB", (300, 200), (90, 90, 90)).save(tmp_path / "flat.png")
    (tmp_path / "notes.png").write_text("not an image")
    assert says in refused("add", str(tmp_path / argument) if "." in argument else argument)
    assert blocklist("list") == []
