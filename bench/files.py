"""File pipeline benchmark: each stage beside its baseline, in one run, on
the same files.

    python3 bench/files.py [--files N]
    python3 bench/files.py --storage s3 [--files N]

Sets up what the test suite uses: a throwaway migrated PostgreSQL database,
a temporary storage directory, its own clamd (one EICAR signature), and for
the end-to-end row real Celery workers. Redis: VEZA_TEST_REDIS_DB (default 12).

Rows (ratio = ours / baseline, goal in brackets):
  hash        MB/s of file_steps' hashing vs `openssl dgst -sha256`    [>= 0.9]
  scan        seconds of our clamd scan vs clamd's own SCAN            [<= 1.3]
  scan-tcp    our 1 MiB INSTREAM vs the clamd package's instream (1 KiB chunks), for information
  rend-jpeg   renditions (400 and 1,280 px, PDQ, placeholder) of a 12 MP JPEG,
              in-process, vs `vipsthumbnail` run once per size              [<= 1.0]
  rend-png    12 MP PNG, same                                          [<= 1.5]
  anim-gif    100-frame 480x270 GIF: animated WebP and still vs
              `vipsthumbnail 'in.gif[n=-1]'`                           [<= 1.5]
  rend-heic   12 MP HEIC (pillow-heif), vs vipsthumbnail (libheif)     [information]
  placeholder the BlurHash and dominant colour, as a share of rend-jpeg [<= 5 %]
  (each rendition row also prints the peak memory it adds to a worker)
  end-to-end  files/s through workers vs the same steps in one loop    [>= 0.8]
With --storage s3 (a local SeaweedFS, as the tests start it), instead:
  e2e-s3      files/s through workers, blobs in the bucket vs on local disk   [>= 0.75]
  upload-p50/p99  an API upload (200 KB) into the bucket vs onto local disk, for information
  upload-rss  RSS growth while a 100 MB upload is stored in the bucket vs on disk [< 16 MiB]
Timings are the best of a few runs (page cache warm for both sides).
The last line is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VEZA_TEST_REDIS_DB", "12")

from tests import conftest  # noqa: E402  (database, Redis and storage environment)
from tests.clamav import Clamd  # noqa: E402  (CLAMD_SOCKET)

REPEATS = 3
HASH_FILE_BYTES = 100 * 1000 * 1000
PHOTO_SIZE = (4000, 3000)  # 12 MP


def best_time(action, repeats: int = REPEATS) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return min(timings)


def run(argv: list[str]) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def peak_rss_mib(argv: list[str]) -> float:
    """Peak RSS of a whole process, by GNU time: its own small process forks
    the command, so the figure is not inflated by ours (Linux carries a
    parent's peak RSS across fork + exec into the child's rusage)."""
    result = subprocess.run(
        ["/usr/bin/time", "-f", "%M", *argv], check=True, capture_output=True, text=True
    )
    return int(result.stderr.strip().splitlines()[-1]) / 1024


def row(name: str, ours: float, baseline: float, unit: str, goal: str) -> float:
    ratio = ours / baseline
    print(
        f"{name:<11} ours {ours:10.3f} {unit:<8} baseline {baseline:10.3f} {unit:<8} "
        f"ratio {ratio:5.2f}  (goal {goal})"
    )
    return ratio


def make_photo() -> Image.Image:
    """Photo-like content: smooth gradients plus grain, so JPEG and PNG
    sizes are realistic (neither flat colour nor pure noise)."""
    from PIL import Image

    width, height = PHOTO_SIZE
    grain = Image.effect_noise((width // 4, height // 4), 40).resize(PHOTO_SIZE)
    horizontal = Image.linear_gradient("L").resize(PHOTO_SIZE)
    vertical = Image.linear_gradient("L").rotate(90).resize(PHOTO_SIZE)
    return Image.merge("RGB", (horizontal, vertical, grain))


def bench_hash(path: Path) -> dict:
    from veza.files import pipeline  # noqa: F401  (the same import cost as a worker)

    def ours():
        with open(path, "rb") as content:
            hashlib.file_digest(content, "sha256")

    megabytes = path.stat().st_size / 1e6
    ours_rate = megabytes / best_time(ours)
    openssl_rate = megabytes / best_time(lambda: run(["openssl", "dgst", "-sha256", str(path)]))
    return {
        "hash_mb_s": ours_rate,
        "openssl_mb_s": openssl_rate,
        "hash_ratio": row("hash", ours_rate, openssl_rate, "MB/s", ">= 0.9"),
    }


def bench_scan(path: Path) -> dict:
    import clamd

    from tests.clamav import TCP_PORT
    from veza.clamav import Scanner
    from veza.settings import get_settings

    scanner = Scanner()
    ours = best_time(lambda: scanner.scan(path))
    native = clamd.ClamdUnixSocket(get_settings().clamd_socket, timeout=120)
    baseline = best_time(lambda: native.scan(str(path)))
    figures = {
        "scan_s": ours,
        "clamd_scan_s": baseline,
        "scan_ratio": row("scan", ours, baseline, "s", "<= 1.3"),
    }

    # clamd elsewhere: our 1 MiB INSTREAM against the package's own (1 KiB).
    streamed = Scanner(socket_path=None, host="127.0.0.1", port=TCP_PORT)
    package = clamd.ClamdNetworkSocket("127.0.0.1", TCP_PORT, timeout=120)

    def package_instream():
        with open(path, "rb") as content:
            package.instream(content)

    ours_tcp = best_time(lambda: streamed.scan(path), repeats=2)
    package_tcp = best_time(package_instream, repeats=2)
    figures |= {
        "scan_tcp_s": ours_tcp,
        "package_instream_s": package_tcp,
        "scan_tcp_ratio": row("scan-tcp", ours_tcp, package_tcp, "s", "none, for information"),
    }
    return figures


# Peak memory the renditions step's work adds to a worker process: VmHWM
# (reset at exec, unlike ru_maxrss) before and after.
RENDITIONS_PEAK_PROBE = """
import sys
from pathlib import Path
from veza.media import renditions
def high_water_kib():
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0])
before = high_water_kib()
renditions.render(Path(sys.argv[1]), sys.argv[2], (400, 1280))
print(before, high_water_kib())
"""


def vips_renditions(path: Path, out_dir: Path, sizes: tuple[int, ...], frames: str = "") -> list:
    """vipsthumbnail once per size, as whole processes: the baseline."""
    return [
        [
            "vipsthumbnail",
            f"{path}{frames}",
            "--size",
            f"{size}x{size}>",
            "-o",
            str(out_dir / f"%s-{size}.webp[Q=80]"),
        ]
        for size in sizes
    ]


def bench_renditions(
    name: str,
    path: Path,
    mime: str,
    goal: str,
    limit: float | None,
    vips_sizes=(400, 1280),
    frames: str = "",
) -> dict:
    """The renditions step's work on one file (decode, every size, PDQ,
    placeholder; in-process) beside vipsthumbnail making the same sizes."""
    from veza.media import renditions

    out_dir = Path(tempfile.mkdtemp(prefix="veza-bench-vips-"))
    commands = vips_renditions(path, out_dir, vips_sizes, frames)
    ours = best_time(lambda: renditions.render(path, mime, (400, 1280)))
    vips_time = best_time(lambda: [run(command) for command in commands])
    vips_peak = max(peak_rss_mib(command) for command in commands)
    probe = subprocess.run(
        [sys.executable, "-c", RENDITIONS_PEAK_PROBE, str(path), mime],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    before_kib, after_kib = map(int, probe.stdout.split())
    ours_peak = (after_kib - before_kib) / 1024
    shutil.rmtree(out_dir)
    ratio = row(name, ours, vips_time, "s", goal)
    print(
        f"{'':<11} peak memory: ours +{ours_peak:.1f} MiB over a worker's "
        f"{before_kib / 1024:.1f} MiB, vipsthumbnail {vips_peak:.1f} MiB whole process"
    )
    key = name.replace("-", "_")
    return {
        f"{key}_s": ours,
        f"{key}_vips_s": vips_time,
        f"{key}_ratio": ratio,
        f"{key}_peak_mib": ours_peak,
        f"{key}_vips_peak_mib": vips_peak,
        **({f"{key}_within_goal": ratio <= limit} if limit is not None else {}),
    }


def bench_placeholder(path: Path) -> dict:
    """The placeholder's share of the renditions step on the 12 MP JPEG."""
    from veza.media import renditions
    from veza.media.placeholder import placeholder

    rendered = renditions.render(path, "image/jpeg", (400, 1280))
    from PIL import Image

    smallest = Image.open(io.BytesIO(rendered.renditions[0].data)).convert("RGB")
    whole = best_time(lambda: renditions.render(path, "image/jpeg", (400, 1280)))
    ours = best_time(lambda: placeholder(smallest), repeats=20)
    share = ours / whole
    print(
        f"{'placeholder':<11} {ours * 1000:.2f} ms of the step's {whole * 1000:.0f} ms:"
        f" {share:.1%}  (goal <= 5 %)"
    )
    return {
        "placeholder_s": ours,
        "placeholder_share": share,
        "placeholder_within_goal": share <= 0.05,
    }


