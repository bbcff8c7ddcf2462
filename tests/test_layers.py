"""The layout holds: the core (veza/) imports neither Celery nor Flask nor
the layers above it, the API never loads the worker, and every job the core
can owe is a task the worker app registers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from veza import jobs


def test_the_import_contracts_hold():
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_every_job_is_a_task_of_the_worker_app_and_every_task_a_job():
    from worker import app

    app.loader.import_default_modules()
    ours = {name for name in app.tasks if not name.startswith("celery.")}
    assert ours == {job.name for job in jobs.ALL}


@pytest.mark.parametrize("app", ["api", "console"])
def test_the_web_apps_do_not_load_celery(app):
    """The work they ask for goes through the outbox; the relay sends it."""
    code = f"import sys, {app}; {app}.create_app(); print('celery' in sys.modules)"
    shown = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "CONSOLE_BASIC_AUTH": "ops:secret"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert shown == "False"
