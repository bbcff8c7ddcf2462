"""The operator console's rules, through Flask's test client on the real
database: a login for every page, a CSRF token for every action, each
action audited with its operator and idempotent, and what each section
shows. tests/test_console_browser.py drives the same in Chromium, with
real workers."""

from __future__ import annotations

import base64
import json

import pytest

from tests.console_helpers import (
    LOGINS,
    OPS,
    audit_rows,
    csrf_token,
    dead_row,
    failed_file,
    outbox_state,
)
from tests.processes import free_port, veza
from tests.uploads import row


class Console:
    """The test client, signed in as one of the console's logins."""

    def __init__(self, client, login: tuple[str, str] = OPS) -> None:
        self.client, self.login = client, login

    def headers(self, login: tuple[str, str] | None = None) -> dict[str, str]:
        user, password = login or self.login
        return {
            "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        }

    def get(self, path: str = "/", **kwargs):
        return self.client.get(path, headers=self.headers(), **kwargs)

    def post(self, path: str, data: dict | None = None, token: bool = True, headers=None):
        form = dict(data or {})
        if token:
            form["csrf_token"] = csrf_token(self.get().text)
        return self.client.post(path, data=form, headers={**self.headers(), **(headers or {})})

    def act(self, path: str, data: dict | None = None) -> str:
        """POST as the page's form does, then follow the redirect: the
        message the operator reads."""
        answered = self.post(path, data)
        assert answered.status_code == 303, answered.text
        assert answered.headers["Location"].startswith("/#")
        return self.get().text


@pytest.fixture
def console(db, environment):
    environment(CONSOLE_BASIC_AUTH=LOGINS)
    from console import create_app

    return Console(create_app({"TESTING": True}).test_client())


@pytest.mark.parametrize("path", ["/", "/live/runs", "/static/console.js"])
def test_every_page_needs_a_console_login(console, path):
    assert console.client.get(path).status_code == 401
    wrong = console.client.get(path, headers=console.headers(("ops", "guess")))
    assert wrong.status_code == 401
    assert wrong.headers["WWW-Authenticate"].startswith('Basic realm="veza console"')
    assert (
        console.client.get(path, headers=console.headers(("night", "other-pass"))).status_code
        == 200
    )


@pytest.mark.parametrize("logins", ["", "ops:"])
def test_the_console_refuses_to_start_without_proper_logins(logins):
    started = veza("console", "--port", str(free_port()), timeout=30, CONSOLE_BASIC_AUTH=logins)
    assert started.returncode != 0
    assert "CONSOLE_BASIC_AUTH must be user:password" in started.stderr


@pytest.mark.parametrize("logins", [":", ":password", "ops:pw,:", "ops"])
def test_a_login_with_an_empty_user_or_password_is_refused(logins):
    from veza.basic_auth import logins as parse

    with pytest.raises(SystemExit, match="CONSOLE_BASIC_AUTH must be user:password"):
        parse("CONSOLE_BASIC_AUTH", logins)


def test_a_post_without_the_right_token_or_from_elsewhere_is_refused_and_changes_nothing(
    console, db
):
    row_id = dead_row(db)
    path = f"/outbox/{row_id}/replay"
    missing = console.post(path, token=False)
    assert missing.status_code == 403
    assert "CSRF token is missing or wrong" in missing.text
    wrong = console.client.post(path, data={"csrf_token": "0" * 64}, headers=console.headers())
    assert wrong.status_code == 403
    # Another login's token is not this one's.
    night = Console(console.client, ("night", "other-pass"))
    borrowed = console.client.post(
        path, data={"csrf_token": csrf_token(night.get().text)}, headers=console.headers()
    )
    assert borrowed.status_code == 403
    elsewhere = console.post(path, headers={"Origin": "https://evil.example"})
    assert elsewhere.status_code == 403
    assert "sent from https://evil.example" in elsewhere.text
    assert outbox_state(db, row_id) == (False, False, False)  # still dead
    assert audit_rows(db, "outbox.replay") == []


def test_replay_is_audited_with_its_operator_and_a_second_replay_changes_nothing(console, db):
    row_id = dead_row(db)
    page = console.act(f"/outbox/{row_id}/replay")
    assert f"outbox row {row_id} is unsent again" in page
    assert outbox_state(db, row_id) == (True, True, False)
    [audited] = audit_rows(db, "outbox.replay")
    assert audited["operator"] == "ops"
    assert audited["rows"][0]["dead_reason"].endswith("last error: boom")

    again = console.act(f"/outbox/{row_id}/replay")
    assert f"outbox row {row_id} is not dead" in again
    assert "nothing to do" in again
    assert len(audit_rows(db, "outbox.replay")) == 1


def test_replay_all_dead_sends_every_dead_row_again(console, db):
    ids = [dead_row(db), dead_row(db, "poison: system.heartbeat[x] dropped")]
    assert "2 dead rows are unsent again" in console.act("/outbox/replay-dead")
    assert [outbox_state(db, row_id) for row_id in ids] == [(True, True, False)] * 2
    assert "no dead outbox rows: nothing to do" in console.act("/outbox/replay-dead")


def test_retry_sends_a_failed_file_through_the_pipeline_once(console, db):
    file_id = failed_file(db)
    page = console.act(f"/files/{file_id}/retry")
    assert f"file {file_id} is pending again" in page
    retried = row(db, file_id)
    assert (retried["processing_status"], retried["virus_scan_status"]) == ("pending", "pending")
    owed = db.execute("SELECT task_name, args FROM outbox").fetchall()
    assert owed == [("files.process", [file_id])]
    [audited] = audit_rows(db, "file.retried")
    assert audited["operator"] == "ops"
    assert audited["reason"] == "the virus scanner is unavailable"

    again = console.act(f"/files/{file_id}/retry")
    assert "nothing to do" in again
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (1,)
    assert len(audit_rows(db, "file.retried")) == 1


def test_an_infected_file_is_never_retried(console, db, clamd_server):
    from tests.clamav import EICAR
    from tests.factories import make_user
    from tests.uploads import upload
    from veza.files import pipeline

    virus = upload(db, make_user(db), EICAR, "virus.txt", "text/plain")
    pipeline.run_all(virus)
    assert "nothing to do" in console.act(f"/files/{virus}/retry")
    assert row(db, virus)["virus_scan_status"] == "infected"
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (0,)


def test_run_now_and_dry_run_owe_the_maintenance_task_through_the_outbox(console, db):
    page = console.act("/maintenance/purge_retention/run", {"dry_run": "1"})
    assert "a dry run of purge_retention is owed" in page
    console.act("/maintenance/purge_retention/run", {"dry_run": "0"})
    owed = db.execute("SELECT task_name, kwargs FROM outbox ORDER BY created_at").fetchall()
    assert owed == [
        ("maintenance.purge_retention", {"dry_run": True}),
        ("maintenance.purge_retention", {"dry_run": False}),
    ]
    audited = audit_rows(db, "maintenance.run_requested")
    assert [(a["operator"], a["task"], a["dry_run"]) for a in audited] == [
        ("ops", "maintenance.purge_retention", True),
        ("ops", "maintenance.purge_retention", False),
    ]
    # Each request shows among the recent actions, with its outbox row's stage.
    assert page.count("purge_retention</td>") >= 1
    assert console.post("/maintenance/purge_retention/run", {"dry_run": "yes"}).status_code == 400
    assert console.post("/maintenance/no_such_task/run").status_code == 404
    assert db.execute("SELECT count(*) FROM outbox").fetchone() == (2,)


def test_the_page_shows_the_pipeline_and_the_outbox_with_their_reasons(console, db):
    from tests.factories import make_user
    from tests.uploads import upload
    from veza.files import pipeline

    failed = failed_file(db)
    locked = upload(db, make_user(db), b"PK\x03\x04 not really", "locked.zip", "application/zip")
    pipeline.fail(locked, "scan", "unscannable: encrypted archive")
    db.execute("UPDATE files SET virus_scan_status = 'failed' WHERE id = %s", (locked,))
    waiting = upload(db, make_user(db), b"just uploaded", "new.txt", "text/plain")
    dead = dead_row(db)
    poison = dead_row(db, "poison: messages.index[abc] dropped: delivered 5 times")

    page = console.get().text
    assert '<td data-state="failed">1</td>' in page
    assert '<td data-state="unscannable">1</td>' in page
    assert '<td data-state="pending">1</td>' in page
    assert f"file {waiting} (new.txt), pending" in page
    assert "the virus scanner is unavailable" in page
    assert "unscannable: encrypted archive" in page
    assert f'data-file="{failed}"' in page
    assert f'data-file="{locked}"' in page
    assert '<td data-owed="dead">2</td>' in page
    assert f'data-row="{dead}"' in page
    assert "last error: boom" in page
    poison_table = page.split('class="outbox poison"')[1]
    assert f'data-row="{poison}"' in poison_table
    assert "delivered 5 times" in poison_table
    assert f'data-row="{dead}"' not in poison_table
    # The live sections are served alone too, for the page's refresh.
    assert f'data-row="{poison}"' in console.get("/live/outbox").text
    assert console.get("/live/nothing").status_code == 404


def test_every_response_forbids_framing_and_foreign_scripts(console):
    answered = console.get()
    assert answered.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in answered.headers["Content-Security-Policy"]
    assert "script-src 'self'" in answered.headers["Content-Security-Policy"]
    assert answered.headers["Cache-Control"] == "no-store"


def test_cancel_asks_a_running_run_to_stop_once_and_leaves_a_finished_one_alone(console, db):
    running, finished = (
        db.execute(
            "INSERT INTO maintenance_runs (task_name, status, phase, progress, finished_at)"
            " VALUES ('maintenance.purge_retention', %s, 'room_batches', %s, %s) RETURNING id",
            (status, json.dumps({"done": 30, "total": 120}), finished_at),
        ).fetchone()[0]
        for status, finished_at in (("running", None), ("succeeded", "2026-01-01T00:00:00Z"))
    )
    page = console.get().text
    assert '<progress value="30" max="120"></progress>' in page
    assert "30 / 120 (25%)" in page
    assert f"/runs/{running}/cancel" in page
    assert f"/runs/{finished}/cancel" not in page

    assert f"run {running} is asked to stop" in console.act(f"/runs/{running}/cancel")
    asked = db.execute(
        "SELECT status, cancel_requested_by FROM maintenance_runs WHERE id = %s", (running,)
    ).fetchone()
    assert asked == ("running", "ops")  # the run itself stops, at its next batch
    assert [a["operator"] for a in audit_rows(db, "maintenance.cancel_requested")] == ["ops"]
    again = console.act(f"/runs/{running}/cancel")
    assert "stopping: cancel asked by ops" in again
    assert len(audit_rows(db, "maintenance.cancel_requested")) == 1

    done = console.act(f"/runs/{finished}/cancel")
    assert f"run {finished} is not running: nothing to do" in done
    assert "nothing to do" in console.act("/runs/999999/cancel")
    assert len(audit_rows(db, "maintenance.cancel_requested")) == 1
