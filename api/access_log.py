"""gunicorn's logs as the JSON lines of every other process (veza/logs.py):
its own messages (the error log: start-up, workers booted and killed,
tracebacks) and one access line per request, with the method, path,
status, duration, client address and request id as fields.

The access line is written by gunicorn after the response has gone, when
the request's context (and so the bound request id) is gone too: the id is
read from the response's X-Request-ID header instead, which is the one the
client was given (api/request_context.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from gunicorn import glogging

from api.request_context import HEADER
from veza.logs import configure_logging


class JsonLogger(glogging.Logger):
    """deploy/gunicorn.conf.py's logger_class."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        # gunicorn's own plain-text handlers go: its loggers pass their
        # records to the root logger's JSON handler, at --log-level.
        configure_logging(cfg.loglevel.upper())
        for log in (self.error_log, self.access_log):
            log.handlers.clear()
            log.propagate = True

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        if not self.access_log_enabled:
            return
        status = int(str(resp.status).split(None, 1)[0])
        headers = {name.lower(): value for name, value in resp.headers}
        self.access_log.info(
            "%s %s %s",
            environ["REQUEST_METHOD"],
            environ.get("PATH_INFO", ""),
            status,
            extra={
                "method": environ["REQUEST_METHOD"],
                "path": environ.get("PATH_INFO", ""),
                "status": status,
                "duration_ms": round(request_time.total_seconds() * 1000, 3),
                "remote_addr": environ.get("REMOTE_ADDR"),
                "request_id": headers.get(HEADER.lower()),
            },
        )
