"""`veza`: the operator's command line (console script from pyproject)."""

from __future__ import annotations

import argparse
import signal

from worker.config import settings
from worker.logs import configure_logging


def _relay(args: argparse.Namespace) -> None:
    from worker import app
    from worker.outbox import run_relay

    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    run_relay(app, should_stop=lambda: stopping)


def _outbox(args: argparse.Namespace) -> None:
    from worker.outbox import backlog

    count, oldest = backlog()
    age = f"{oldest:.1f}s" if oldest is not None else "-"
    print(f"unsent: {count}  oldest: {age}")


def _exporter(args: argparse.Namespace) -> None:
    from worker import app
    from worker.metrics import serve

    serve(app, args.port)


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
    return parser


def main(argv: list[str] | None = None) -> None:
    configure_logging(settings.log_level)
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
