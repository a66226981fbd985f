"""Reading the audit trail back (issue 8): administrators ask who read or changed what, when
and from where, filtered by user, action, case, patient, object, period and address.

Newest first by id (ids grow with time, and an id is a stable keyset cursor: ``before``).
Reading the trail is itself recorded, with the filters used, so the trail shows who looked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Select, or_, select

from telehub import audit
from telehub.analytics import instant, zone
from telehub.auth import Principal
from telehub.db import Database
from telehub.db.models import AuditEntry, Case, Patient, Role, User
from telehub.errors import Forbidden, Invalid
from telehub.params import bounded_int

#: Resource types whose resource id is a case id (a case read, a report read or written).
CASE_RESOURCES = ("case", "report")
MAX_LIMIT = 500


@dataclass(frozen=True)
class AuditQuery:
    """The filters; every one optional, all combined with AND."""

    user: str | None = None  # username or user id
    action: str | None = None
    case: int | None = None
    patient: str | None = None  # the Patient ID of the cases' patient
    resource_type: str | None = None
    resource_id: str | None = None
    start: datetime | None = None  # UTC, inclusive
    end: datetime | None = None  # UTC, exclusive
    remote: str | None = None  # address prefix
    limit: int = 100
    offset: int = 0
    before: int | None = None  # keyset: entries with a smaller id

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and f.name not in ("limit", "offset"):
                out[f.name] = value.isoformat() if isinstance(value, datetime) else value
        return out


def _text(params: Mapping[str, str], name: str, longest: int = 80) -> str | None:
    value = (params.get(name) or "").strip()
    if len(value) > longest:
        raise Invalid(f"query parameter {name} is longer than {longest}", "bad_parameter")
    if any(ord(c) < 32 for c in value):
        raise Invalid(f"query parameter {name} holds control characters", "bad_parameter")
    return value or None


def _time(
    params: Mapping[str, str], name: str, tz: Any, end_of_day: bool = False
) -> datetime | None:
    if not params.get(name):
        return None
    try:
        return instant(params[name], name, tz, end_of_day)
    except OverflowError as exc:  # a date at the edge of the calendar, moved to UTC
        raise Invalid(f"{name} is out of range", "bad_parameter") from exc


def parse(params: Mapping[str, str]) -> AuditQuery:
    """The query string as filters; a malformed value is a 400 naming the parameter."""
    tz = zone(params.get("tz") or "UTC")
    start = _time(params, "from", tz)
    end = _time(params, "to", tz, end_of_day=True)
    if start and end and start >= end:
        raise Invalid("from must be before to", "bad_period")
    if params.get("resource_id") and not params.get("resource_type"):
        raise Invalid("resource_id needs resource_type", "bad_parameter")
    return AuditQuery(
        user=_text(params, "user"),
        action=_text(params, "action", 40),
        case=bounded_int(params, "case", None, 1, 2**62),
        patient=_text(params, "patient", 64),
        resource_type=_text(params, "resource_type", 40),
        resource_id=_text(params, "resource_id"),
        start=start,
        end=end,
        remote=_text(params, "remote"),
        limit=bounded_int(params, "limit", 100, 1, MAX_LIMIT) or 100,
        offset=bounded_int(params, "offset", 0, 0, 10_000_000) or 0,
        before=bounded_int(params, "before", None, 1, 2**62),
    )


def _case_rows(case_ids: list[int]) -> Any:
    return (AuditEntry.resource_type.in_(CASE_RESOURCES)) & (
        AuditEntry.resource_id.in_([str(i) for i in case_ids])
    )


def _statement(q: AuditQuery, session: Any) -> Select[Any]:
    stmt = select(AuditEntry, User).outerjoin(User, User.id == AuditEntry.user_id)
    if q.user:
        by_id = q.user.isdigit() and len(q.user) <= 18
        who = User.id == int(q.user) if by_id else User.username == q.user
        stmt = stmt.where(who)
    if q.action:
        stmt = stmt.where(AuditEntry.action == q.action)
    if q.case is not None:
        stmt = stmt.where(_case_rows([q.case]))
    if q.patient:
        ids = list(
            session.scalars(
                select(Case.id)
                .join(Patient, Patient.id == Case.patient_id)
                .where(Patient.patient_id == q.patient)
            )
        )
        patient_rows = (AuditEntry.resource_type == "patient") & (
            AuditEntry.resource_id == q.patient
        )
        stmt = stmt.where(or_(patient_rows, _case_rows(ids)) if ids else patient_rows)
    if q.resource_type:
        stmt = stmt.where(AuditEntry.resource_type == q.resource_type)
    if q.resource_id:
        stmt = stmt.where(AuditEntry.resource_id == q.resource_id)
    if q.start:
        stmt = stmt.where(AuditEntry.at >= q.start)
    if q.end:
        stmt = stmt.where(AuditEntry.at < q.end)
    if q.remote:
        escaped = q.remote.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(AuditEntry.remote.like(f"{escaped}%", escape="\\"))
    if q.before is not None:
        stmt = stmt.where(AuditEntry.id < q.before)
    return stmt.order_by(AuditEntry.id.desc())


def describe(entry: AuditEntry, user: User | None) -> dict[str, Any]:
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "user": None
        if user is None
        else {
            "id": user.id,
            "username": user.username,
            "display_name": user.display_name,
            "role": user.role,
        },
        "action": entry.action,
        "resource_type": entry.resource_type,
        "resource_id": entry.resource_id,
        "remote": entry.remote,
        "detail": entry.detail or {},
    }


def search(db: Database, principal: Principal, q: AuditQuery, remote: str) -> dict[str, Any]:
    """One page of matching entries, newest first; ``next_before`` continues after it."""
    if principal.role != Role.ADMIN.value:
        raise Forbidden("only administrators may read the audit trail", "not_an_admin")
    with db.reader() as session:
        rows = session.execute(_statement(q, session).limit(q.limit + 1).offset(q.offset)).all()
    more = len(rows) > q.limit
    entries = [describe(entry, user) for entry, user in rows[: q.limit]]
    with db.session() as session:
        audit.record(session, principal.user_id, "read", "audit", "", remote, filters=q.describe())
    return {
        "entries": entries,
        "limit": q.limit,
        "offset": q.offset,
        "next_before": entries[-1]["id"] if more and entries else None,
    }
