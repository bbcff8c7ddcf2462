"""Coalescing: the relay publishes many messages.index rows as one
messages.index_batch task, and each message of it still gets its counters,
enrichment, moderation and notifications; a message that fails for good
does not hold back the others, and a worker killed in the middle of a
batch loses nothing. Real relay, worker, PostgreSQL and Redis."""

from __future__ import annotations

import os
import re
import signal
import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from tests.conftest import start_relay, wait_for
from tests.processes import pool_children
from veza import jobs
from veza.jobs import BATCH_ROWS
from veza.messages.counters import DM_UNREAD, MEMBER_MESSAGES, last_seen

# More than a batch holds: one burst makes at least two batches.
BURST = BATCH_ROWS + 10


def claimed(task_name: str, args: list, kwargs: dict | None = None, queue: str | None = None):
    return SimpleNamespace(
        id=uuid.uuid4(),
        task_name=task_name,
        args=args,
        kwargs=kwargs or {},
        queue=queue,
        request_id=None,
        created_at=datetime.now(UTC),
    )


def test_the_relay_batches_rows_of_a_batchable_job_and_sends_the_rest_alone():
    from worker.relay import publications

    index = jobs.INDEX_MESSAGE.name
    rows = [
        claimed(jobs.PROCESS_FILE.name, [1]),
        *(claimed(index, [i]) for i in range(BATCH_ROWS + 1)),
        claimed(index, [7], queue="maintenance"),  # a queue of its own: a batch of its own
        claimed(index, [8], kwargs={"extra": 1}),  # keyword arguments: not batched
    ]
    groups = publications(rows)
    assert [[row.args for row in group] for group in groups] == [
        [[1]],
        [[i] for i in range(BATCH_ROWS)],
        [[BATCH_ROWS]],
        [[7]],
        [[8]],
    ]
    # Every row is published exactly once.
    assert sorted(row.id for group in groups for row in group) == sorted(row.id for row in rows)


def test_a_held_jobs_rows_stay_in_the_outbox_until_the_oldest_is_old_while_the_rest_go(db):
    from db.engine import get_engine
    from tests.test_outbox_redrive import owe
    from worker.relay import HOLD_ROW_SECONDS, claim

    held = frozenset({jobs.INDEX_MESSAGE.name})
    first, other = owe(jobs.INDEX_MESSAGE, 1), owe(jobs.PROCESS_FILE, 2)
    with get_engine().connect() as conn:
        assert {row.id for row in claim(conn, held=held)} == {other}
        later = owe(jobs.INDEX_MESSAGE, 3)
        db.execute(
            "UPDATE outbox SET created_at = created_at - make_interval(secs => %s) WHERE id = %s",
            (HOLD_ROW_SECONDS + 1, first),
        )
        # The oldest held row waited long enough: every held row goes, in one claim.
        assert {row.id for row in claim(conn, held=held)} == {first, later}


def recount_is_exact(db) -> bool:
    """Every counter messages.index keeps equals its definition: members'
    message counts, DM unread counts, and last_seen_at no earlier than the
    user's last message."""
    latest = "(SELECT max(m.created_at) FROM messages m WHERE m.author_id = u.id)"
    counters = (MEMBER_MESSAGES, DM_UNREAD, last_seen(latest))
    return all(db.execute(counter.count_wrong("true")).fetchone() == (0,) for counter in counters)


def burst(api, authors, room, count: int = BURST, content: str = "message {i} in **bold**"):
    """`count` posts spread over the authors, before any relay runs."""
    return [
        api.say(room, authors[i % len(authors)], content.format(i=i))["id"] for i in range(count)
    ]


def unfinished(db) -> int:
    return db.execute(
        "SELECT count(*) FROM outbox WHERE task_name = 'messages.index' AND finished_at IS NULL"
    ).fetchone()[0]


