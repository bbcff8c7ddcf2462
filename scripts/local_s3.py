"""What scripts/seaweedfs.sh needs done in Python, with the venv's python
(boto3 comes from the lock):

    python scripts/local_s3.py ports FILE N
        prints N TCP ports free on 127.0.0.1, one per line: FILE's, when it
        holds N ports that are all free now, else new ones, written to FILE
        (so that the weed keeps its ports from one start to the next)
    python scripts/local_s3.py identity FILE   < KEY and SECRET, one a line
        writes FILE, the -s3.config of a weed with one identity allowed
        everything, readable by its owner only
    python scripts/local_s3.py bucket PID ENDPOINT BUCKET REGION SECONDS   < KEY and SECRET
        waits until the S3 API at ENDPOINT lists buckets with that key
        (while process PID lives, up to SECONDS), then makes BUCKET unless
        it exists; exits 1 saying why when it cannot

The key and secret come on standard input, never in argv (which `ps`
shows to every user)."""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

# What the one identity may do: everything, in its own store.
ACTIONS = ["Admin", "Read", "Write", "List", "Tagging"]


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def ports(file: Path, count: int) -> list[int]:
    try:
        kept = [int(word) for word in file.read_text().split()]
    except (OSError, ValueError):
        kept = []
    if len(kept) == count and len(set(kept)) == count and all(map(port_is_free, kept)):
        return kept
    # Bound all at once, so that the kernel hands out distinct ports.
    probes = [socket.socket() for _ in range(count)]
    try:
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        chosen = [probe.getsockname()[1] for probe in probes]
    finally:
        for probe in probes:
            probe.close()
    file.write_text("".join(f"{port}\n" for port in chosen))
    return chosen


def key_and_secret() -> tuple[str, str]:
    lines = sys.stdin.read().splitlines()
    if len(lines) < 2 or not lines[0] or not lines[1]:
        sys.exit("local_s3.py: expected the key and the secret on standard input, one a line")
    return lines[0], lines[1]


def identity(file: Path) -> None:
    key, secret = key_and_secret()
    config = {
        "identities": [
            {
                "name": "veza",
                "credentials": [{"accessKey": key, "secretKey": secret}],
                "actions": ACTIONS,
            }
        ]
    }
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(config, out)
    file.chmod(0o600)  # an older file keeps its mode through O_CREAT


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as exc:
        return exc.errno == errno.EPERM
    return True


def bucket(pid: int, endpoint: str, name: str, region: str, seconds: float) -> None:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    key, secret = key_and_secret()
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            connect_timeout=2,
            read_timeout=5,
        ),
    )
    deadline = time.monotonic() + seconds
    while True:
        try:
            existing = {entry["Name"] for entry in client.list_buckets().get("Buckets", [])}
            break
        except (BotoCoreError, ClientError) as exc:
            if not alive(pid):
                sys.exit(f"local_s3.py: the weed (pid {pid}) exited before answering")
            if time.monotonic() > deadline:
                sys.exit(f"local_s3.py: no S3 answer at {endpoint} after {seconds:g} s: {exc}")
        time.sleep(0.25)
    if name in existing:
        return
    try:
        client.create_bucket(Bucket=name)
    except ClientError as exc:
        # Another start made it meanwhile.
        if exc.response.get("Error", {}).get("Code") not in (
            "BucketAlreadyOwnedByYou",
            "BucketAlreadyExists",
        ):
            raise


def main(argv: list[str]) -> None:
    match argv:
        case ["ports", file, count]:
            print("\n".join(map(str, ports(Path(file), int(count)))))
        case ["identity", file]:
            identity(Path(file))
        case ["bucket", pid, endpoint, name, region, seconds]:
            bucket(int(pid), endpoint, name, region, float(seconds))
        case _:
            sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
