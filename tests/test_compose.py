"""docker-compose.yml stays valid and complete (there is no Docker engine
here to run it, so its structure is what can be checked, and what
`docker-compose config` makes of it when that is installed), with and
without the s3 profile (the seaweedfs service and the bucket it needs)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


APP_SERVICES = (
    "api",
    "relay",
    "worker-files",
    "worker-maintenance",
    "worker-default",
    "beat",
    "flower",
    "exporter",
    "console",
    "migrate",
)


def load() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_defines_every_part_of_the_system_with_healthchecks():
    services = load()["services"]
    # migrate is a one-shot: it has nothing to be healthy about.
    expected = {"postgres", "redis", "clamav", *APP_SERVICES} - {"migrate"}
    assert expected <= set(services)
    for name in expected:
        assert "healthcheck" in services[name], name
        assert services[name]["healthcheck"]["test"], name


# The blob storage's variables (veza/settings.py), each with its default
# when unset: every app service takes them from compose's environment.
S3_VARIABLES = {
    "STORAGE_BACKEND": "local",
    "S3_ENDPOINT_URL": "",
    "S3_BUCKET": "veza",
    "S3_REGION": "us-east-1",
    "S3_ACCESS_KEY_ID": "",
    "S3_SECRET_ACCESS_KEY": "",
    "S3_PREFIX": "",
    "S3_ADDRESSING_STYLE": "path",
    "S3_SERVE": "stream",
    "S3_PRESIGN_SECONDS": "60",
}


def test_app_services_share_the_readme_environment():
    services = load()["services"]
    readme = (ROOT / "README.md").read_text()
    for name in APP_SERVICES:
        env = services[name]["environment"]
        for variable in ("DATABASE_URL", "REDIS_URL", "STORAGE_DIR", *S3_VARIABLES):
            assert variable in env, (name, variable)
        for variable in env:
            assert f"`{variable}`" in readme, f"{variable} is not documented in README.md"
        for variable, default in S3_VARIABLES.items():
            assert env[variable] == f"${{{variable}:-{default}}}", (name, variable)


def test_the_s3_profile_runs_a_seaweedfs_and_makes_the_bucket():
    """`--profile s3` adds a SeaweedFS (a volume, a healthcheck) and a
    one-shot that makes the bucket once it is healthy; without the profile
    neither runs, so nothing outside the profile may depend on them."""
    compose = load()
    services = compose["services"]
    seaweedfs = services["seaweedfs"]
    assert seaweedfs["profiles"] == ["s3"]
    assert seaweedfs["image"].split(":")[0] == "chrislusf/seaweedfs"
    assert seaweedfs["healthcheck"]["test"]
    [volume] = seaweedfs["volumes"]
    assert volume.split(":")[0] in compose["volumes"]
    script = seaweedfs["entrypoint"][-1]
    assert "server" in script
    assert "-s3 -s3.port=8333" in script
    assert "-master.telemetry=false" in script
    assert seaweedfs["environment"] == {
        "AWS_ACCESS_KEY_ID": "${S3_ACCESS_KEY_ID:-}",
        "AWS_SECRET_ACCESS_KEY": "${S3_SECRET_ACCESS_KEY:-}",
    }
    bucket = services["s3-bucket"]
    assert bucket["profiles"] == ["s3"]
    assert bucket["depends_on"] == {"seaweedfs": {"condition": "service_healthy"}}
    assert bucket["environment"]["S3_ENDPOINT_URL"] == "${S3_ENDPOINT_URL:-http://seaweedfs:8333}"
    assert bucket["restart"] == "no"
    in_the_profile = {name for name, service in services.items() if service.get("profiles")}
    assert in_the_profile == {"seaweedfs", "s3-bucket"}
    for name, service in services.items():
        if name not in in_the_profile:
            assert not set(service.get("depends_on", {})) & in_the_profile, name


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


def composed(
    command: list[str],
    tmp_path: Path,
    *options: str,
    variables: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """`COMMAND [OPTIONS] config` as on a fresh checkout: no .env, and no
    variable set but `variables`."""
    checkout = tmp_path / "checkout"
    checkout.mkdir(exist_ok=True)
    shutil.copy(ROOT / "docker-compose.yml", checkout)
    (checkout / "deploy").mkdir(exist_ok=True)
    return subprocess.run(
        [*command, *options, "config"],
        cwd=checkout,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), **(variables or {})},
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


def test_compose_config_with_the_s3_profile_and_nothing_set(compose, tmp_path):
    """The profile resolves with no variable set: the app keeps local
    storage, and seaweedfs has no key (so it refuses to start, below)."""
    result = composed(compose, tmp_path, "--profile", "s3")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {"seaweedfs", "s3-bucket"} <= set(services)
    for name in APP_SERVICES:
        env = services[name]["environment"]
        assert {variable: str(env[variable] or "") for variable in S3_VARIABLES} == S3_VARIABLES
    assert services["s3-bucket"]["environment"]["S3_ENDPOINT_URL"] == "http://seaweedfs:8333"
    assert services["seaweedfs"]["environment"]["AWS_ACCESS_KEY_ID"] in ("", None)


def test_compose_config_with_the_s3_profile_as_readme_says(compose, tmp_path):
    """README's command line: every app service and the bucket's one-shot
    get the endpoint and key, and seaweedfs the same key."""
    variables = {
        "STORAGE_BACKEND": "s3",
        "S3_ENDPOINT_URL": "http://seaweedfs:8333",
        "S3_ACCESS_KEY_ID": "veza",
        "S3_SECRET_ACCESS_KEY": "a-long-secret",
    }
    result = composed(compose, tmp_path, "--profile", "s3", variables=variables)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in (*APP_SERVICES, "s3-bucket"):
        env = services[name]["environment"]
        assert {variable: env[variable] for variable in variables} == variables, name
        assert env["S3_BUCKET"] == "veza", name
    assert services["seaweedfs"]["environment"] == {
        "AWS_ACCESS_KEY_ID": "veza",
        "AWS_SECRET_ACCESS_KEY": "a-long-secret",
    }


def test_the_seaweedfs_of_compose_refuses_to_start_without_its_key(compose, tmp_path):
    """Run as the container would start it (its entrypoint as compose
    resolves it): without a key it says which variables to set and exits,
    instead of serving the bucket to anyone on the network."""
    result = composed(compose, tmp_path, "--profile", "s3")
    seaweedfs = yaml.safe_load(result.stdout)["services"]["seaweedfs"]
    for key, secret in (("", ""), ("veza", ""), ("", "a-long-secret")):
        started = subprocess.run(
            [arg.replace("$$", "$") for arg in seaweedfs["entrypoint"]],
            env={
                "PATH": "/usr/bin:/bin",
                "AWS_ACCESS_KEY_ID": key,
                "AWS_SECRET_ACCESS_KEY": secret,
            },
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert started.returncode == 1, (key, secret)
        assert "set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY" in started.stderr
