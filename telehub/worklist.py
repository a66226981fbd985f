"""Worklists: the cases waiting for a reader or a reading centre, most urgent first.

Order: priority (STAT, urgent, routine), then SLA deadline (cases without one last), then id:
exactly the column order of the ``ix_cases_centre_worklist`` index (centre_id, status,
priority_rank, sla_deadline, id), so a centre's routed cases come straight off the index with
no sort. Rows are loaded with a fixed number of queries (see ``telehub.case_summaries``) and the
request writes one audit row, whatever its size.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, func, literal, or_, select, true
from sqlalchemy.orm import Session

from telehub import audit, case_summaries
from telehub.access import visible_to
from telehub.auth import Principal
from telehub.case_summaries import OPEN_FOR_READING
from telehub.cases import HELD
from telehub.db import Database
from telehub.db.models import (
    Case,
    CaseKind,
    CaseStatus,
    Facility,
    Patient,
    Priority,
    ReadingCentre,
    Role,
    Study,
)
from telehub.errors import Forbidden, Invalid, NotFound

#: ``worklist``: the centre's unclaimed cases plus the reader's own (the default);
#: ``mine``: the reader's own open cases; ``centre``: every open case of the centre, whoever
#: holds it; ``all``: every case the caller may see, finished ones included (a search).
SCOPES = ("worklist", "mine", "centre", "all")


@dataclass(frozen=True)
class Filters:
    """What a worklist may be narrowed by; ``None`` means no restriction."""

    modality: str | None = None
    status: str | None = None
    origin: str | None = None  # facility id or code
    priority: str | None = None
    arrived_from: datetime | None = None
    arrived_to: datetime | None = None  # exclusive
    q: str | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in {s.value for s in CaseStatus}:
            raise Invalid(f"unknown status {self.status!r}", "bad_parameter")
        if self.priority is not None and self.priority not in {p.value for p in Priority}:
            raise Invalid(f"unknown priority {self.priority!r}", "bad_parameter")


def parse_time(raw: str | None, name: str, end: bool = False) -> datetime | None:
    """An ISO date or date-time (UTC unless it says otherwise). A bare date as the end of a
    range means the whole day: the range ends at the next midnight."""
    if raw is None or raw == "":
        return None
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            start = datetime.combine(day, time(), UTC)
            return start + timedelta(days=1) if end else start
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise Invalid(
            f"{name} must be an ISO date or date-time, got {raw!r}", "bad_parameter"
        ) from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def worklist(
    db: Database,
    principal: Principal,
    remote: str,
    *,
    scope: str | None = None,
    centre: str | None = None,
    filters: Filters | None = None,
    limit: int = 100,
    offset: int = 0,
    count: bool = False,
) -> dict[str, Any]:
    """A reader's worklist (``scope``), or for an admin one centre's (``centre``: id or code)
    or every centre's."""
    scope = scope or "worklist"
    if scope not in SCOPES:
        raise Invalid(f"scope must be one of {', '.join(SCOPES)}", "bad_parameter")
    if principal.role not in (Role.READER.value, Role.ADMIN.value):
        raise Forbidden("worklists are for readers", "not_a_reader")
    if principal.role == Role.ADMIN.value and scope == "mine":
        raise Invalid("an admin holds no cases: scope=mine is for readers", "bad_parameter")
    with db.session() as session:
        if principal.role == Role.READER.value:
            if centre is not None and _centre_id(session, centre) != principal.centre_id:
                raise Forbidden("a reader sees only their own centre's worklist", "forbidden")
            where = _reader_scope(principal, scope)
        else:
            centre_id = _centre_id(session, centre) if centre is not None else None
            where = _centre_scope(centre_id, scope)
        return _run(session, principal, remote, where, filters or Filters(), limit, offset, count)


def centre_worklist(
    db: Database,
    principal: Principal,
    remote: str,
    centre_id: int,
    *,
    filters: Filters | None = None,
    limit: int = 100,
    offset: int = 0,
    count: bool = False,
) -> dict[str, Any]:
    """Every open case of one reading centre, held or not: for its readers and admins."""
    if principal.role not in (Role.READER.value, Role.ADMIN.value):
        raise Forbidden("worklists are for readers", "not_a_reader")
    with db.session() as session:
        if session.get(ReadingCentre, centre_id) is None:
            raise NotFound(f"reading centre {centre_id} not found")
        if principal.role == Role.READER.value and principal.centre_id != centre_id:
            raise Forbidden("a reader sees only their own centre's worklist", "forbidden")
        where = _centre_scope(centre_id, "centre")
        return _run(session, principal, remote, where, filters or Filters(), limit, offset, count)


