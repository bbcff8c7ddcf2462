"""The settings: README.md's configuration table (the contract) and the
settings model (veza/settings.py) list the same variables with the same
defaults; a bad value stops a process at start-up, naming its variable; and
nothing else reads the environment."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from typing import Annotated

import argon2
import pytest
from pydantic import TypeAdapter

from db.engine import DEFAULT_BOUNDS, KINDS
from tests.conftest import ROOT
from veza import limits
from veza.settings import InvalidSettings, Settings

# Rows of the table read by the scripts and the test harness, not by the
# settings: each is checked to appear in the file said to read it.
OUTSIDE_THE_SETTINGS = {
    "API_BIND": "Procfile",
    "API_WORKERS": "Procfile",
    "FILES_CONCURRENCY": "Procfile",
    "DEFAULT_CONCURRENCY": "Procfile",
    "VEZA_VENV": "scripts/bootstrap.sh",
    "VEZA_VAR_DIR": "scripts/bootstrap.sh",
    "S3_LOCAL_PORT": "scripts/seaweedfs.sh",
    "VEZA_TEST_ADMIN_URL": "tests/conftest.py",
    "VEZA_TEST_REDIS_DB": "tests/conftest.py",
    "VEZA_TEST_SCREENSHOTS": "tests/test_console_browser.py",
    "VEZA_TEST_REDIS_URL": "tests/conftest.py",
}
# Defaults the README states as a value that the model computes elsewhere,
# and (model default, the value it comes to) for each.
COMPUTED = {
    # Derived from the maintenance soft time limit (veza/limits.py).
    "MAINTENANCE_RUN_BUDGET_SECONDS": (None, limits.DEFAULT_RUN_BUDGET_SECONDS),
}
# Defaults the README describes in words: the model's default for each, and why.
DESCRIBED = {
    # argon2-cffi's own, taken from it.
    "ARGON2_TIME_COST": argon2.DEFAULT_TIME_COST,
    "ARGON2_MEMORY_KIB": argon2.DEFAULT_MEMORY_COST,
    # scripts/run generates credentials; flowerconfig.py refuses to start without.
    "FLOWER_BASIC_AUTH": None,
    # flowerconfig.py derives it from FLOWER_BASIC_AUTH.
    "FLOWER_COOKIE_SECRET": None,
    # scripts/run generates logins; `veza console` refuses to start without.
    "CONSOLE_BASIC_AUTH": None,
    # worker/metrics.py serves without auth unless it is set.
    "METRICS_BASIC_AUTH": None,
    # api/rate_limits.py counts in REDIS_URL's Redis unless it is set.
    "RATE_LIMIT_STORAGE_URL": None,
    # db/partitions.py computes it at run time from the rooms' retention.
    "PARTITION_MONTHS_BEHIND": None,
    # No prefix: the keys are the storage paths themselves.
    "S3_PREFIX": "",
    # veza/mail.py: no SMTP server, no missed-message email (nor a login).
    "SMTP_HOST": None,
    "SMTP_USER": None,
    # Each beat entry's own schedule (beat_schedule.py).
    "VEZA_SCHEDULE_<NAME>": {},
}
KIND = "<KIND>"


def readme_defaults() -> dict[str, str]:
    """{variable: its default cell} from README.md's configuration table; a
    row naming `A` / `B` with defaults `x` / `y` gives each its own."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    defaults: dict[str, str] = {}
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        names_cell, default_cell = (cell.strip() for cell in line.strip("|").split("|")[:2])
        names = re.findall(r"`([^`]+)`", names_cell)
        values = default_cell.split(" / ")
        if len(values) != len(names):
            values = [default_cell] * len(names)
        for name, value in zip(names, values, strict=False):
            assert name not in defaults, f"{name} has two rows in README.md"
            defaults[name] = value
    return defaults


def model_defaults() -> dict[str, object]:
    """{variable: the model's default}; the per-kind database bounds are
    one variable, DB_..._<KIND>, as in the README."""
    defaults: dict[str, object] = {}
    for field_name, field in Settings.model_fields.items():
        name = (
            field.validation_alias
            if isinstance(field.validation_alias, str)
            else field_name.upper()
        )
        for kind in KINDS:
            if name.startswith("DB_") and name.endswith(f"_{kind.upper()}"):
                name = name.removesuffix(kind.upper()) + KIND
        defaults.setdefault(name, field.default)
    return defaults


def test_the_readme_and_the_settings_list_the_same_variables():
    documented = set(readme_defaults()) - set(OUTSIDE_THE_SETTINGS)
    modelled = set(model_defaults())
    assert sorted(documented - modelled) == [], "in README.md, not in veza/settings.py"
    assert sorted(modelled - documented) == [], "in veza/settings.py, not in README.md"
    for name, reader in OUTSIDE_THE_SETTINGS.items():
        assert name in (ROOT / reader).read_text(), f"{name} is not read by {reader}"


