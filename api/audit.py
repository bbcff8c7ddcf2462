"""Security-relevant events of a request, to audit_logs in the request's
transaction (veza/audit.py), with the request's context: client address,
user agent and request id."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from api.request_context import client_ip, request_id, user_agent
from db.models import AuditSeverity
from veza import audit


def record(
    session: Session,
    event_type: str,
    data: dict[str, Any],
    *,
    user_id: int | None,
    room_id: int | None = None,
    resource: tuple[str, int] | None = None,
    severity: AuditSeverity = AuditSeverity.info,
) -> None:
    resource_type, resource_id = resource or (None, None)
    audit.record(
        session,
        event_type,
        data,
        severity=severity,
        user_id=user_id,
        room_id=room_id,
        resource_type=resource_type,
        resource_id=resource_id,
        ip_address=client_ip(),
        user_agent=user_agent(),
        request_id=request_id(),
    )
