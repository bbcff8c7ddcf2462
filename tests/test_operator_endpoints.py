"""The operator endpoints behind credentials: the exporter (METRICS_ADDRESS,
METRICS_BASIC_AUTH) and Flower (FLOWER_BASIC_AUTH, its /metrics), as real
processes answering real HTTP requests."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, ManagedProcess, wait_for
from tests.processes import flower_argv, free_port, status, veza

LOGIN = "prom:s3cret-scrape"


def test_exporter_with_basic_auth_refuses_scrapes_without_it(redis_client):
    port = free_port()
    exporter = ManagedProcess(
        "exporter-auth",
        [sys.executable, "-m", "worker.cli", "exporter", "--port", str(port)],
        env={"METRICS_BASIC_AUTH": LOGIN},
    ).start()
    try:
        wait_for(lambda: status(port, "/metrics") == 401, what="exporter to answer 401")
        assert status(port, "/metrics", "prom:wrong") == 401
        assert status(port, "/metrics", LOGIN) == 200
    finally:
        exporter.stop()
    assert "basic auth: True" in exporter.output()


def test_exporter_listens_on_loopback_by_default():
    from veza.settings import Settings

    assert Settings().metrics_address == "127.0.0.1"


@pytest.mark.parametrize("login", [":", "prom:", ":password"])
def test_exporter_refuses_empty_credentials_at_start(login):
    result = veza("exporter", "--port", str(free_port()), timeout=30, METRICS_BASIC_AUTH=login)
    assert result.returncode != 0
    assert "METRICS_BASIC_AUTH must be user:password" in result.stderr


@pytest.mark.parametrize("login", [":", "admin:", ":password", "admin:ok,:"])
def test_flower_refuses_empty_credentials_at_start(login):
    result = subprocess.run(
        flower_argv(free_port()),
        cwd=ROOT,
        env={**os.environ, "FLOWER_BASIC_AUTH": login},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "FLOWER_BASIC_AUTH must be user:password" in result.stderr + result.stdout


def test_flower_metrics_need_the_basic_auth_login(redis_client):
    port = free_port()
    server = ManagedProcess(
        "flower", flower_argv(port), env={"FLOWER_BASIC_AUTH": LOGIN, "FLOWER_PORT": str(port)}
    ).start()
    try:
        wait_for(lambda: status(port, "/healthcheck") == 200, what="flower to answer")
        assert status(port, "/metrics") == 401
        assert status(port, "/metrics", "prom:wrong") == 401
        assert status(port, "/metrics", LOGIN) == 200
        assert status(port, "/", LOGIN) == 200
    finally:
        server.stop()
