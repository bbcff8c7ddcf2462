"""Workers on machines with no shared disk: two real Celery workers, each
with a private STORAGE_DIR of its own (standing for two machines), against
one bucket on a real SeaweedFS and one broker. The API (this process) has a
third. Uploads go through the outbox and the relay to whichever worker
takes them; the scan queue is on the second machine only, so every upload's
bytes cross from one machine to the other through the bucket."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import start_worker, wait_for
from tests.seaweedfs import bucket_keys
from tests.uploads import encoded, gradient


def files_written(directory: Path) -> list[Path]:
    return [path for path in directory.rglob("*") if path.is_file()]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_workers_without_a_shared_disk_complete_deduplicate_and_serve_every_upload(
    api, db, s3_storage, seaweedfs, clamd_server, relay
):
    machines = [Path(tempfile.mkdtemp(prefix=f"veza-machine-{n}-")) for n in "ab"]
    images = [encoded(gradient(320 + 16 * n, 200), "PNG") for n in range(4)]
    texts = [f"minutes of meeting {n}\n".encode() for n in range(4)]
    contents = images + texts + images[:2] + texts[:2]  # four uploaded twice
    alice = api.register()
    room = api.room(alice)
    # What a step killed on machine a before left there, hours ago.
    debris = machines[0] / "tmp" / "killed-step-copy"
    debris.parent.mkdir()
    debris.write_bytes(b"half a copy")
    os.utime(debris, (time.time() - 7200, time.time() - 7200))
    workers = [
        start_worker("machine-a", queues="files", env={"STORAGE_DIR": str(machines[0])}),
        start_worker("machine-b", queues="files,scan", env={"STORAGE_DIR": str(machines[1])}),
    ]
    try:
        uploaded = []
        for n, content in enumerate(contents):
            response = api.post(
                f"/rooms/{room}/files",
                alice,
                content_type="multipart/form-data",
                data={"file": (io.BytesIO(content), f"f{n}.bin", "application/octet-stream")},
            )
            assert response.status_code == 202, response.json
            uploaded.append(response.json)

        def statuses() -> set[str]:
            rows = db.execute("SELECT processing_status FROM files").fetchall()
            return {status for (status,) in rows}

        wait_for(lambda: statuses() == {"completed"}, timeout=180, what="every file to complete")
    finally:
        for worker in workers:
            worker.stop()
    logs = [worker.output() for worker in workers]

    for file, content in zip(uploaded, contents, strict=True):
        response = api.get(f"/files/{file['uuid']}/content", alice)
        assert response.status_code == 200
        assert response.data == content
    for file in uploaded[: len(images)]:
        assert api.get(f"/files/{file['uuid']}/thumbnail", alice).status_code == 200

    distinct = {hashlib.sha256(content).hexdigest() for content in contents}
    keys = bucket_keys(seaweedfs, s3_storage.prefix)
    assert {key.rsplit("/", 1)[1] for key in keys if key.startswith("blobs/")} == distinct
    assert len([key for key in keys if key.startswith("blobs/")]) == len(distinct)
    assert not [key for key in keys if key.startswith("uploads/")]
    assert len([key for key in keys if key.startswith("thumbs/")]) == len(images)

    # Every scan ran on machine b, so it read what machine a (or b) stored;
    # machine a did its share of the rest.
    assert sum("scan: clean" in line for line in logs[1].splitlines()) >= len(distinct)
    assert "scan:" not in logs[0]
    assert "hash:" in logs[0] or "thumbnail:" in logs[0]
    assert not debris.exists()  # cleared when machine a's worker started
    # Nothing but scratch space was written: each step took its copy with
    # it, and what is left is the bounded cache of what the machine fetched.
    for machine in machines:
        cache = machine / "tmp" / "cache"
        assert [path for path in files_written(machine) if cache not in path.parents] == []
        assert {path.name for path in machine.iterdir()} <= {"tmp"}
        shutil.rmtree(machine)
