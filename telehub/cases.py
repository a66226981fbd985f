"""Cases as each role may see them, their detail, and the claim that takes one off a worklist."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from telehub import audit, ecgs, ingest, tat, timeline
from telehub.access import visible_to
from telehub.auth import Principal
from telehub.db import Database
from telehub.db.models import Case, CaseStatus, Role, Study
from telehub.db.types import utcnow
from telehub.errors import Conflict, Forbidden, NotFound

#: Statuses a reading centre still has work on.
OPEN_FOR_READING = (CaseStatus.ROUTED.value, CaseStatus.CLAIMED.value, CaseStatus.PRELIMINARY.value)


def _load_visible(session: Session, principal: Principal, case_id: int) -> Case:
    case = session.scalar(
        select(Case)
        .where(Case.id == case_id, visible_to(principal))
        .options(selectinload(Case.studies).selectinload(Study.series))
    )
    if case is None:
        # The same answer whether the case is missing or another facility's: no probing.
        raise NotFound(f"case {case_id} not found")
    return case


def summary(case: Case) -> dict[str, Any]:
    return {
        "id": case.id,
        "kind": case.kind,
        "priority": case.priority,
        "status": case.status,
        "origin": {"id": case.origin.id, "code": case.origin.code, "name": case.origin.name},
        "centre": {"id": case.centre.id, "name": case.centre.name} if case.centre else None,
        "reader": (
            {
                "id": case.reader.id,
                "username": case.reader.username,
                "name": case.reader.display_name,
            }
            if case.reader
            else None
        ),
        "patient": (
            {
                "patient_id": case.patient.patient_id,
                "issuer": case.patient.issuer,
                "name": case.patient.name,
                "sex": case.patient.sex,
                "birth_date": case.patient.birth_date,
            }
            if case.patient
            else None
        ),
        "study_instance_uids": [s.study_uid for s in case.studies],
        "instance_count": sum(s.instance_count for s in case.studies),
        "last_received_at": max(
            (s.last_received_at for s in case.studies), default=case.arrived_at
        ).isoformat(),
        "modalities": sorted({m for s in case.studies for m in s.modalities.split("\\") if m}),
        "arrived_at": case.arrived_at.isoformat(),
        # Critical automated ECG findings, so a worklist shows why a case jumped the queue.
        "critical_findings": sorted(
            {
                f["code"]
                for record in case.ecgs
                if record.critical and record.analysis
                for f in record.analysis.get("findings", [])
                if f.get("critical")
            }
        ),
    }


def list_cases(
    db: Database,
    principal: Principal,
    remote: str,
    limit: int = 50,
    offset: int = 0,
    status: str | None = None,
) -> list[dict[str, Any]]:
    with db.session() as session:
        query = select(Case).where(visible_to(principal))
        if status:
            query = query.where(Case.status == status)
        query = query.order_by(Case.arrived_at.desc(), Case.id.desc()).limit(limit).offset(offset)
        cases = list(
            session.scalars(query.options(selectinload(Case.studies), selectinload(Case.ecgs)))
        )
        audit.record(
            session,
            principal.user_id,
            "list",
            "case",
            remote=remote,
            case_ids=[c.id for c in cases],
        )
        return [summary(c) for c in cases]


def detail(db: Database, principal: Principal, case_id: int, remote: str) -> dict[str, Any]:
    with db.session() as session:
        case = _load_visible(session, principal, case_id)
        audit.record(session, principal.user_id, "read", "case", case.id, remote=remote)
        data = summary(case)
        data["clinical_question"] = case.clinical_question
        data["studies"] = [
            {
                "study_instance_uid": s.study_uid,
                "accession_number": s.accession_number,
                "study_date": s.study_date,
                "description": s.description,
                "modalities": [m for m in s.modalities.split("\\") if m],
                "instance_count": s.instance_count,
                "completed_at": s.completed_at.isoformat() if s.completed_at else None,
                "series": [
                    {
                        "series_instance_uid": se.series_uid,
                        "modality": se.modality,
                        "series_number": se.series_number,
                        "description": se.description,
                        "body_part": se.body_part,
                        "instance_count": se.instance_count,
                    }
                    for se in s.series
                ],
            }
            for s in case.studies
        ]
        data["reports"] = [
            {
                "version": r.version,
                "status": r.status,
                "text": r.text,
                "author": {
                    "id": r.author.id,
                    "username": r.author.username,
                    "name": r.author.display_name,
                },
                "created_at": r.created_at.isoformat(),
            }
            for r in case.reports
        ]
        data["timeline"] = [
            {"at": e.at.isoformat(), "kind": e.kind, "actor_id": e.actor_id, "detail": e.detail}
            for e in case.events
        ]
        data["ecgs"] = [ecgs.describe(record) for record in case.ecgs]
        data["tat"] = tat.compute(case.events)
        return data


def claim(db: Database, principal: Principal, case_id: int, remote: str) -> dict[str, Any]:
    """Take a routed case for oneself. A single conditional UPDATE, so two readers racing for
    the same case cannot both win, on SQLite or PostgreSQL."""
    if principal.role != Role.READER.value:
        raise Forbidden("only readers claim cases", "not_a_reader")
    with db.session() as session:
        case = _load_visible(session, principal, case_id)
        if case.reader_id == principal.user_id and case.status in OPEN_FOR_READING:
            return summary(case)  # claiming again is harmless
        won = session.execute(
            update(Case)
            .where(
                Case.id == case_id,
                Case.status == CaseStatus.ROUTED.value,
                Case.reader_id.is_(None),
                Case.centre_id == principal.centre_id,
            )
            .values(
                reader_id=principal.user_id, status=CaseStatus.CLAIMED.value, updated_at=utcnow()
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if won != 1:
            if case.reader_id is not None:
                raise Conflict(f"case {case_id} is already claimed", "already_claimed")
            raise Conflict(
                f"case {case_id} is {case.status}, not waiting on a worklist", "not_claimable"
            )
        timeline.record(session, case_id, timeline.Event.CLAIMED, actor_id=principal.user_id)
        audit.record(session, principal.user_id, "claim", "case", case_id, remote=remote)
        session.expire(case)
        return summary(session.get_one(Case, case_id))


def mark_complete(db: Database, principal: Principal, case_id: int, remote: str) -> dict[str, Any]:
    """The sender (or an admin) says every image has arrived: complete the case's studies now
    instead of waiting for the quiet period, so it is routed at once."""
    if principal.role not in (Role.CLINIC.value, Role.ADMIN.value):
        raise Forbidden("only the sending facility or an admin marks a case complete", "forbidden")
    with db.session() as session:
        case = _load_visible(session, principal, case_id)
        reason = f"marked complete by {principal.username}"
        timeline.record(
            session, case_id, timeline.Event.MARKED_COMPLETE, actor_id=principal.user_id
        )
        for study_uid in session.scalars(select(Study.study_uid).where(Study.case_id == case.id)):
            ingest.complete_study(session, study_uid, reason)
        audit.record(session, principal.user_id, "mark_complete", "case", case_id, remote=remote)
        session.flush()
        session.expire(case)
        return summary(session.get_one(Case, case_id))