def sample_gif(path: Path, frames: int = 100, size: tuple[int, int] = (480, 270)) -> None:
    """A 100-frame 480x270 GIF: moving shapes over a gradient, 40 ms frames."""
    from PIL import Image, ImageDraw

    width, height = size
    background = Image.linear_gradient("L").resize(size).convert("RGB")
    images = []
    for i in range(frames):
        frame = background.copy()
        draw = ImageDraw.Draw(frame)
        x = (i * 7) % width
        draw.ellipse((x - 40, 60, x + 40, 140), fill=(220, 40, 40))
        draw.rectangle((0, height - 60 + (i % 30), width // 2, height), fill=(30, 90, 200))
        draw.text((10, 10), f"frame {i}", fill=(255, 255, 0))
        images.append(frame.quantize(64))
    images[0].save(path, save_all=True, append_images=images[1:], duration=40, loop=0)


def make_uploads(db, user: int, count: int, seed: int) -> list[int]:
    """A mixed batch: JPEG photos, PNG screenshots, text; all distinct."""
    from PIL import Image

    from tests.uploads import encoded, upload

    file_ids = []
    for i in range(count):
        unique = f"{seed}-{i}".encode()
        kind = i % 3
        if kind == 0:
            photo = Image.effect_noise((1600, 1200), 30 + i % 20).convert("RGB")
            content = encoded(photo, "JPEG", quality=85) + unique  # bytes after EOI
            file_ids.append(upload(db, user, content, f"photo{i}.jpg", "image/jpeg"))
        elif kind == 1:
            shot = Image.linear_gradient("L").resize((1280, 800)).convert("RGB")
            shot.putpixel((i, seed), (i % 256, seed % 256, 7))
            file_ids.append(upload(db, user, encoded(shot, "PNG"), f"shot{i}.png", "image/png"))
        else:
            content = b"minutes of the meeting\n" * 2000 + unique
            file_ids.append(upload(db, user, content, f"notes{i}.txt", "text/plain"))
    return file_ids


def through_workers(db, file_ids: list[int]) -> float:
    """Files/s from handing the ids to the workers to every file done."""
    from worker import app

    started = time.perf_counter()
    for file_id in file_ids:
        app.send_task("files.process", args=[file_id])
    conftest.wait_for(
        lambda: (
            db.execute(
                "SELECT count(*) FROM files WHERE id = ANY(%s) AND is_processed", (file_ids,)
            ).fetchone()[0]
            == len(file_ids)
        ),
        timeout=600,
        interval=0.05,
        what="the workers to process every file",
    )
    return len(file_ids) / (time.perf_counter() - started)


def bench_end_to_end(db, count: int, rounds: int = 3) -> dict:
    """Rounds alternate between the loop and the workers, on fresh uploads
    each time, and the best round of each counts: the machine is shared, and
    alternating keeps a burst of someone else's load from landing on one
    side only."""
    from tests.factories import make_user
    from veza.files import pipeline

    user = make_user(db)
    worker = conftest.start_worker("bench-files", queues="files,scan")
    loop_rates, worker_rates = [], []
    try:
        for round_number in range(rounds):
            loop_ids = make_uploads(db, user, count, seed=2 * round_number)
            started = time.perf_counter()
            for file_id in loop_ids:
                pipeline.run_all(file_id)
            loop_rates.append(count / (time.perf_counter() - started))

            worker_ids = make_uploads(db, user, count, seed=2 * round_number + 1)
            worker_rates.append(through_workers(db, worker_ids))
    finally:
        worker.stop()
    statuses = db.execute("SELECT processing_status::text, count(*) FROM files GROUP BY 1")
    assert dict(statuses.fetchall()) == {"completed": 2 * count * rounds}
    worker_rate, loop_rate = max(worker_rates), max(loop_rates)
    print(
        f"{'':<11} rounds, files/s: workers {[round(r, 1) for r in worker_rates]}, "
        f"loop {[round(r, 1) for r in loop_rates]}"
    )
    return {
        "e2e_files_s": worker_rate,
        "loop_files_s": loop_rate,
        "e2e_ratio": row("end-to-end", worker_rate, loop_rate, "files/s", ">= 0.8"),
    }


def use_storage(variables: dict[str, str]) -> None:
    """This process's settings, and the workers it starts, on a store."""
    from veza.settings import reload_settings

    for name in (
        "STORAGE_BACKEND",
        "S3_ENDPOINT_URL",
        "S3_BUCKET",
        "S3_ACCESS_KEY_ID",
        "S3_SECRET_ACCESS_KEY",
        "S3_PREFIX",
    ):
        os.environ.pop(name, None)
    os.environ.update(variables)
    reload_settings()


def bench_s3_end_to_end(db, count: int, s3: dict[str, str], rounds: int = 3) -> dict:
    """Rounds alternate between the stores, each with a worker of its own
    on fresh uploads of the same mix, and the best round of each counts."""
    from tests.factories import make_user

    user = make_user(db)
    rates: dict[str, list[float]] = {"local": [], "s3": []}
    for round_number in range(rounds):
        for n, (name, variables) in enumerate((("local", {}), ("s3", s3))):
            use_storage(variables)
            worker = conftest.start_worker(f"bench-{name}", queues="files,scan")
            try:
                file_ids = make_uploads(db, user, count, seed=100 + 2 * round_number + n)
                rates[name].append(through_workers(db, file_ids))
            finally:
                worker.stop()
    use_storage({})
    print(
        f"{'':<11} rounds, files/s: s3 {[round(r, 1) for r in rates['s3']]}, "
        f"local {[round(r, 1) for r in rates['local']]}"
    )
    s3_rate, local_rate = max(rates["s3"]), max(rates["local"])
    return {
        "e2e_s3_files_s": s3_rate,
        "e2e_local_files_s": local_rate,
        "e2e_s3_ratio": row("e2e-s3", s3_rate, local_rate, "files/s", ">= 0.75"),
    }


def bench_upload_latency(s3: dict[str, str], uploads: int = 60) -> dict:
    """The API's POST of a 200 KB photo, in this process (Flask's test
    client, no HTTP server): the request, its row, its outbox row, and the
    bytes going to the store."""
    from PIL import Image

    from api import create_app
    from tests.api_helpers import ApiClient
    from tests.uploads import encoded

    photo = encoded(Image.effect_noise((640, 480), 40).convert("RGB"), "JPEG", quality=90)
    figures: dict[str, float] = {}
    for name, variables in (("local", {}), ("s3", s3)):
        use_storage(variables)
        api = ApiClient(create_app({"TESTING": True}).test_client())
        user = api.register()
        room = api.room(user)
        timings = []
        for _ in range(uploads):
            started = time.perf_counter()
            response = api.post(
                f"/rooms/{room}/files",
                user,
                content_type="multipart/form-data",
                data={"file": (io.BytesIO(photo), "photo.jpg", "image/jpeg")},
            )
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 202, response.json
        timings.sort()
        figures[f"upload_{name}_p50_ms"] = timings[len(timings) // 2]
        figures[f"upload_{name}_p99_ms"] = timings[int(len(timings) * 0.99) - 1]
    use_storage({})
    for quantile in ("p50", "p99"):
        ours, baseline = figures[f"upload_s3_{quantile}_ms"], figures[f"upload_local_{quantile}_ms"]
        figures[f"upload_{quantile}_ratio"] = row(
            f"upload-{quantile}", ours, baseline, "ms", "information"
        )
    return figures


# A child process stores one file and says how far its RSS rose above
# where it was before (sampled every 5 ms: ru_maxrss would still hold the
# peak of importing boto3, which the upload never reaches again).
STORE_ONE = """
import sys, threading, time, uuid
from veza.storage import get_storage

def rss_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))

storage = get_storage()
before, peak, done = rss_kib(), [0], threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss_kib())
        time.sleep(0.005)
sampler = threading.Thread(target=sample)
sampler.start()
with open(sys.argv[1], "rb") as upload:
    storage.save_upload(upload, uuid.uuid4(), 1 << 40)
done.set()
sampler.join()
print(max(peak[0], rss_kib()) - before)
"""


def bench_upload_memory(big: Path, s3: dict[str, str]) -> dict:
    """Peak RSS growth of a process storing a 100 MB upload (read from a
    file on disk, as Werkzeug spools it), in the bucket vs on disk."""
    growth = {}
    for name, variables in (("local", {}), ("s3", s3)):
        env = {**os.environ, **variables}
        if not variables:
            env.pop("STORAGE_BACKEND", None)
        result = subprocess.run(
            [sys.executable, "-c", STORE_ONE, str(big)],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        growth[name] = int(result.stdout.strip().splitlines()[-1]) / 1024
    print(
        f"{'upload-rss':<11} s3 {growth['s3']:6.1f} MiB  local {growth['local']:6.1f} MiB"
        "  growth while storing 100 MB  (goal s3 < 16 MiB)"
    )
    return {
        "upload_rss_growth_s3_mib": growth["s3"],
        "upload_rss_growth_local_mib": growth["local"],
    }


def bench_s3(db, big: Path, count: int) -> dict:
    from tests.seaweedfs import SeaweedFS, s3_environment

    server = SeaweedFS()
    server.start()
    try:
        s3 = s3_environment(server, "bench/")
        figures = bench_s3_end_to_end(db, count, s3)
        figures |= bench_upload_latency(s3)
        figures |= bench_upload_memory(big, s3)
    finally:
        server.stop()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--files", type=int, default=30, help="files per end-to-end round (3 rounds each way)"
    )
    parser.add_argument(
        "--storage",
        choices=["local", "s3"],
        default="local",
        help="s3: the bucket's rows (a local SeaweedFS) beside local disk, instead of the stages",
    )
    args = parser.parse_args()

    import psycopg

    conftest._admin(f'DROP DATABASE IF EXISTS "{conftest.TEST_DB}" WITH (FORCE)')
    conftest._admin(f'CREATE DATABASE "{conftest.TEST_DB}"')
    conftest.alembic("upgrade", "head")
    clamd_server = Clamd()
    clamd_server.start()
    work = Path(tempfile.mkdtemp(prefix="veza-bench-files-"))
    try:
        big = work / "big.bin"
        block = os.urandom(1024 * 1024)
        with open(big, "wb") as out:
            out.writelines(
                block[: HASH_FILE_BYTES - offset]
                for offset in range(0, HASH_FILE_BYTES, len(block))
            )
        photo = make_photo()
        jpeg, png = work / "photo.jpg", work / "photo.png"
        photo.save(jpeg, quality=90)
        photo.save(png)
        gif, heic = work / "clip.gif", work / "photo.heic"
        sample_gif(gif)
        import pillow_heif

        pillow_heif.from_pillow(photo).save(heic, quality=90)

        figures = {"files": args.files, "cpus": os.cpu_count(), "storage": args.storage}
        from db.engine import libpq_url

        with psycopg.connect(libpq_url(), autocommit=True) as db:
            if args.storage == "s3":
                figures |= bench_s3(db, big, args.files)
            else:
                figures |= bench_hash(big)
                figures |= bench_scan(big)
                figures |= bench_renditions("rend-jpeg", jpeg, "image/jpeg", "<= 1.0", 1.0)
                figures |= bench_renditions("rend-png", png, "image/png", "<= 1.5", 1.5)
                # Two animated sizes (400x225, and 480x270 kept within 1280)
                # and the stills, beside vipsthumbnail's same two animations.
                figures |= bench_renditions(
                    "anim-gif", gif, "image/gif", "<= 1.5", 1.5, frames="[n=-1]"
                )
                # vips reads HEIC through libheif here; for information.
                figures |= bench_renditions("rend-heic", heic, "image/heic", "info", None)
                figures |= bench_placeholder(jpeg)
                figures |= bench_end_to_end(db, args.files)
    finally:
        clamd_server.stop()
        from db.engine import dispose_engines

        dispose_engines()
        conftest._admin(f'DROP DATABASE IF EXISTS "{conftest.TEST_DB}" WITH (FORCE)')
        shutil.rmtree(work)
        shutil.rmtree(os.environ["STORAGE_DIR"])
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
