"""docker-compose.yml stays valid and complete (there is no Docker engine
here to run it, so its structure is what can be checked, and what
`docker-compose config` makes of it when that is installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
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


def compose_commands() -> list[list[str]]:
    """The compose front ends on this machine: Debian's docker-compose (v1)
    and the Docker CLI's plugin (v2)."""
    commands = []
    if shutil.which("docker-compose"):
        commands.append(["docker-compose"])
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0
    ):
        commands.append([docker, "compose"])
    return commands


def composed(command: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """`COMMAND config` as on a fresh checkout: no variable set, no .env."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    shutil.copy(ROOT / "docker-compose.yml", checkout)
    (checkout / "deploy").mkdir()
    return subprocess.run(
        [*command, "config"],
        cwd=checkout,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(params=compose_commands() or [None], ids=lambda c: " ".join(c or ["none"]))
def compose(request) -> list[str]:
    if request.param is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    return request.param


def test_compose_config_succeeds_on_a_fresh_checkout_with_no_variables_set(compose, tmp_path):
    """A login left unset refuses its own service, never the whole file."""
    result = composed(compose, tmp_path)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert services["flower"]["environment"]["FLOWER_BASIC_AUTH"] in ("", None)


def test_the_exporter_of_compose_refuses_to_start_without_its_login(compose, tmp_path):
    """Run as the container would run it (its command as compose resolves
    it; `config` prints `$` still escaped as `$$`): without
    METRICS_BASIC_AUTH it says what to set and exits."""
    exporter = yaml.safe_load(composed(compose, tmp_path).stdout)["services"]["exporter"]
    result = subprocess.run(
        [arg.replace("$$", "$") for arg in exporter["command"]],
        env={"PATH": "/usr/bin:/bin", "METRICS_BASIC_AUTH": ""},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "set METRICS_BASIC_AUTH=user:password" in result.stderr