def _centre_id(session: Session, ref: str) -> int:
    query = select(ReadingCentre.id).where(
        ReadingCentre.id == int(ref) if ref.isdigit() else ReadingCentre.code == ref
    )
    found = session.scalar(query)
    if found is None:
        raise NotFound(f"reading centre {ref!r} not found")
    return found


def _reader_scope(principal: Principal, scope: str) -> ColumnElement[bool]:
    mine = and_(Case.reader_id == principal.user_id, Case.status.in_(HELD))
    centre = principal.centre_id
    if scope == "mine":
        return mine
    if scope == "all":
        return visible_to(principal)
    if centre is None:
        return mine
    if scope == "centre":
        return and_(Case.centre_id == centre, Case.status.in_(OPEN_FOR_READING))
    waiting = and_(
        Case.centre_id == centre,
        Case.status == CaseStatus.ROUTED.value,
        Case.reader_id.is_(None),
    )
    return or_(waiting, mine)


def _centre_scope(centre_id: int | None, scope: str) -> ColumnElement[bool]:
    by_centre = Case.centre_id == centre_id if centre_id is not None else true()
    if scope == "all":
        return by_centre
    if scope == "worklist":  # an admin's view of what waits for a reader
        return and_(by_centre, Case.status == CaseStatus.ROUTED.value, Case.reader_id.is_(None))
    return and_(by_centre, Case.status.in_(OPEN_FOR_READING))


def _filters(session: Session, f: Filters) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if f.status:
        where.append(Case.status == f.status)
    if f.priority:
        where.append(Case.priority == f.priority)
    if f.origin:
        where.append(Case.origin_facility_id == _origin_id(session, f.origin))
    if f.arrived_from:
        where.append(Case.arrived_at >= f.arrived_from)
    if f.arrived_to:
        where.append(Case.arrived_at < f.arrived_to)
    if f.modality:
        where.append(_has_modality(f.modality.strip().upper()))
    if f.q and f.q.strip():
        where.append(_text(f.q.strip()))
    return where


def _origin_id(session: Session, ref: str) -> int:
    query = select(Facility.id).where(
        Facility.id == int(ref) if ref.isdigit() else Facility.code == ref
    )
    found = session.scalar(query)
    if found is None:
        raise Invalid(f"unknown origin facility {ref!r}", "bad_parameter")
    return found


def _has_modality(modality: str) -> ColumnElement[bool]:
    """A study of the case has the modality (Study.modalities is backslash-separated)."""
    if not modality:
        return true()
    wrapped = literal("\\") + Study.modalities + literal("\\")
    in_study = exists().where(
        Study.case_id == Case.id, wrapped.contains(f"\\{modality}\\", autoescape=True)
    )
    if modality == "ECG":
        return or_(Case.kind == CaseKind.ECG.value, in_study)
    return in_study


def _text(q: str) -> ColumnElement[bool]:
    """Patient name or ID, accession number, clinical question; case-insensitive substring.
    "zhang san" also finds the DICOM name "Zhang^San"."""
    names = {q, q.replace(" ", "^")}
    patient = select(Patient.id).where(
        or_(
            Patient.patient_id.icontains(q, autoescape=True),
            *(Patient.name.icontains(n, autoescape=True) for n in names),
        )
    )
    accession = exists().where(
        Study.case_id == Case.id, Study.accession_number.icontains(q, autoescape=True)
    )
    return or_(
        Case.patient_id.in_(patient),
        accession,
        Case.clinical_question.icontains(q, autoescape=True),
    )


def _run(
    session: Session,
    principal: Principal,
    remote: str,
    scope: ColumnElement[bool],
    f: Filters,
    limit: int,
    offset: int,
    count: bool,
) -> dict[str, Any]:
    where = [scope, *_filters(session, f)]
    statement = (
        case_summaries.query(*where)
        .order_by(Case.priority_rank, Case.sla_deadline.asc().nulls_last(), Case.id)
        .limit(limit)
        .offset(offset)
    )
    cases = case_summaries.load(session, statement)
    out: dict[str, Any] = {"cases": cases}
    if count:  # a second, cheaper query, only when asked for (it visits every matching row)
        out["total"] = session.scalar(select(func.count()).select_from(Case).where(*where))
    audit.record(
        session,
        principal.user_id,
        "list",
        "worklist",
        remote=remote,
        case_ids=[c["id"] for c in cases],
    )
    return out
