"""Chaos: Redis loses every message after the relay published them and
before any worker ran them (FLUSHALL of this test's own redis-server, which
has no persistence). Nobody acts: beat runs the reconciler, which sends the
rows again under the same task ids, and every counter that messages.index
keeps ends right."""

from __future__ import annotations

import sys

import pytest
import redis

from tests.conftest import ManagedProcess, wait_for
from tests.processes import free_port, on_redis, start_redis, start_relay_on, start_worker_on

pytestmark = pytest.mark.slow

POSTS = 50

# What messages.index keeps, beside a recount: empty when every post's
# bookkeeping was done.
MISMATCHES = """
SELECT 'member', rm.user_id FROM room_members rm
WHERE rm.message_count <> (SELECT count(*) FROM messages m WHERE m.room_id = rm.room_id
                           AND m.author_id = rm.user_id AND NOT m.is_deleted)
UNION ALL
SELECT 'unread', p.user_id FROM direct_conversation_participants p
WHERE p.unread_count <> (SELECT count(*) FROM messages m
                         WHERE m.conversation_id = p.conversation_id AND m.author_id <> p.user_id
                           AND NOT m.is_deleted AND m.id > COALESCE(p.last_read_message_id, 0))
UNION ALL
SELECT 'last_seen', u.id FROM users u
WHERE u.last_seen_at IS DISTINCT FROM (SELECT max(created_at) FROM messages m
                                       WHERE m.author_id = u.id)
"""


def count(db, sql: str) -> int:
    return db.execute(sql).fetchone()[0]


def test_messages_lost_by_redis_are_redriven_until_every_counter_is_right(api, db):
    port = free_port()
    procs = {"redis": start_redis(port)}
    try:
        procs["relay"] = start_relay_on(port, "wiped-relay")
        alice, bob = api.register(), api.register()
        room = api.room(alice)
        api.join(room, bob)
        conversation = api.post("/conversations", alice, json={"user_id": bob.id}).json["id"]
        for i in range(POSTS):
            author = (alice, bob)[i % 2]
            path = f"/rooms/{room}/messages" if i % 5 else f"/conversations/{conversation}/messages"
            assert api.post(path, author, json={"content": f"m{i}"}).status_code == 201
        wait_for(
            lambda: count(db, "SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL") == POSTS,
            timeout=60,
            what="the relay to publish every post",
        )

        redis.Redis(port=port).flushall()
        assert count(db, "SELECT count(*) FROM outbox WHERE started_at IS NOT NULL") == 0
        # No post's bookkeeping was done: both authors' counts are off.
        assert set(db.execute(MISMATCHES).fetchall()) == {
            (kind, user.id) for kind in ("member", "unread", "last_seen") for user in (alice, bob)
        }

        procs["worker"] = start_worker_on(
            port, "wiped-worker", "default,maintenance", {"OUTBOX_REDRIVE_AFTER_SECONDS": "2"}
        )
        procs["beat"] = ManagedProcess(
            "wiped-beat",
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "beat",
                "-l",
                "INFO",
            ],
            {**on_redis(port), "VEZA_SCHEDULE_REDRIVE_OUTBOX": "1"},
        ).start()

        wait_for(
            lambda: count(db, "SELECT count(*) FROM outbox WHERE finished_at IS NOT NULL") == POSTS,
            timeout=120,
            what="every lost post's work to be re-driven and finish",
        )
        assert db.execute(MISMATCHES).fetchall() == []
        assert count(db, "SELECT count(*) FROM outbox WHERE redrives = 1") == POSTS
        assert count(db, "SELECT count(*) FROM outbox WHERE dead_at IS NOT NULL") == 0
    finally:
        for proc in reversed(procs.values()):
            proc.stop()
