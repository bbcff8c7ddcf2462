"""scripts/run as a newcomer runs it: every process it starts logs one JSON
object per line, the API's access line names the request id its client got,
and Ctrl-C stops everything it started, the clamd it started included; with
STORAGE_BACKEND=s3 and no endpoint, it starts a SeaweedFS with the bucket,
hands its endpoint and key to the processes, and Ctrl-C stops it too.

It runs against this run's database, a redis-server of its own (so that its
workers never take the suite's tasks), its own ports, and a VEZA_VAR_DIR of
its own (the clamd and the SeaweedFS it starts, the logins it generates)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.conftest import ROOT, wait_for
from tests.gunicorn_helpers import get
from tests.processes import free_port, start_redis

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

# honcho's prefix on each line a process writes: "12:00:01 api.1 | ...".
HONCHO_LINE = re.compile(r"^\d\d:\d\d:\d\d (?P<process>[\w-]+)\.\d+\s*\| (?P<line>.*)$")
# Every process of the Procfile, by its name.
PROCESSES = {line.split(":", 1)[0] for line in (ROOT / "Procfile").read_text().splitlines() if line}


def process_lines(output: str) -> dict[str, list[str]]:
    """Each Procfile process's lines (honcho's own, "system", left out)."""
    lines: dict[str, list[str]] = {}
    for raw in output.splitlines():
        if (match := HONCHO_LINE.match(raw)) and match["process"] != "system":
            lines.setdefault(match["process"], []).append(match["line"])
    return lines


def descendants(pid: int) -> set[int]:
    """Every live process under `pid`, from /proc's parent links."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue  # gone meanwhile
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def answers(port: int, path: str) -> bool:
    try:
        return get(port, path).status == 200
    except OSError:
        return False


