"""docker-compose.yml stays valid and complete (there is no Docker engine
here to run it, so its structure is what can be checked)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def load() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_defines_every_part_of_the_system_with_healthchecks():
    services = load()["services"]
    expected = {
        "postgres",
        "redis",
        "clamav",
        "api",
        "relay",
        "worker-files",
        "worker-maintenance",
        "worker-default",
        "beat",
        "flower",
        "exporter",
        "console",
    }
    assert expected <= set(services)
    for name in expected:
        assert "healthcheck" in services[name], name
        assert services[name]["healthcheck"]["test"], name


def test_app_services_share_the_readme_environment():
    services = load()["services"]
    readme = (ROOT / "README.md").read_text()
    for name in (
        "api",
        "relay",
        "worker-files",
        "worker-maintenance",
        "worker-default",
        "beat",
        "flower",
        "console",
        "migrate",
    ):
        env = services[name]["environment"]
        for variable in ("DATABASE_URL", "REDIS_URL", "STORAGE_DIR"):
            assert variable in env, (name, variable)
        for variable in env:
            assert f"`{variable}`" in readme, f"{variable} is not documented in README.md"


def consumed_queues(command: list[str]) -> set[str]:
    return set(command[command.index("-Q") + 1].split(","))


def test_workers_consume_the_queues_the_app_routes_to():
    from worker.celery_app import QUEUES

    services = load()["services"]
    consumed = set()
    for name in ("worker-files", "worker-maintenance", "worker-default"):
        consumed |= consumed_queues(services[name]["command"])
    assert consumed == set(QUEUES)


def test_the_default_queue_never_waits_behind_maintenance():
    """messages.index and the heartbeat go to `default`: on the single
    maintenance process a long purge would hold them (and page on-call)."""
    services = load()["services"]
    assert consumed_queues(services["worker-maintenance"]["command"]) == {"maintenance"}
    assert consumed_queues(services["worker-default"]["command"]) == {"default"}
    procfile = dict(
        line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
    )
    assert consumed_queues(procfile["worker-maintenance"].split()) == {"maintenance"}
    assert consumed_queues(procfile["worker-default"].split()) == {"default"}


def test_image_creates_the_storage_directory_owned_by_the_app_user():
    """A fresh named volume copies the ownership of the image's directory:
    without it /data/storage is root-owned and every upload fails."""
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    creates = next(
        i for i, line in enumerate(lines) if "install -d -o veza -g veza /data/storage" in line
    )
    assert creates < lines.index("USER veza")


def test_image_installs_the_locked_versions():
    """The image takes its dependencies from the hash-checked runtime lock and
    installs the project on top without resolving anything (docs/dependencies.md)."""
    installs = [
        line for line in (ROOT / "Dockerfile").read_text().splitlines() if "pip install" in line
    ]
    assert any("--require-hashes -r requirements/lock.txt" in line for line in installs)
    assert all("--require-hashes" in line or "--no-deps" in line for line in installs), installs
