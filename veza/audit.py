"""Security- and operations-relevant events, as audit_logs rows.

A row is added to the caller's session, so it is recorded exactly when the
change it describes commits. The API adds the request's context (client
address, user agent: api/audit.py). Every row carries the id of the request
it is owed to, when there is one: in a worker, the id bound around the task
that the request's work caused (file.infected names the upload's request).
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session

from db.models import AuditLog, AuditSeverity
from veza.logs import bound_request_id


def record(
    session: Session,
    event_type: str,
    data: dict[str, Any],
    *,
    severity: AuditSeverity = AuditSeverity.info,
    user_id: int | None = None,
    room_id: int | None = None,
    resource_type: str | None = None,
    resource_id: int | None = None,
    ip_address: str | None = None,
    user_agent: str | None = None,
    request_id: uuid.UUID | None = None,
) -> None:
    session.add(
        AuditLog(
            event_type=event_type,
            event_data=data,
            user_id=user_id,
            room_id=room_id,
            resource_type=resource_type,
            resource_id=resource_id,
            ip_address=ip_address,
            user_agent=user_agent,
            request_id=request_id or bound_request_id(),
            severity=severity,
        )
    )