class Log:
    """What the session's default-queue worker (the `celery_worker`
    fixture: two tests' workers on one queue would share its messages) says
    from now on."""

    def __init__(self, worker) -> None:
        self.worker, self.start = worker, len(worker.output())

    def __str__(self) -> str:
        return self.worker.output()[self.start :]

    def batches(self) -> list[str]:
        """The ids of the batch tasks received, once per delivery."""
        return re.findall(r"messages\.index_batch\[([0-9a-f-]+)\] received", str(self))


@pytest.fixture
def chat(api, db):
    """A room of three with a moderation rule, and a DM: (room, [alice,
    bob, carol], conversation)."""
    alice, bob, carol = (api.register() for _ in range(3))
    room = api.room(alice)
    for member in (bob, carol):
        api.join(room, member)
    rules = {"enabled": True, "blocked_terms": ["forbidden"], "action": "flag"}
    changed = api.patch(f"/rooms/{room}", alice, json={"metadata": {"auto_moderate": rules}})
    assert changed.status_code == 200, changed.json
    conversation = api.post("/conversations", alice, json={"user_id": bob.id}).json["id"]
    return room, [alice, bob, carol], conversation


def indexed_in_full(db, room_ids: list[int], dm_ids: list[int]) -> None:
    """Each message has all of its work: enrichment, notifications (each
    room message the two members who did not write it, each DM the other
    participant), and every counter equals a recount."""
    every = room_ids + dm_ids
    assert db.execute(
        "SELECT count(*) FROM messages WHERE id = ANY(%s) AND rendered_html LIKE %s",
        (every, "%<strong>bold</strong>%"),
    ).fetchone() == (len(every),)
    assert db.execute(
        "SELECT count(*) FROM notifications WHERE message_id = ANY(%s)", (room_ids,)
    ).fetchone() == (2 * len(room_ids),)
    assert db.execute(
        "SELECT count(*) FROM notifications WHERE message_id = ANY(%s) AND kind = 'dm'", (dm_ids,)
    ).fetchone() == (len(dm_ids),)
    assert recount_is_exact(db)


