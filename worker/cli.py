"""`veza`: the operator's command line (console script from pyproject)."""

from __future__ import annotations

import argparse
import getpass
import os
import signal
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from veza.logs import configure_logging
from veza.settings import get_settings


def _relay(args: argparse.Namespace) -> None:
    from db.engine import set_kind
    from worker import app
    from worker.relay import run_relay

    set_kind("relay")

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    run_relay(app, should_stop=lambda: stopping)


def _outbox(args: argparse.Namespace) -> None:
    """Print what the outbox owes and its dead rows; exit 1 when the oldest
    unsent row is stale (the relay's healthcheck). Dead rows do not fail the
    healthcheck: restarting the relay would not bring them back."""
    from veza.outbox import dead_rows, is_stale, stale_after_seconds, summary

    owed = summary()
    age = f"{owed.oldest_unsent_age:.1f}s" if owed.oldest_unsent_age is not None else "-"
    print(f"unsent: {owed.unsent}  oldest: {age}  in flight: {owed.in_flight}  dead: {owed.dead}")
    if owed.dead:
        shown = dead_rows()
        print("dead rows (veza outbox replay ID... | --all-dead):")
        for row in shown:
            dead_at = row.dead_at.astimezone(UTC)
            print(
                f"  {row.id}  {row.task_name} {row.args}  dead since {dead_at:%Y-%m-%d %H:%M:%SZ}"
                f"  re-drives: {row.redrives}  reason: {row.dead_reason}"
            )
        if owed.dead > len(shown):
            print(f"  ... and {owed.dead - len(shown)} more")
    if is_stale(owed.oldest_unsent_age):
        sys.exit(f"stale: the oldest unsent row is older than {stale_after_seconds()}s")


def _outbox_replay(args: argparse.Namespace) -> None:
    """Dead rows back to unsent; exit 1 when a named id is not a dead row."""
    from veza.outbox import replay

    replayed = replay(None if args.all_dead else args.ids, operator=getpass.getuser())
    for row in replayed:
        print(f"replayed {row.id}  {row.task_name}  (was dead: {row.dead_reason})")
    missing = set(args.ids) - {row.id for row in replayed}
    if missing:
        sys.exit(f"not dead rows: {', '.join(sorted(map(str, missing)))}")


def _exporter(args: argparse.Namespace) -> None:
    from worker import app
    from worker.metrics import serve

    # Stopped (honcho, compose), it exits cleanly instead of dying of the
    # signal, which the shell that ran it reports in a plain-text line.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    settings = get_settings()
    serve(app, settings.metrics_address, args.port, settings.metrics_basic_auth)


# The API's gunicorn configuration: gthread, timeouts on every client socket
# read, no Server banner; the console needs the same.
GUNICORN_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "gunicorn.conf.py"


def _console(args: argparse.Namespace) -> None:
    """Serve the operator console (console/) under gunicorn, in this
    process's place. Its logins are checked here first, so that a missing
    or empty CONSOLE_BASIC_AUTH stops it with the reason, before gunicorn
    starts a worker only to see it fail."""
    from veza import basic_auth

    settings = get_settings()
    basic_auth.logins("CONSOLE_BASIC_AUTH", settings.console_basic_auth)
    bind = f"{settings.console_address}:{args.port}"
    # One worker: a handful of operators; its 32 threads serve them all.
    argv = ["-m", "gunicorn", "-c", str(GUNICORN_CONFIG), "--workers", "1", "--bind", bind]
    os.execv(sys.executable, [sys.executable, *argv, "console:create_app()"])


def maintenance_tasks() -> list[str]:
    """The maintenance tasks the worker app registers (tasks/maintenance.py),
    without their `maintenance.` prefix."""
    from worker import app

    app.loader.import_default_modules()
    return sorted(
        name.removeprefix("maintenance.") for name in app.tasks if name.startswith("maintenance.")
    )


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


