"""deploy/alerts.yml: valid for Prometheus, each alert shown to fire on
made-up series (deploy/alerts.test.yml), and the maintenance alert's
periods taken from beat_schedule.py, so the two cannot drift apart."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
import yaml

from tests.conftest import ROOT

ALERTS = ROOT / "deploy" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "alerts.test.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)"
)

# What the alerts must cover (issue 12): each is unit-tested in alerts.test.yml.
REQUIRED = {
    "VezaHeartbeatStalled",
    "VezaOutboxNotPublishing",
    "VezaOutboxDeadRows",
    "VezaInfectedUpload",
    "VezaMaintenanceNoRecentSuccess",
    "VezaQueueGrowing",
}


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]


def promtool(*args: str) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=ALERTS.parent, capture_output=True, text=True, timeout=60
    )


@needs_promtool
def test_promtool_accepts_the_alert_rules():
    result = promtool("check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_each_alert_fires_on_the_series_its_unit_test_feeds():
    result = promtool("test", "rules", ALERT_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_required_alert_exists_and_is_unit_tested():
    names = {rule["alert"] for rule in rules()}
    tested = {
        case["alertname"]
        for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
    }
    assert names >= REQUIRED
    assert tested >= REQUIRED


def metric_names_in_rules() -> set[str]:
    names = set()
    for rule in rules():
        names |= set(re.findall(r"\bveza_[a-z_]+", rule["expr"]))
    return names


def test_every_scheduled_maintenance_task_has_the_period_the_alert_compares_with():
    """The alert compares a task's last success with twice
    veza_maintenance_schedule_period_seconds, which the exporter takes from
    the beat schedule itself: here, every maintenance task beat runs gets
    one, and the periods are those its crontab says."""
    from worker import app
    from worker.metrics import schedule_periods

    scheduled = {e["task"] for e in app.conf.beat_schedule.values()}
    periods = schedule_periods(app)
    assert {t for t in scheduled if t.startswith("maintenance.")} <= set(periods)
    assert periods["maintenance.purge_retention"] == 24 * 3600  # 17 3 * * *
    assert periods["maintenance.rescan_files"] == 6 * 3600  # 47 */6 * * *
    assert periods["maintenance.expire_sessions"] == 15 * 60  # */15 * * * *
    assert periods["maintenance.redrive_outbox"] == 60  # * * * * *


@pytest.mark.parametrize(
    ("cron", "period"),
    [
        ("0 3,9 * * *", 18 * 3600),  # the widest gap: 9:00 to 3:00
        ("30", 30),
        ("0 3 * * 1", None),  # weekly: no daily period
    ],
)
def test_a_schedule_s_period_is_its_widest_gap(cron, period):
    from beat_schedule import parse_schedule, period_seconds

    assert period_seconds(parse_schedule(cron)) == period
