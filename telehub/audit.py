"""The audit trail: who read or changed which patient data, when, from where."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from telehub.db.models import AuditEntry


def record(
    session: Session,
    user_id: int | None,
    action: str,
    resource_type: str,
    resource_id: object = "",
    remote: str = "",
    **detail: Any,
) -> None:
    session.add(
        AuditEntry(
            user_id=user_id,
            action=action,
            resource_type=resource_type,
            resource_id=str(resource_id),
            remote=remote[:80],
            detail=detail,
        )
    )