def test_the_readme_and_the_settings_give_the_same_defaults():
    model = model_defaults()
    for name, cell in readme_defaults().items():
        if name in OUTSIDE_THE_SETTINGS:
            continue
        literal = re.fullmatch(r"`([^`]*)`", cell)
        if name.endswith(KIND):
            # Unset, each kind's own bound (db/engine.py).
            assert model[name] is None, name
            bound = name.removeprefix("DB_").removesuffix("_" + KIND).lower()
            stated = dict(re.findall(r"(\w+) `(\d+)`", cell))
            assert stated == {
                kind.upper(): str(getattr(DEFAULT_BOUNDS[kind], bound)) for kind in KINDS
            }, name
        elif name in COMPUTED:
            assert literal, f"{name}: README.md gives no value"
            unset, computed = COMPUTED[name]
            assert model[name] == unset, name
            assert int(literal.group(1)) == computed, name
        elif name in DESCRIBED:
            assert model[name] == DESCRIBED[name], name
        elif cell == "unset":
            assert model[name] is None, name
        else:
            assert literal, f"{name}: README.md says {cell!r}; add it to DESCRIBED, with why"
            field = Settings.model_fields[name.lower()]
            # With its validators: RENDITION_SIZES reads "400,1280".
            annotation = (
                Annotated[(field.annotation, *field.metadata)]
                if field.metadata
                else field.annotation
            )
            assert TypeAdapter(annotation).validate_python(literal.group(1)) == model[name], name


def test_a_bad_value_is_refused_with_its_variables_name(environment):
    with pytest.raises(InvalidSettings) as refused:
        environment(CLAMD_PORT="33l0", BROKER_SOCKET_TIMEOUT="fast")
    message = str(refused.value)
    assert "CLAMD_PORT='33l0': Input should be a valid integer" in message
    assert "BROKER_SOCKET_TIMEOUT='fast': Input should be a valid number" in message


def test_sentinel_urls_are_read_as_celery_reads_them_and_a_disagreeing_one_is_refused(
    environment,
):
    from veza.settings import Sentinels, get_settings

    assert get_settings().redis_sentinels is None  # the suite's one Redis
    environment(REDIS_URL="sentinel://:p%40ss@h1:26379/3;sentinel://h2/3;sentinel://h3:26380")
    assert get_settings().redis_sentinels == Sentinels(
        (("h1", 26379), ("h2", 26379), ("h3", 26380)), 3, None, "p@ss"
    )
    # Celery and kombu would read database 0 (the first URL's) and ignore the /3.
    with pytest.raises(InvalidSettings, match="may name only the first's database"):
        environment(REDIS_URL="sentinel://h1:26379;sentinel://h2:26379/3")
    with pytest.raises(InvalidSettings, match="must be sentinel://HOST"):
        environment(REDIS_URL="sentinel://h1:26379/0;redis://h2:6379/0")


def test_emails_without_a_key_for_their_unsubscribe_links_are_refused(environment):
    with pytest.raises(InvalidSettings, match="NOTIFY_SIGNING_KEY must be set"):
        environment(SMTP_HOST="mail.example.com")
    environment(NOTIFY_SIGNING_KEY="k")  # then the same host is accepted
    from veza.settings import get_settings

    assert get_settings().smtp_host == "mail.example.com"


def test_a_bad_schedule_is_refused_with_its_variables_name(environment):
    from beat_schedule import scheduled
    from veza import jobs

    environment(VEZA_SCHEDULE_HEARTBEAT="15")
    assert scheduled("heartbeat", jobs.HEARTBEAT, "* * * * *", 50)[1]["schedule"] == 15
    environment(VEZA_SCHEDULE_HEARTBEAT="every minute")
    with pytest.raises(ValueError, match="VEZA_SCHEDULE_HEARTBEAT='every minute'"):
        scheduled("heartbeat", jobs.HEARTBEAT, "* * * * *", 50)


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "celery", "-A", "worker", "worker", "-Q", "default", "-c", "1"],
        ["-m", "worker.cli", "relay"],
        ["-m", "gunicorn", "--bind", "127.0.0.1:0", "api:create_app()"],
    ],
    ids=["worker", "relay", "api"],
)
def test_a_process_with_a_bad_value_stops_at_start_naming_it(argv):
    env = {**os.environ, "METRICS_PORT": "9o"}
    ran = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert ran.returncode != 0
    assert "invalid configuration: METRICS_PORT='9o'" in ran.stdout + ran.stderr


def environment_reads(path) -> list[str]:
    """The lines of a module that touch os.environ or call getenv."""
    source = path.read_text()
    lines = source.splitlines()
    return [
        lines[node.lineno - 1].strip()
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")
    ]


def test_only_the_settings_read_the_environment():
    modules = [
        path
        for package in ("veza", "worker", "tasks", "api", "console", "db")
        for path in (ROOT / package).rglob("*.py")
    ]
    modules += [ROOT / "beat_schedule.py", ROOT / "flowerconfig.py"]
    reads = {str(path.relative_to(ROOT)): environment_reads(path) for path in modules}
    assert reads.pop("veza/settings.py")  # the one reader
    # Not a setting: libpq's PGTZ is taken out of the process's environment.
    assert reads.pop("db/engine.py") == ['os.environ.pop("PGTZ", None)']
    assert {path: found for path, found in reads.items() if found} == {}
