"""The summary of a case that worklists, case lists and every case action answer with: who
sent it, where it is, who holds it, how long is left.

Read with three Core queries whatever the page size (cases with their one-to-one parts joined,
then the studies and the critical ECGs of those cases), never through ORM objects: a worklist
is the hub's most frequent request, and building ORM objects for 50 rows and their relations
cost several times the SQL (bench/worklist.py).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, select
from sqlalchemy.orm import Session

from telehub.db.models import (
    Case,
    CaseStatus,
    EcgRecord,
    Facility,
    Patient,
    ReadingCentre,
    Study,
    User,
)
from telehub.db.types import utcnow

#: Statuses a reading centre still has work on.
OPEN_FOR_READING = (CaseStatus.ROUTED.value, CaseStatus.CLAIMED.value, CaseStatus.PRELIMINARY.value)

_COLUMNS = (
    Case.id,
    Case.kind,
    Case.priority,
    Case.status,
    Case.reader_id,
    Case.claim_kind,
    Case.claimed_at,
    Case.lease_expires_at,
    Case.sla_deadline,
    Case.sla_breached_at,
    Case.escalations,
    Case.second_opinion,
    Case.subspecialty,
    Case.body_part,
    Case.arrived_at,
    Facility.id.label("origin_id"),
    Facility.code.label("origin_code"),
    Facility.name.label("origin_name"),
    ReadingCentre.id.label("centre_id"),
    ReadingCentre.code.label("centre_code"),
    ReadingCentre.name.label("centre_name"),
    User.username.label("reader_username"),
    User.display_name.label("reader_name"),
    Patient.patient_id.label("patient_pid"),
    Patient.issuer.label("patient_issuer"),
    Patient.name.label("patient_name"),
    Patient.sex.label("patient_sex"),
    Patient.birth_date.label("patient_birth_date"),
)


def query(*where: ColumnElement[bool]):  # type: ignore[no-untyped-def]
    """The summary columns of the cases matching ``where``; add order, limit and offset."""
    return (
        select(*_COLUMNS)
        .select_from(Case)
        .join(Facility, Facility.id == Case.origin_facility_id)
        .outerjoin(ReadingCentre, ReadingCentre.id == Case.centre_id)
        .outerjoin(User, User.id == Case.reader_id)
        .outerjoin(Patient, Patient.id == Case.patient_id)
        .where(*where)
    )


def load(session: Session, statement: Any) -> list[dict[str, Any]]:
    """Run a ``query(...)`` statement and build the summaries, in its order."""
    rows = session.execute(statement).all()
    return build(session, rows)


def one(session: Session, case_id: int) -> dict[str, Any]:
    """The summary of one case (the caller has checked the caller may see it)."""
    return load(session, query(Case.id == case_id))[0]


def build(session: Session, rows: Sequence[Row[Any]]) -> list[dict[str, Any]]:
    ids = [row.id for row in rows]
    studies: dict[int, list[Row[Any]]] = defaultdict(list)
    findings: dict[int, set[str]] = defaultdict(set)
    if ids:
        for study in session.execute(
            select(
                Study.case_id,
                Study.study_uid,
                Study.instance_count,
                Study.last_received_at,
                Study.modalities,
            )
            .where(Study.case_id.in_(ids))
            .order_by(Study.id)
        ):
            studies[study.case_id].append(study)
        for ecg in session.execute(
            select(EcgRecord.case_id, EcgRecord.analysis).where(
                EcgRecord.case_id.in_(ids), EcgRecord.critical.is_(True)
            )
        ):
            findings[ecg.case_id].update(_critical_codes(ecg.analysis))
    now = utcnow()
    return [_summary(row, studies[row.id], findings[row.id], now) for row in rows]


def _critical_codes(analysis: dict[str, Any] | None) -> Iterable[str]:
    """Critical automated ECG findings, so a worklist shows why a case jumped the queue."""
    for finding in (analysis or {}).get("findings", []):
        if finding.get("critical"):
            yield finding["code"]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _summary(
    row: Row[Any], studies: list[Row[Any]], critical: set[str], now: datetime
) -> dict[str, Any]:
    deadline = row.sla_deadline
    seconds_left = round((deadline - now).total_seconds()) if deadline else None
    reader = (
        {"id": row.reader_id, "username": row.reader_username, "name": row.reader_name}
        if row.reader_id is not None
        else None
    )
    return {
        "id": row.id,
        "kind": row.kind,
        "priority": row.priority,
        "status": row.status,
        "origin": {"id": row.origin_id, "code": row.origin_code, "name": row.origin_name},
        "centre": (
            {"id": row.centre_id, "code": row.centre_code, "name": row.centre_name}
            if row.centre_id is not None
            else None
        ),
        "reader": reader,
        "claim": (
            {
                "reader": reader,
                "claim_kind": row.claim_kind,
                "claimed_at": _iso(row.claimed_at),
                "lease_expires_at": _iso(row.lease_expires_at),
            }
            if reader
            else None
        ),
        "sla_deadline": _iso(deadline),
        "seconds_left": seconds_left,
        "sla_breached": row.sla_breached_at is not None
        or (seconds_left is not None and seconds_left < 0 and row.status in OPEN_FOR_READING),
        "escalations": row.escalations,
        "second_opinion": row.second_opinion,
        "subspecialty": row.subspecialty,
        "body_part": row.body_part,
        "patient": (
            {
                "patient_id": row.patient_pid,
                "issuer": row.patient_issuer,
                "name": row.patient_name,
                "sex": row.patient_sex,
                "birth_date": row.patient_birth_date,
            }
            if row.patient_pid is not None
            else None
        ),
        "study_instance_uids": [s.study_uid for s in studies],
        "instance_count": sum(s.instance_count for s in studies),
        "last_received_at": max(
            (s.last_received_at for s in studies), default=row.arrived_at
        ).isoformat(),
        "modalities": sorted({m for s in studies for m in s.modalities.split("\\") if m}),
        "arrived_at": row.arrived_at.isoformat(),
        "critical_findings": sorted(critical),
    }
