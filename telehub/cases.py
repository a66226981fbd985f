"""Cases as each role may see them: lists, detail, and marking a case complete.

Claiming, assignment and leases live in telehub.assignment and telehub.leases.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from telehub import audit, case_summaries, ecgs, ingest, leases, tat, timeline
from telehub.access import visible_to
from telehub.auth import Principal
from telehub.config import Settings
from telehub.db import Database
from telehub.db.models import Case, CaseStatus, Role, Study
from telehub.errors import Forbidden, NotFound

#: Statuses of a case someone holds.
HELD = (CaseStatus.CLAIMED.value, CaseStatus.PRELIMINARY.value)


def load_visible(
    session: Session, principal: Principal, case_id: int, with_series: bool = False
) -> Case:
    """The case (with its studies) if the caller may see it; NotFound otherwise (missing or not
    theirs alike). ``with_series`` also loads the series, for the detail view."""
    studies = selectinload(Case.studies)
    case = session.scalar(
        select(Case)
        .where(Case.id == case_id, visible_to(principal))
        .options(studies.selectinload(Study.series) if with_series else studies)
    )
    if case is None:
        # The same answer whether the case is missing or another facility's: no probing.
        raise NotFound(f"case {case_id} not found")
    return case


def list_cases(
    db: Database,
    principal: Principal,
    remote: str,
    limit: int = 50,
    offset: int = 0,
    status: str | None = None,
) -> list[dict[str, Any]]:
    where = [visible_to(principal)]
    if status:
        where.append(Case.status == status)
    with db.session() as session:
        found = case_summaries.load(
            session,
            case_summaries.query(*where)
            .order_by(Case.arrived_at.desc(), Case.id.desc())
            .limit(limit)
            .offset(offset),
        )
        audit.record(
            session,
            principal.user_id,
            "list",
            "case",
            remote=remote,
            case_ids=[c["id"] for c in found],
        )
        return found


def _opened(session: Session, settings: Settings | None, principal: Principal, case: Case) -> None:
    """A reader opening a case: OPENED in the timeline the first time (a TAT milestone), and
    activity that renews the holder's lease."""
    if principal.role != Role.READER.value:
        return
    if not any(
        e.kind == timeline.Event.OPENED and e.actor_id == principal.user_id for e in case.events
    ):
        timeline.record(session, case.id, timeline.Event.OPENED, actor_id=principal.user_id)
        session.flush()
        session.expire(case, ["events"])  # the timeline shown includes this opening
    if settings is not None:
        leases.renew(settings, case, principal.user_id)


def detail(
    db: Database,
    principal: Principal,
    case_id: int,
    remote: str,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """The whole case. ``settings`` (the lease length) lets a reader's view renew their lease."""
    with db.session() as session:
        case = load_visible(session, principal, case_id, with_series=True)
        audit.record(session, principal.user_id, "read", "case", case.id, remote=remote)
        _opened(session, settings, principal, case)
        data = case_summaries.one(session, case.id)
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
        from telehub import reports  # the reports module owns what a version shows

        data["reports"] = reports.describe_all(case, principal)
        data["timeline"] = [
            {"at": e.at.isoformat(), "kind": e.kind, "actor_id": e.actor_id, "detail": e.detail}
            for e in case.events
        ]
        data["ecgs"] = [ecgs.describe(record) for record in case.ecgs]
        data["tat"] = tat.compute(case.events)
        return data


def mark_complete(db: Database, principal: Principal, case_id: int, remote: str) -> dict[str, Any]:
    """The sender (or an admin) says every image has arrived: complete the case's studies now
    instead of waiting for the quiet period, so it is routed at once."""
    if principal.role not in (Role.CLINIC.value, Role.ADMIN.value):
        raise Forbidden("only the sending facility or an admin marks a case complete", "forbidden")
    with db.session() as session:
        case = load_visible(session, principal, case_id)
        reason = f"marked complete by {principal.username}"
        timeline.record(
            session, case_id, timeline.Event.MARKED_COMPLETE, actor_id=principal.user_id
        )
        for study_uid in session.scalars(select(Study.study_uid).where(Study.case_id == case.id)):
            ingest.complete_study(session, study_uid, reason)
        audit.record(session, principal.user_id, "mark_complete", "case", case_id, remote=remote)
        session.flush()
        session.expire(case)
        return case_summaries.one(session, case_id)