@pytest.mark.slow
def test_a_burst_is_indexed_in_batches_and_every_message_gets_all_its_work(
    api, db, chat, celery_worker
):
    room, (alice, bob, carol), conversation = chat
    room_ids = burst(api, [alice, bob, carol], room)
    flagged = api.say(room, carol, "a forbidden **bold** word")["id"]
    dm_ids = [
        api.post(
            f"/conversations/{conversation}/messages", alice, json={"content": f"dm {i} **bold**"}
        ).json["id"]
        for i in range(5)
    ]
    rows = len(room_ids) + 1 + len(dm_ids)
    log = Log(celery_worker)
    relay = start_relay()
    try:
        wait_for(lambda: unfinished(db) == 0, timeout=120, what="every row to finish")
    finally:
        relay.stop()

    # One relay claim holds every row: they went as full batches, nothing alone.
    assert len(log.batches()) == -(-rows // BATCH_ROWS)
    assert "messages.index[" not in str(log)
    assert db.execute(
        "SELECT count(*) FROM outbox WHERE started_at IS NOT NULL AND finished_at IS NOT NULL"
        " AND task_name = 'messages.index'"
    ).fetchone() == (rows,)
    indexed_in_full(db, [*room_ids, flagged], dm_ids)
    assert db.execute(
        "SELECT unread_count FROM direct_conversation_participants WHERE user_id = %s",
        (bob.id,),
    ).fetchone() == (len(dm_ids),)
    # Moderated as alone, its audit row naming the request that posted it.
    assert db.execute(
        "SELECT moderation_status::text FROM messages WHERE id = %s", (flagged,)
    ).fetchone() == ("flagged",)
    assert db.execute(
        "SELECT count(*) FROM messages WHERE id = ANY(%s) AND moderation_status <> 'approved'",
        (room_ids,),
    ).fetchone() == (0,)
    assert db.execute(
        "SELECT a.request_id = o.request_id FROM audit_logs a, outbox o"
        " WHERE a.event_type = 'message_auto_moderated' AND a.resource_id = %s"
        " AND o.args->>0 = %s",
        (flagged, str(flagged)),
    ).fetchone() == (True,)


REFUSE_POISON = """
CREATE FUNCTION refuse_poison() RETURNS trigger AS $$
BEGIN RAISE EXCEPTION 'this message cannot be written'; END $$ LANGUAGE plpgsql;
CREATE TRIGGER refuse_poison BEFORE UPDATE ON messages FOR EACH ROW
    WHEN (NEW.content = 'poison **bold**') EXECUTE FUNCTION refuse_poison();
"""
ALLOW_POISON = "DROP TRIGGER refuse_poison ON messages; DROP FUNCTION refuse_poison();"


@pytest.mark.slow
def test_a_message_that_fails_for_good_does_not_hold_back_the_rest_of_its_batch(
    api, db, chat, celery_worker
):
    room, (alice, bob, carol), conversation = chat
    room_ids = burst(api, [alice, bob, carol], room)
    poison = api.say(room, bob, "poison **bold**")["id"]
    room_ids += burst(api, [alice, carol], room, count=10)
    dm_ids = [
        api.post(
            f"/conversations/{conversation}/messages", bob, json={"content": "dm **bold**"}
        ).json["id"]
    ]
    db.execute(REFUSE_POISON)
    log = Log(celery_worker)
    relay = start_relay()
    try:
        wait_for(lambda: unfinished(db) == 1, timeout=120, what="every other row to finish")
        poison_row = wait_for(
            lambda: db.execute(
                "SELECT finished_at, last_error FROM outbox WHERE args->>0 = %s AND last_error IS NOT NULL",
                (str(poison),),
            ).fetchone(),
            what="the bad row's error to be recorded",
        )
    finally:
        relay.stop()
        db.execute(ALLOW_POISON)

    # The bad row is left to the reconciler (re-driven, then dead), with its reason.
    assert poison_row[0] is None
    assert "this message cannot be written" in poison_row[1]
    assert "split" in str(log)
    indexed_in_full(db, room_ids, dm_ids)
    assert db.execute("SELECT rendered_html FROM messages WHERE id = %s", (poison,)).fetchone() == (
        None,
    )


SLOW_WRITES = """
CREATE FUNCTION slow_write() RETURNS trigger AS $$
BEGIN PERFORM pg_sleep(0.02); RETURN NEW; END $$ LANGUAGE plpgsql;
CREATE TRIGGER slow_write BEFORE UPDATE ON messages FOR EACH ROW EXECUTE FUNCTION slow_write();
"""
FAST_WRITES = "DROP TRIGGER slow_write ON messages; DROP FUNCTION slow_write();"


@pytest.mark.slow
def test_a_worker_killed_in_the_middle_of_a_batch_loses_none_of_its_messages(
    api, db, chat, celery_worker
):
    room, (alice, bob, carol), conversation = chat
    room_ids = burst(api, [alice, bob, carol], room)
    dm_ids = [
        api.post(
            f"/conversations/{conversation}/messages", alice, json={"content": f"dm {i} **bold**"}
        ).json["id"]
        for i in range(3)
    ]
    # Each message write takes 20 ms: a batch of 50 is seconds of work, time to kill it.
    db.execute(SLOW_WRITES)
    log = Log(celery_worker)
    relay = start_relay()
    try:
        started = "SELECT count(*) FROM outbox WHERE started_at IS NOT NULL"
        wait_for(lambda: db.execute(started).fetchone()[0] > 0, timeout=60, what="a batch to start")
        for child in pool_children(celery_worker):
            os.kill(child, signal.SIGKILL)
        # Cut short, nothing of a batch counts as done: its rows are owed still.
        assert (
            db.execute(
                "SELECT count(*) FROM outbox WHERE started_at IS NOT NULL AND finished_at IS NULL"
            ).fetchone()[0]
            > 0
        )
        wait_for(lambda: unfinished(db) == 0, timeout=120, what="every row to finish")
    finally:
        relay.stop()
        db.execute(FAST_WRITES)

    received = log.batches()
    assert len(received) > len(set(received)), "the killed batch was delivered again"
    indexed_in_full(db, room_ids, dm_ids)
