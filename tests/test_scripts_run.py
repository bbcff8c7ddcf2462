"""scripts/run as a newcomer runs it: every process it starts logs one JSON
object per line, the API's access line names the request id its client got,
and Ctrl-C stops everything it started, the clamd it started included.

It runs against this run's database, a redis-server of its own (so that its
workers never take the suite's tasks), its own ports, and a VEZA_VAR_DIR of
its own (the clamd it starts, the Flower login it generates)."""

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

import pytest

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


def test_scripts_run_logs_json_lines_only_and_ctrl_c_stops_all_it_started(
    database_url, var_dir, tmp_path
):
    redis_port, api_port, flower_port = free_port(), free_port(), free_port()
    redis_server = start_redis(redis_port)
    env = {
        name: value
        for name, value in os.environ.items()
        # A clamd and a Flower login of its own, as on a fresh machine.
        if name not in ("CLAMD_SOCKET", "CLAMD_HOST", "FLOWER_BASIC_AUTH")
    }
    env.update(
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        API_BIND=f"127.0.0.1:{api_port}",
        FLOWER_PORT=str(flower_port),
        METRICS_PORT=str(free_port()),
        VEZA_VAR_DIR=str(var_dir),
    )
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        run = subprocess.Popen(
            [str(ROOT / "scripts" / "run")],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal's job
        )
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
        run.wait(timeout=90)
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