def _maintenance_cancel(args: argparse.Namespace) -> None:
    """Ask a running maintenance run to stop at its next batch boundary."""
    import json

    from veza.maintenance.run import request_cancel

    asked = request_cancel(args.run_id, args.operator)
    print(json.dumps({"run_id": args.run_id, "cancel_requested": asked}))
    if not asked:
        raise SystemExit(f"maintenance run {args.run_id} is not running")


def _utc(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _restore(args: argparse.Namespace) -> None:
    import json

    from db.engine import set_kind
    from veza.messages.retention import restore

    set_kind("maintenance")
    print(json.dumps(restore(args.room, args.start, args.end)))


def _storage_migrate(args: argparse.Namespace) -> None:
    """Copy the local store (STORAGE_DIR) into the bucket the S3_* settings
    name, whatever STORAGE_BACKEND says; progress on stderr, the outcome
    as JSON on stdout; exit 1 if a file could not be copied."""
    import json
    from dataclasses import asdict
    from typing import Any

    from db.engine import set_kind
    from veza.storage import LocalStorage, S3Storage
    from veza.storage.transfer import migrate_to_s3

    def report(progress: dict[str, Any]) -> None:
        print(json.dumps({"progress": progress}), file=sys.stderr, flush=True)

    set_kind("maintenance")
    settings = get_settings()
    done = migrate_to_s3(
        LocalStorage(settings.storage_dir), S3Storage(settings), report, args.dry_run
    )
    print(json.dumps(asdict(done)))
    if done.failed:
        raise SystemExit(1)


def _blocked_hash(value: str) -> tuple[str, int | None]:
    """FILE_OR_HASH as a PDQ hash, with its quality when it comes from an
    image (a hash from a shared list has none to check). An image is
    decoded as uploads are, through the same allow-list and limits."""
    from veza import images
    from veza.files import blocklist
    from veza.media import renditions

    path = Path(value)
    if not path.is_file():
        try:
            return blocklist.parsed_hash(value), None
        except ValueError as exc:
            _refuse(f"{exc}, nor an image file")
    try:
        pdq = renditions.perceptual_hash_of(path, get_settings().rendition_sizes)
    except images.UnsupportedImage as exc:
        _refuse(f"{value}: {exc}")
    return pdq.hex, pdq.quality


def _refuse(message: str) -> NoReturn:
    print(f"veza: {message}", file=sys.stderr)
    raise SystemExit(2)


def _blocklist(args: argparse.Namespace) -> None:
    """`veza moderation blocklist add|remove|list`: one JSON line per entry
    listed, added or removed (docs/api.md, "Image blocklist")."""
    import json

    from db.engine import session_scope, set_kind
    from veza.files import blocklist
    from veza.images import PDQ_MIN_QUALITY

    set_kind("maintenance")
    with session_scope() as session:
        if args.action == "list":
            for entry in blocklist.entries(session):
                row = {"id": entry.id, "pdq": blocklist.entry_hex(entry), "label": entry.label}
                added = {"added_by": entry.added_by, "created_at": entry.created_at.isoformat()}
                print(json.dumps(row | added))
            return
        pdq, quality = _blocked_hash(args.image)
        if args.action == "remove":
            removed = blocklist.remove(session, pdq, args.operator)
            print(json.dumps({"pdq": pdq, "removed": removed}))
            return
        if quality is not None and quality < PDQ_MIN_QUALITY:
            _refuse(
                f"{args.image}: PDQ quality {quality} is under {PDQ_MIN_QUALITY}: the image"
                " is too flat to match on (it would match other flat images)"
            )
        entry_id, new = blocklist.add(session, pdq, args.label, args.operator)
        print(json.dumps({"id": entry_id, "pdq": pdq, "quality": quality, "new": new}))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="veza", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("relay", help="publish the outbox to Celery (runs until stopped)").set_defaults(
        func=_relay
    )
    outbox = sub.add_parser("outbox", help="show the outbox backlog and its dead rows")
    outbox.set_defaults(func=_outbox)
    outbox_sub = outbox.add_subparsers(dest="action")
    replay = outbox_sub.add_parser("replay", help="send dead rows again (docs/operations.md)")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("ids", nargs="*", default=[], type=uuid.UUID, metavar="ID")
    which.add_argument("--all-dead", action="store_true", help="every dead row")
    replay.set_defaults(func=_outbox_replay)
    exporter = sub.add_parser("exporter", help="serve Prometheus metrics (queues, tasks, outbox)")
    exporter.add_argument("--port", type=int, default=get_settings().metrics_port)
    exporter.set_defaults(func=_exporter)
    console = sub.add_parser("console", help="serve the operator console (docs/operations.md)")
    console.add_argument("--port", type=int, default=get_settings().console_port)
    console.set_defaults(func=_console)
    maintenance = sub.add_parser("maintenance", help="maintenance tasks (docs/maintenance.md)")
    maintenance_sub = maintenance.add_subparsers(dest="action", required=True)
    run = maintenance_sub.add_parser("run", help="run one maintenance task now, in this process")
    run.add_argument("task", choices=maintenance_tasks())
    run.add_argument(
        "--dry-run", action="store_true", help="count what it would do, change nothing"
    )
    run.set_defaults(func=_maintenance)
    cancel = maintenance_sub.add_parser(
        "cancel", help="stop a running maintenance run at its next batch boundary"
    )
    cancel.add_argument("run_id", type=int, help="its maintenance_runs id")
    cancel.add_argument(
        "--operator",
        default=getpass.getuser(),
        help="who asks, for the audit log (default: this login)",
    )
    cancel.set_defaults(func=_maintenance_cancel)
    restore = sub.add_parser(
        "restore", help="restore a room's archived messages from [--from, --to)"
    )
    restore.add_argument("--room", type=int, required=True)
    restore.add_argument(
        "--from",
        dest="start",
        type=_utc,
        required=True,
        help="ISO date or timestamp (UTC if no offset)",
    )
    restore.add_argument("--to", dest="end", type=_utc, required=True)
    restore.set_defaults(func=_restore)
    moderation = sub.add_parser("moderation", help="moderation (docs/api.md, Moderation)")
    moderation_sub = moderation.add_subparsers(dest="what", required=True)
    blocked = moderation_sub.add_parser(
        "blocklist", help="the image blocklist: uploads that match it are held for review"
    )
    blocked_sub = blocked.add_subparsers(dest="action", required=True)
    blocked_sub.add_parser("list", help="every entry, as JSON lines").set_defaults(func=_blocklist)
    for action, summary in (
        ("add", "block an image (a file, or a PDQ hash as 64 hex digits)"),
        ("remove", "unblock it (files it held stay held until a moderator decides)"),
    ):
        change = blocked_sub.add_parser(action, help=summary)
        change.add_argument("image", metavar="FILE_OR_HASH")
        change.add_argument(
            "--operator", default=getpass.getuser(), help="who, for the audit log (default: you)"
        )
        if action == "add":
            change.add_argument("--label", help="what it is, for the audit log and the list")
        change.set_defaults(func=_blocklist)
    storage = sub.add_parser("storage", help="blob storage (docs/files.md)")
    storage_sub = storage.add_subparsers(dest="action", required=True)
    migrate = storage_sub.add_parser(
        "migrate", help="copy the local store into the S3 bucket (idempotent, resumable)"
    )
    migrate.add_argument("--to", choices=["s3"], required=True, help="the store to fill")
    migrate.add_argument(
        "--dry-run", action="store_true", help="count what it would copy, copy nothing"
    )
    migrate.set_defaults(func=_storage_migrate)
    return parser


def main(argv: list[str] | None = None) -> None:
    configure_logging(get_settings().log_level)
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
