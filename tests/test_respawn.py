"""scripts/run's supervision: honcho stops every process as soon as one
exits, so each Procfile process runs under scripts/respawn, which starts it
again instead."""

from __future__ import annotations

import json
import os
import re
import signal
import sys

import pytest

from tests.conftest import ROOT, ManagedProcess, wait_for


def test_every_procfile_process_runs_under_respawn():
    lines = [line for line in (ROOT / "Procfile").read_text().splitlines() if line]
    assert lines
    assert all(line.split(": ", 1)[1].startswith("scripts/respawn ") for line in lines)


def starts(honcho: ManagedProcess, name: str) -> int:
    return honcho.output().count(f"| {name}-started\n")


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_a_process_that_dies_is_restarted_and_the_others_keep_running(tmp_path):
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        "dies: scripts/respawn sh -c 'echo dies-started; exit 3'\n"
        "steady: scripts/respawn sh -c 'echo steady-started; exec sleep 600'\n"
    )
    honcho = ManagedProcess(
        "honcho", [sys.executable, "-m", "honcho", "start", "-f", str(procfile), "-d", str(ROOT)]
    ).start()
    try:
        wait_for(
            lambda: starts(honcho, "dies") >= 3,
            timeout=30,
            what="the dying process to be started three times",
        )
        assert honcho.proc.poll() is None, honcho.output()
        assert starts(honcho, "steady") == 1, honcho.output()
        said = [line for line in honcho.output().splitlines() if "exited with status 3" in line]
        # A JSON line, as every process's (after honcho's prefix).
        assert json.loads(said[0].split(" | ", 1)[1])["message"].endswith(
            "exited with status 3; starting it again in 1s"
        )

        os.kill(honcho.proc.pid, signal.SIGTERM)  # what Ctrl-C on scripts/run does
        honcho.proc.wait(timeout=20)
        # Each process's group is gone: respawn restarted nothing it was told to stop.
        for group in map(int, re.findall(r"started \(pid=(\d+)\)", honcho.output())):
            wait_for(
                lambda group=group: not group_alive(group),
                timeout=10,
                what=f"process group {group} to end",
            )
        assert starts(honcho, "steady") == 1
    finally:
        honcho.stop()
