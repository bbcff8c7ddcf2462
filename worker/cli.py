"""`veza`: the operator's command line (console script from pyproject)."""

from __future__ import annotations

import argparse
import signal
import sys
from datetime import datetime, timezone

from worker.config import settings
from worker.logs import configure_logging


def _relay(args: argparse.Namespace) -> None:
    from db.engine import set_kind
    from worker import app
    from worker.outbox import run_relay

    set_kind("relay")

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    run_relay(app, should_stop=lambda: stopping)


def _outbox(args: argparse.Namespace) -> None:
    """Print the backlog; exit 1 when it is stale (the relay's healthcheck)."""
    from worker.outbox import backlog, is_stale, stale_after_seconds

    count, oldest = backlog()
    age = f"{oldest:.1f}s" if oldest is not None else "-"
    print(f"unsent: {count}  oldest: {age}")
    if is_stale(oldest):
        sys.exit(f"stale: the oldest unsent row is older than {stale_after_seconds()}s")


def _exporter(args: argparse.Namespace) -> None:
    from worker import app
    from worker.metrics import serve

    serve(app, args.port)


MAINTENANCE_TASKS = ("purge_retention", "purge_expired_files", "expire_sessions",
                     "ensure_partitions", "refresh_room_stats", "requeue_stale_files",
                     "rescan_files", "requeue_failed_files", "recount_counters")


def _maintenance(args: argparse.Namespace) -> None:
    """Run one maintenance task here and now, under the same rules as on a
    worker (lock, run log, audit row), and print its outcome."""
    import json

    from worker import app

    app.loader.import_default_modules()
    result = app.tasks[f"maintenance.{args.task}"].apply(kwargs={"dry_run": args.dry_run})
    print(json.dumps(result.result if result.successful() else {"error": repr(result.result)}))
    if not result.successful():
        raise SystemExit(1)


def _utc(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _restore(args: argparse.Namespace) -> None:
    import json

    from db.engine import set_kind
    from worker.maintenance.retention import restore

    set_kind("maintenance")
    print(json.dumps(restore(args.room, args.start, args.end)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="veza", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("relay", help="publish the outbox to Celery (runs until stopped)").set_defaults(
        func=_relay
    )
    sub.add_parser("outbox", help="show the outbox backlog").set_defaults(func=_outbox)
    exporter = sub.add_parser("exporter", help="serve Prometheus metrics (queues, tasks, outbox)")
    exporter.add_argument("--port", type=int, default=settings.metrics_port)
    exporter.set_defaults(func=_exporter)
    maintenance = sub.add_parser("maintenance", help="maintenance tasks (docs/maintenance.md)")
    maintenance_sub = maintenance.add_subparsers(dest="action", required=True)
    run = maintenance_sub.add_parser("run", help="run one maintenance task now, in this process")
    run.add_argument("task", choices=MAINTENANCE_TASKS)
    run.add_argument("--dry-run", action="store_true", help="count what it would do, change nothing")
    run.set_defaults(func=_maintenance)
    restore = sub.add_parser("restore", help="restore a room's archived messages from [--from, --to)")
    restore.add_argument("--room", type=int, required=True)
    restore.add_argument("--from", dest="start", type=_utc, required=True,
                         help="ISO date or timestamp (UTC if no offset)")
    restore.add_argument("--to", dest="end", type=_utc, required=True)
    restore.set_defaults(func=_restore)
    return parser


def main(argv: list[str] | None = None) -> None:
    configure_logging(settings.log_level)
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