@pytest.fixture
def var_dir():
    # Short: clamd's socket path must fit in a unix socket address.
    path = Path(tempfile.mkdtemp(prefix="veza-run-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


# What a fresh machine has not set: scripts/run starts or generates each.
STARTED_BY_SCRIPTS_RUN = (
    "CLAMD_SOCKET",
    "CLAMD_HOST",
    "FLOWER_BASIC_AUTH",
    "CONSOLE_BASIC_AUTH",
    "STORAGE_BACKEND",
    "S3_ENDPOINT_URL",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
)


def run_environment(var_dir: Path, redis_port: int, api_port: int, flower_port: int) -> dict:
    env = {name: value for name, value in os.environ.items() if name not in STARTED_BY_SCRIPTS_RUN}
    env.update(
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        API_BIND=f"127.0.0.1:{api_port}",
        FLOWER_PORT=str(flower_port),
        METRICS_PORT=str(free_port()),
        CONSOLE_PORT=str(free_port()),
        VEZA_VAR_DIR=str(var_dir),
    )
    return env


def start_scripts_run(env: dict, log_path: Path) -> subprocess.Popen:
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [str(ROOT / "scripts" / "run")],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal's job
        )


def wait_for_exit(run: subprocess.Popen, log_path: Path, timeout: float = 90) -> None:
    """After Ctrl-C: scripts/run has exited, or the failure says what it was
    still doing (its log) and which of its processes were left."""
    try:
        run.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        tree = subprocess.run(
            ["ps", "-o", "pid,stat,etime,args", "--sid", str(run.pid)],  # its session
            capture_output=True,
            text=True,
        ).stdout
        raise AssertionError(
            f"scripts/run still running {timeout:.0f} s after Ctrl-C:\n{tree}\n{log_path.read_text()}"
        ) from None


def test_scripts_run_logs_json_lines_only_and_ctrl_c_stops_all_it_started(
    database_url, var_dir, tmp_path
):
    redis_port, api_port, flower_port = free_port(), free_port(), free_port()
    redis_server = start_redis(redis_port)
    env = run_environment(var_dir, redis_port, api_port, flower_port)
    log_path = tmp_path / "run.log"
    run = start_scripts_run(env, log_path)
    started: set[int] = set()
    clamd_pid = None
    try:

        def up() -> bool:
            if run.poll() is not None:
                raise AssertionError(f"scripts/run exited:\n{log_path.read_text()}")
            logged = set(process_lines(log_path.read_text()))
            return (
                logged == PROCESSES
                and answers(api_port, "/healthz")
                and answers(flower_port, "/healthcheck")
            )

        wait_for(up, timeout=180, interval=0.5, what="scripts/run's processes")
        request_id = str(uuid.uuid4())
        response = get(api_port, "/healthz", headers={"X-Request-ID": request_id})
        assert response.getheader("X-Request-ID") == request_id
        wait_for(lambda: request_id in log_path.read_text(), timeout=30, what="the access line")
        started = descendants(run.pid)
        clamd_pid = int((var_dir / "clamav" / "clamd.pid").read_text())
        assert alive(clamd_pid)
        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C
        wait_for_exit(run, log_path)
        # Read before the clean-up below, which stops whatever is left.
        left = sorted(pid for pid in started if alive(pid))
        clamd_left = alive(clamd_pid)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
        for pid in started | ({clamd_pid} if clamd_pid else set()):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        redis_server.stop()
    output = log_path.read_text()
    assert left == [], f"left running after Ctrl-C: {left}\n{output}"
    assert not clamd_left, "the clamd scripts/run started was left running"
    lines = process_lines(output)
    assert set(lines) == PROCESSES
    for process, logged in lines.items():
        for line in logged:
            try:
                record = json.loads(line)
            except ValueError:
                pytest.fail(f"{process} logged a line that is not JSON: {line!r}")
            assert isinstance(record, dict), (process, line)
            assert {"time", "level", "logger", "message", "request_id"} <= set(record), line
    access = [json.loads(line) for line in lines["api"] if request_id in line]
    assert [(r["logger"], r["path"], r["status"]) for r in access] == [
        ("gunicorn.access", "/healthz", 200)
    ]
    for process in PROCESSES:
        assert re.search(rf"system\s*\| {process}\.1 started", output), process


def weeds_of(var_dir: Path) -> list[int]:
    """The live weed processes whose data is under `var_dir`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # gone meanwhile
        if (
            argv[0].endswith(b"/weed")
            and f"-dir={var_dir}/".encode() in b" ".join(argv)
            and alive(int(entry.name))
        ):
            found.append(int(entry.name))
    return found


def environment_of(pid: int) -> dict[str, str]:
    pairs = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(pair.decode().split("=", 1) for pair in pairs if b"=" in pair)


def test_scripts_run_with_s3_storage_starts_a_seaweedfs_and_ctrl_c_stops_it(
    database_url, var_dir, tmp_path
):
    """STORAGE_BACKEND=s3 and no S3_ENDPOINT_URL: a weed on S3_LOCAL_PORT, the
    bucket made, its endpoint and generated key in the Procfile processes'
    environment; Ctrl-C leaves no weed, and none of the sockets it made in
    /tmp. Short: it stops as soon as the processes have started (the
    processes themselves are the test above's)."""
    redis_port, s3_port = free_port(), free_port()
    redis_server = start_redis(redis_port)
    env = run_environment(var_dir, redis_port, free_port(), free_port())
    # A clamd elsewhere (nothing listens there): scripts/run starts none,
    # and no process here needs one to start.
    env.update(
        STORAGE_BACKEND="s3",
        S3_LOCAL_PORT=str(s3_port),
        CLAMD_HOST="127.0.0.1",
        CLAMD_PORT=str(free_port()),
    )
    log_path = tmp_path / "run.log"
    run = start_scripts_run(env, log_path)
    weeds: list[int] = []
    try:

        def all_started() -> dict[str, int] | None:
            """honcho's pid of each process, once it has started them all: a
            Ctrl-C while it still starts some is not this test's subject."""
            if run.poll() is not None:
                raise AssertionError(f"scripts/run exited:\n{log_path.read_text()}")
            found = re.findall(
                r"system\s*\| ([\w-]+)\.1 started \(pid=(\d+)\)", log_path.read_text()
            )
            pids = {process: int(pid) for process, pid in found}
            return pids if set(pids) == PROCESSES else None

        api_pid = wait_for(all_started, timeout=180, interval=0.5, what="the processes")["api"]
        weeds = weeds_of(var_dir)
        assert len(weeds) == 1, weeds
        key, secret = (var_dir / "s3-credentials").read_text().strip().split(":", 1)
        endpoint = f"http://127.0.0.1:{s3_port}"
        processes_see = environment_of(api_pid)
        assert processes_see["S3_ENDPOINT_URL"] == endpoint
        assert (processes_see["S3_ACCESS_KEY_ID"], processes_see["S3_SECRET_ACCESS_KEY"]) == (
            key,
            secret,
        )
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )
        assert "veza" in {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}
        s3.put_object(Bucket="veza", Key="probe", Body=b"answers")
        assert s3.get_object(Bucket="veza", Key="probe")["Body"].read() == b"answers"
        grpc_sockets = [
            Path(f"/tmp/seaweedfs-{server}-grpc-{port}.sock")
            for port in (var_dir / "seaweedfs" / "ports").read_text().split()
            for server in ("master", "volume", "filer", "s3")
        ]
        assert any(socket.exists() for socket in grpc_sockets)
        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C
        wait_for_exit(run, log_path)
        left = weeds_of(var_dir)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
        for pid in weeds_of(var_dir):
            os.kill(pid, signal.SIGKILL)
        redis_server.stop()
    output = log_path.read_text()
    assert left == [], f"the SeaweedFS scripts/run started was left running:\n{output}"
    assert "stopping SeaweedFS" in output
    assert [str(socket) for socket in grpc_sockets if socket.exists()] == []


def processes_of(var_dir: Path) -> list[int]:
    """The live processes started with VEZA_VAR_DIR=`var_dir`: all that a
    scripts/run with that directory started, whatever their session."""
    wanted = f"VEZA_VAR_DIR={var_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            environment = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue  # not a process, or gone meanwhile
        if wanted in environment and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def test_ctrl_c_while_scripts_run_still_starts_its_processes_stops_every_one(
    database_url, var_dir, tmp_path
):
    """A Ctrl-C as soon as honcho reports its first process: some are not
    started yet. Each runs in a session of its own, so the signal reaches
    them only through honcho, which must stop every one, those it starts
    after the signal too, and exit."""
    redis_port = free_port()
    redis_server = start_redis(redis_port)
    env = run_environment(var_dir, redis_port, free_port(), free_port())
    env.update(CLAMD_HOST="127.0.0.1", CLAMD_PORT=str(free_port()))  # none started
    log_path = tmp_path / "run.log"
    run = start_scripts_run(env, log_path)
    try:
        wait_for(
            lambda: " started (pid=" in log_path.read_text(),
            timeout=180,
            interval=0.01,
            what="honcho's first process",
        )
        os.killpg(run.pid, signal.SIGINT)  # Ctrl-C
        wait_for_exit(run, log_path)
        left = processes_of(var_dir)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
        for pid in processes_of(var_dir):
            os.kill(pid, signal.SIGKILL)
        redis_server.stop()
    output = log_path.read_text()
    assert left == [], f"left running after Ctrl-C: {left}\n{output}"
    assert set(re.findall(r"system\s*\| ([\w-]+)\.1 started", output)) == PROCESSES
