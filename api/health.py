"""GET /healthz: liveness, and whether PostgreSQL and Redis answer."""

from __future__ import annotations

import redis
from flask import Blueprint, Response, current_app, jsonify
from sqlalchemy import text

from db.engine import get_engine
from veza.redis_store import connect

bp = Blueprint("health", __name__)

PROBE_TIMEOUT_SECONDS = 2


def _postgres_ok() -> bool:
    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:  # noqa: BLE001 (whatever the failure, the answer is "down": 503, never 500)
        return False


def _redis_ok() -> bool:
    try:
        # With Sentinels, the primary they name: the one the work goes to.
        with connect(current_app.config["REDIS_URL"], PROBE_TIMEOUT_SECONDS) as client:
            return bool(client.ping())
    except redis.RedisError:
        return False


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    checks = {"postgres": _postgres_ok(), "redis": _redis_ok()}
    down = [name for name, ok in checks.items() if not ok]
    body = {
        "status": "ok" if not down else "unavailable",
        "checks": {name: "ok" if ok else "down" for name, ok in checks.items()},
        "down": down,
    }
    return jsonify(body), 200 if not down else 503
