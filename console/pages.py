"""The console's one page, and its live sections: each section is also
served alone (`/live/<section>`), which the page's script fetches again
every second, so that a running run's bar moves without a reload."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, abort, render_template

from console import overview
from veza import jobs

bp = Blueprint("pages", __name__)

# Each live section (its template is _<name>.html), and what it shows.
SECTIONS: dict[str, Callable[[], dict[str, Any]]] = {
    "runs": lambda: {"runs": overview.runs()},
    "files": lambda: {"files": overview.files()},
    "outbox": lambda: {"owed": overview.owed_work()},
    "actions": lambda: {"actions": overview.recent_actions()},
}


@bp.get("/")
def index() -> str:
    shown: dict[str, Any] = {}
    for section in SECTIONS.values():
        shown.update(section())
    tasks = [job.name.removeprefix("maintenance.") for job in jobs.MAINTENANCE]
    return render_template("console.html", tasks=tasks, **shown)


@bp.get("/live/<section>")
def live(section: str) -> str:
    if section not in SECTIONS:
        abort(404)
    return render_template(f"_{section}.html", **SECTIONS[section]())


@bp.app_template_filter("utc")
def utc(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"


@bp.app_template_filter("duration")
def duration(seconds: float | None) -> str:
    """3.2s, 4m 05s, 2h 01m."""
    if seconds is None:
        return "-"
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, second = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {second:02d}s"
    hours, minute = divmod(minutes, 60)
    return f"{hours}h {minute:02d}m"
