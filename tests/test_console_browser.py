"""The operator console in a real browser: Debian's Chromium, headless,
driven by Playwright (never a downloaded browser), against `veza console`
running as its own process on the real database, with a real relay and
real Celery workers (and clamd) doing the work its buttons ask for.

One browser and one console for the module; each test has a browser
context of its own (its own login). Screenshots go to VEZA_TEST_SCREENSHOTS
when it is set (kept), else to a temporary directory removed afterwards.
The page refreshes its sections every second by itself: a test clicks,
then waits for what an operator would wait to see."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ManagedProcess, start_worker, wait_for
from tests.console_helpers import LOGINS, OPS, dead_row, failed_file, outbox_state
from tests.maintenance_helpers import fill_retention_rooms, run_task, waiting_on_a_lock
from tests.processes import free_port, status
from tests.uploads import row

CHROMIUM = Path("/usr/bin/chromium")  # Debian's package `chromium`
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Chromium is not installed (apt-get install chromium; scripts/test installs it)",
)

PURGE = "maintenance.purge_retention"
SECONDS = 1000  # Playwright counts in milliseconds
# Work done by a worker behind the relay: well within this, on a loaded machine.
WORK = 60 * SECONDS


@pytest.fixture(scope="module")
def screenshots():
    kept = os.environ.get("VEZA_TEST_SCREENSHOTS")
    folder = Path(kept or tempfile.mkdtemp(prefix="veza-console-screens-"))
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    if not kept:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import expect, sync_playwright

    # Each expectation waits as long as work behind a relay may take.
    expect.set_options(timeout=WORK)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def console_url(database_url, redis_client):
    port = free_port()
    server = ManagedProcess(
        "console",
        [sys.executable, "-m", "worker.cli", "console", "--port", str(port)],
        env={"CONSOLE_BASIC_AUTH": LOGINS},
    ).start()
    try:
        wait_for(lambda: status(port, "/") == 401, what="the console to answer")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def signed_in(browser, console_url, login=OPS):
    user, password = login
    context = browser.new_context(
        base_url=console_url,
        http_credentials={"username": user, "password": password},
        viewport={"width": 1400, "height": 1000},
    )
    context.set_default_timeout(WORK)
    return context


@pytest.fixture
def page(browser, console_url, db):
    context = signed_in(browser, console_url)
    yield context.new_page()
    context.close()


def expect(locator):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def flash(page):
    return page.locator("p.flash")


def hold_still(page) -> None:
    """Stop the page's live refresh, which would put back a form the test
    tampers with (the script refreshes what is marked data-live)."""
    page.evaluate(
        "document.querySelectorAll('[data-live]').forEach(e => e.removeAttribute('data-live'))"
    )


def refused(context) -> bool:
    """Whether Chromium was shut out: answered 401, it shows that answer,
    or gives up with ERR_INVALID_AUTH_CREDENTIALS (Chromium does either,
    with no login to give or after giving a wrong one)."""
    from playwright.sync_api import Error

    try:
        return context.new_page().goto("/").status == 401
    except Error as error:
        return "ERR_INVALID_AUTH_CREDENTIALS" in error.message


def test_the_console_needs_its_login_and_shows_each_section(browser, console_url, db, screenshots):
    dead = dead_row(db)
    poison = dead_row(
        db, "poison: messages.index[4f2c] dropped: delivered 5 times without finishing"
    )
    failed = failed_file(db)

    nobody = browser.new_context(base_url=console_url)
    wrong = signed_in(browser, console_url, ("ops", "not-the-password"))
    try:
        assert refused(nobody)
        assert refused(wrong)
    finally:
        nobody.close()
        wrong.close()

    context = signed_in(browser, console_url)
    try:
        page = context.new_page()
        assert page.goto("/").status == 200
        expect(page.locator("#operator")).to_have_text("ops")
        expect(page.locator('td[data-owed="dead"]')).to_have_text("2")
        expect(page.locator(f'table.poison tr[data-row="{poison}"]')).to_contain_text(
            "delivered 5 times"
        )
        expect(page.locator(f'table.dead tr[data-row="{dead}"]')).to_contain_text("boom")
        expect(page.locator(f'table.failed tr[data-file="{failed}"]')).to_contain_text(
            "the virus scanner is unavailable"
        )
        page.screenshot(path=screenshots / "1-console-signed-in.png", full_page=True)
    finally:
        context.close()


def test_a_form_without_its_token_or_with_a_wrong_one_is_refused(page, db, screenshots):
    row_id = dead_row(db)
    replay = page.locator(f'tr[data-row="{row_id}"] form')
    for tamper in (
        "form => form.querySelector('[name=csrf_token]').remove()",
        "form => { form.querySelector('[name=csrf_token]').value = 'f'.repeat(64) }",
    ):
        page.goto("/")
        hold_still(page)
        replay.evaluate(tamper)
        with page.expect_response(lambda response: response.request.method == "POST") as sent:
            replay.get_by_role("button", name="Replay").click()
        assert sent.value.status == 403
        expect(page.locator("p.flash.refused")).to_contain_text("CSRF token is missing or wrong")
    page.screenshot(path=screenshots / "2-csrf-refused.png", full_page=True)
    assert outbox_state(db, row_id) == (False, False, False)  # still dead, never sent


@pytest.mark.slow
def test_replay_a_dead_row_and_retry_a_failed_file_and_see_both_done(
    page, db, relay, celery_worker, clamd_server, screenshots
):
    """The dead row owes a heartbeat (the suite's default worker does it);
    the file's scan got no verdict (a files worker scans it again, clamd up)."""
    row_id = dead_row(db)
    file_id = failed_file(db)
    worker = start_worker("console-files", queues="files,scan")
    try:
        page.goto("/#outbox")
        page.locator(f'tr[data-row="{row_id}"]').get_by_role("button", name="Replay").click()
        expect(flash(page)).to_contain_text(f"outbox row {row_id} is unsent again")
        expect(page.locator(f'tr[data-row="{row_id}"]')).to_have_count(0)
        replayed = page.locator("table.actions tr", has_text=str(row_id)).locator("td[data-now]")
        expect(replayed).to_have_text("done")  # the relay sent it, a worker did it
        expect(page.locator('td[data-owed="in-flight"]')).to_have_text("0")
        page.screenshot(path=screenshots / "3-replayed-and-done.png", full_page=True)

        page.locator(f'tr[data-file="{file_id}"]').get_by_role("button", name="Retry").click()
        expect(flash(page)).to_contain_text(f"file {file_id} is pending again")
        retried = page.locator("table.actions tr", has_text=f"file {file_id}")
        expect(retried.locator("td[data-now]")).to_have_text("clean")
        expect(page.locator('td[data-state="failed"]')).to_have_text("0")
        expect(page.locator('td[data-state="clean"]')).to_have_text("1")
        page.screenshot(path=screenshots / "4-retried-and-clean.png", full_page=True)
    finally:
        worker.stop()
    assert outbox_state(db, row_id) == (False, True, True)
    # Clean (servable) comes before the thumbnail step and the last stamp.
    wait_for(
        lambda: row(db, file_id)["processing_status"] == "completed", what="the pipeline's end"
    )
    assert row(db, file_id)["virus_scan_status"] == "clean"


def hold_room(db, room: int) -> psycopg.Connection:
    """A transaction holding the room's row: the purge's first delete in
    that room waits for it (the counter trigger updates the row)."""
    holder = psycopg.connect(db.info.dsn)
    holder.execute("SELECT 1 FROM rooms WHERE id = %s FOR UPDATE", (room,))
    return holder


def let_go_once_waiting(db, run_id: int, holder: psycopg.Connection) -> None:
    """Release `holder` once the run waits on it and has not written its
    progress for longer than the progress interval: the batch it waits in
    then ends with a progress write (and the cancel check)."""
    from veza.progress import INTERVAL_SECONDS

    def stalled() -> bool:
        return (
            waiting_on_a_lock(db)
            and db.execute(
                "SELECT progress_at < clock_timestamp() - make_interval(secs => %s)"
                " FROM maintenance_runs WHERE id = %s",
                (INTERVAL_SECONDS, run_id),
            ).fetchone()[0]
        )

    wait_for(stalled, timeout=60, what="the purge to wait on the held room")
    holder.rollback()


def bar_value(bar) -> int:
    """How far the bar shows the run, 0 while it knows no total."""
    return int(bar.get_attribute("value") or 0)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_running_purge_shows_its_bar_moving_and_cancel_stops_it(
    browser, console_url, mdb, relay, screenshots
):
    """Five rooms of 200 old messages each; the test holds rooms 2 to 4, so
    the purge stops at each of them in turn while the page shows its bar:
    400 of 1000 deleted, then 600; cancelled while it waits at room 4, it
    ends that batch and stops, room 5 untouched."""
    db = mdb
    run_task(PURGE)  # the empty past months go first: their drops take table locks
    rooms = fill_retention_rooms(db, old=1000, young=0, rooms=5)
    holders = [hold_room(db, room) for room in rooms[1:4]]
    worker = start_worker("console-maintenance", queues="maintenance", concurrency=1)
    context = signed_in(browser, console_url)
    try:
        page = context.new_page()
        page.goto("/")
        task = page.locator('tr[data-task="purge_retention"]')
        task.get_by_role("button", name="Run now").click()
        expect(flash(page)).to_contain_text("a run of purge_retention is owed")
        run_id = wait_for(
            lambda: db.execute(
                "SELECT id FROM maintenance_runs WHERE task_name = %s AND status = 'running'",
                (PURGE,),
            ).fetchone(),
            timeout=60,
            what="the purge to start on the worker",
        )[0]
        shown = page.locator(f'tr[data-run="{run_id}"]')
        expect(shown.locator(".status")).to_have_text("running")
        bar = shown.locator("progress")

        seen = [0]
        for step, holder in enumerate(holders[:2], start=1):
            let_go_once_waiting(db, run_id, holder)
            wait_for(lambda: bar_value(bar) > seen[-1], timeout=60, what="the bar to move on")
            seen.append(bar_value(bar))
            expect(bar).to_have_attribute("max", "1000")
            page.screenshot(path=screenshots / f"5-purge-bar-{step}.png", full_page=True)
        assert 0 < seen[1] < seen[2] < 1000

        shown.get_by_role("button", name="Cancel").click()
        expect(flash(page)).to_contain_text(f"run {run_id} is asked to stop")
        expect(shown).to_contain_text("stopping: cancel asked by ops")
        let_go_once_waiting(db, run_id, holders[2])
        expect(shown.locator(".status")).to_have_text("cancelled")
        expect(shown).to_contain_text("cancelled by ops")
        expect(shown.locator("td.progress")).to_have_text("800 / 1000")
        page.screenshot(path=screenshots / "6-purge-cancelled.png", full_page=True)
    finally:
        context.close()
        for holder in holders:
            holder.close()
        worker.stop()
    left = db.execute(
        "SELECT room_id, count(*) FROM messages WHERE content LIKE 'old %%' GROUP BY room_id"
    ).fetchall()
    assert left == [(rooms[4], 200)]
