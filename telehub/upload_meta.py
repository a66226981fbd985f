"""What a clinic says about an upload (priority, clinical question) reaches the case(s) the
upload creates.

The portal sends these with the upload session; they are applied to each new study's case
before the study is completed, so routing (whose rules may match on priority) and the SLA
clock see the clinic's priority from the start. A study that was already complete only gets a
raise of priority (with the SLA recomputed, as for any priority change) and a question it lacked.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select

from telehub import escalation
from telehub.auth import Principal
from telehub.config import Settings
from telehub.db import Database
from telehub.db.models import PRIORITY_RANK, Case, CaseStatus, Priority, Study
from telehub.errors import Invalid

#: The keys of an upload session's metadata the hub acts on (others, e.g. a tus client's
#: "filename", are kept but ignored).
PRIORITY = "priority"
QUESTION = "clinical_question"
MAX_QUESTION_CHARS = 4000


def check(meta: dict[str, str]) -> None:
    """Refuse, at creation, metadata that could not be applied later."""
    priority = meta.get(PRIORITY)
    if priority is not None and priority not in {p.value for p in Priority}:
        allowed = ", ".join(p.value for p in Priority)
        raise Invalid(f"priority must be one of {allowed}", "bad_priority")
    if len(meta.get(QUESTION, "")) > MAX_QUESTION_CHARS:
        raise Invalid(
            f"clinical_question is longer than {MAX_QUESTION_CHARS} characters", "too_long"
        )


def wanted(meta: dict[str, str]) -> bool:
    return bool(meta.get(PRIORITY) or meta.get(QUESTION, "").strip())


def apply(
    db: Database,
    settings: Settings,
    who: Principal,
    study_uids: Iterable[str],
    meta: dict[str, str],
) -> list[int]:
    """Give the cases of these studies (the clinic's own) the upload's priority and question;
    returns the ids of the cases changed."""
    priority = meta.get(PRIORITY) or None
    question = meta.get(QUESTION, "").strip()[:MAX_QUESTION_CHARS]
    changed: list[int] = []
    with db.session() as session:
        query = (
            select(Case)
            .join(Study, Study.case_id == Case.id)
            .where(
                Study.study_uid.in_(sorted(set(study_uids))),
                Case.origin_facility_id == who.facility_id,
            )
            .order_by(Case.id)
        )
        if session.get_bind().dialect.name != "sqlite":
            query = query.with_for_update(of=Case)
        cases = {case.id: case for case in session.scalars(query)}.values()
        for case in cases:
            touched = False
            if question and not case.clinical_question:
                case.clinical_question = question
                touched = True
            if priority and _should_set(case, priority):
                touched = True
                if case.status == CaseStatus.RECEIVING.value:  # no SLA clock yet: routing starts it
                    case.priority = priority
                    case.priority_rank = PRIORITY_RANK[Priority(priority)]
                else:
                    escalation.apply_priority(
                        settings, session, case, priority, who, reason="upload"
                    )
            if touched:
                changed.append(case.id)
    return changed


def _should_set(case: Case, priority: str) -> bool:
    """A case still receiving takes the clinic's priority; a later one only a raise of it."""
    if case.status == CaseStatus.FINAL.value or case.priority == priority:
        return False
    if case.status == CaseStatus.RECEIVING.value:
        return True
    return PRIORITY_RANK[Priority(priority)] < PRIORITY_RANK[Priority(case.priority)]


def case_ids(db: Database, who: Principal, study_uids: Iterable[str]) -> list[int]:
    """The clinic's cases holding these studies (what the portal links to)."""
    uids = sorted(set(study_uids))
    if not uids:
        return []
    with db.reader() as session:
        return list(
            session.scalars(
                select(Case.id)
                .join(Study, Study.case_id == Case.id)
                .where(Study.study_uid.in_(uids), Case.origin_facility_id == who.facility_id)
                .distinct()
                .order_by(Case.id)
            )
        )
