"""Where a running bench's processes spend their CPU: py-spy samples the
API (gunicorn and its workers), the relay and the default-queue Celery
worker (with its pool children) of a bench/load.py (or api_latency.py) run
while its load runs, and writes one text profile per process tree: the top
functions by inclusive samples (as pstats' "cumulative") with their own
("self") samples beside.

    python3 bench/spy.py --bench-pid PID [--seconds 20] [--rate 100] --out docs/profiles/NAME

Needs py-spy (pip install py-spy) and ptrace rights over the bench's
processes. Only running threads are sampled (py-spy leaves idle ones out),
so the percentages are of the CPU the process tree used, not of wall time.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

TOP = 40
# Frames every sample of a process passes through (start-up, the pool's and
# the server's loops): left out of the inclusive table, which would
# otherwise open with a screenful of them at 100 %.
PLUMBING = (
    "<frozen runpy>",
    "click/",
    "celery/bin/",
    "celery/__main__.py",
    "celery/bootsteps.py",
    "celery/worker/worker.py",
    "celery/concurrency/",
    "billiard/",
    "gunicorn/app/",
    "gunicorn/arbiter.py",
    "threading.py",
    "worker/cli.py",
)
# Which child of the bench is which process tree, by its command line.
TREES = {"api": "gunicorn", "relay": "worker.cli relay", "worker-default": "-Q default"}


def children(pid: int) -> list[tuple[int, str]]:
    """The bench's child processes: (pid, command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.append((int(entry.name), cmdline))
    return found


def record(pid: int, seconds: float, rate: int, raw: Path) -> subprocess.Popen:
    py_spy = shutil.which("py-spy") or "py-spy"
    return subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--nonblocking",  # sampling must not pause the bench's processes
            "--format",
            "raw",
            "--rate",
            str(rate),
            "--duration",
            str(int(seconds)),
            "--output",
            str(raw),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summary(raw: str, title: str) -> str:
    """Collapsed stacks ("frame;frame;... count") as a top-TOP table."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        # A frame is "function (file:line)"; the line varies along a function.
        frames = [
            frame.rsplit(":", 1)[0] + ")" if frame.endswith(")") else frame
            for frame in stack.split(";")
            if not frame.startswith("process ")
        ]
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        if frames:
            own[frames[-1]] += count
    lines = [
        f"{title}: {total} samples (running threads only)",
        f"{'cum %':>7} {'self %':>7}  function (file), start-up and pool loops left out",
    ]
    shown = [(f, n) for f, n in inclusive.most_common() if not any(p in f for p in PLUMBING)]
    for frame, count in shown[:TOP]:
        lines.append(f"{100 * count / total:7.1f} {100 * own[frame] / total:7.1f}  {frame}")
    lines.append("")
    lines.append(f"top {TOP} by self samples:")
    for frame, count in own.most_common(TOP):
        lines.append(f"{100 * count / total:7.1f}  {frame}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench-pid", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=int, default=100, help="samples per second")
    parser.add_argument("--out", required=True, help="path prefix of the text profiles")
    parser.add_argument("--keep-raw", help="a directory to keep py-spy's collapsed stacks in")
    args = parser.parse_args()
    procs = children(args.bench_pid)
    with tempfile.TemporaryDirectory() as scratch:
        spies = {}
        for name, mark in TREES.items():
            pid = next((pid for pid, cmdline in procs if mark in cmdline), None)
            if pid is None:
                raise SystemExit(f"no {name} process under {args.bench_pid}")
            raw = Path(scratch) / f"{name}.txt"
            spies[name] = (record(pid, args.seconds, args.rate, raw), raw)
        for name, (spy, raw) in spies.items():
            spy.wait()
            if args.keep_raw:
                shutil.copy(raw, Path(args.keep_raw) / f"{Path(args.out).name}-{name}.raw")
            out = Path(f"{args.out}-{name}.txt")
            out.write_text(summary(raw.read_text(), f"{name} ({args.seconds:.0f} s)"))
            print(out)


if __name__ == "__main__":
    main()
