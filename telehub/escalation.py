"""Moving a case: up a tier (a reader's escalation, a second opinion, or the SLA's automatic
escalation of an unclaimed case) and up or down the queue (a priority change).

Every move is one conditional UPDATE that names the state it expects (centre, reader, status),
so two escalations, or a claim racing an escalation, can never both win; the loser gets 409 (or,
in the SLA sweep, nothing happens).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from telehub import audit, outbox, routing, sla, timeline
from telehub.access import visible_to
from telehub.auth import Principal
from telehub.case_summaries import one as summary_of
from telehub.config import Settings
from telehub.db import Database
from telehub.db.models import (
    PRIORITY_RANK,
    Case,
    CaseStatus,
    Priority,
    ReadingCentre,
    Role,
)
from telehub.db.types import utcnow
from telehub.errors import Conflict, Forbidden, Invalid, NotFound

#: Statuses a centre still works on; only these can go up a tier.
OPEN_AT_CENTRE = (CaseStatus.ROUTED.value, CaseStatus.CLAIMED.value, CaseStatus.PRELIMINARY.value)


def _load(session: Session, principal: Principal, case_id: int) -> Case:
    case = session.scalar(select(Case).where(Case.id == case_id, visible_to(principal)))
    if case is None:
        raise NotFound(f"case {case_id} not found")  # missing or not yours: the same answer
    return case


def move_up(
    session: Session,
    settings: Settings,
    case: Case,
    target: ReadingCentre,
    *,
    expect_reader_id: int | None,
    second_opinion: bool = False,
    due_before: datetime | None = None,
) -> bool:
    """Move ``case`` from its centre to ``target``, releasing any claim; True when this call
    did it (the case was still as expected). ``due_before``: only if escalate_at has passed."""
    now = utcnow()
    source = case.centre
    assert source is not None
    facts = routing.facts_for(case)
    nxt = sla.next_escalate_at(settings, case.priority, now)
    if nxt is not None and routing.higher_centre(session, target, facts, now) is None:
        nxt = None  # nowhere further up to go
    stmt = update(Case).where(
        Case.id == case.id, Case.centre_id == source.id, Case.status.in_(OPEN_AT_CENTRE)
    )
    if expect_reader_id is None:
        stmt = stmt.where(Case.reader_id.is_(None))
    else:
        stmt = stmt.where(Case.reader_id == expect_reader_id)
    if due_before is not None:
        stmt = stmt.where(Case.status == CaseStatus.ROUTED.value, Case.escalate_at <= due_before)
    values: dict[str, Any] = {
        "centre_id": target.id,
        "reader_id": None,
        "lease_expires_at": None,
        "claim_kind": None,
        "claimed_at": None,
        "status": CaseStatus.ROUTED.value,
        "escalations": Case.escalations + 1,
        "escalate_at": nxt,
        "updated_at": now,
    }
    if second_opinion:
        values["second_opinion"] = True
    done = session.execute(
        stmt.values(**values).execution_options(synchronize_session=False)
    ).rowcount
    if done == 1:
        outbox.enqueue(session, routing.ASSIGN_TASK, case_id=case.id)
        session.expire(case)
    return done == 1


def _move_detail(source: ReadingCentre, target: ReadingCentre, by: str) -> dict[str, Any]:
    return {
        "from": source.code,
        "from_centre_id": source.id,
        "to": target.code,
        "to_centre_id": target.id,
        "centre_id": target.id,
        "centre": target.code,
        "centre_name": target.name,
        "by": by,
    }


def escalate(
    db: Database,
    settings: Settings,
    principal: Principal,
    case_id: int,
    reason: Any,
    *,
    second_opinion: bool = False,
    remote: str = "",
) -> dict[str, Any]:
    """A reader sends a case up a tier (with a reason), or asks the tier above for a second
    opinion; preliminary reports stay with the case."""
    what = "a second opinion" if second_opinion else "escalation"
    if principal.role != Role.READER.value:
        raise Forbidden(f"only readers ask for {what}", "not_a_reader")
    if not isinstance(reason, str) or not reason.strip():
        raise Invalid(f"{what} needs a reason", "reason_required")
    reason = reason.strip()[:2000]
    with db.session() as session:
        case = _load(session, principal, case_id)
        holder = case.reader_id == principal.user_id
        unclaimed_here = case.reader_id is None and case.centre_id == principal.centre_id
        if case.status not in OPEN_AT_CENTRE or not (holder or unclaimed_here):
            if case.status == CaseStatus.FINAL.value:
                raise Conflict(f"case {case_id} already has a final report", "case_final")
            raise Forbidden(
                f"only the reader holding case {case_id}, or a reader of its centre while it is "
                "unclaimed, may ask for " + what,
                "not_your_case",
            )
        source = case.centre
        assert source is not None
        target = routing.higher_centre(session, source, routing.facts_for(case), utcnow())
        if target is None:
            raise Conflict(
                f"case {case_id} is at {source.code} ({source.facility.tier}); no higher "
                f"{source.service} reading centre in the grid can read it",
                "top_tier",
            )
        expected = principal.user_id if holder else None
        if not move_up(
            session,
            settings,
            case,
            target,
            expect_reader_id=expected,
            second_opinion=second_opinion,
        ):
            raise Conflict(
                f"case {case_id} changed meanwhile; reload and try again", "case_changed"
            )
        kind = timeline.Event.SECOND_OPINION if second_opinion else timeline.Event.ESCALATED
        label = "second opinion requested" if second_opinion else "escalated"
        timeline.record(
            session,
            case_id,
            kind,
            actor_id=principal.user_id,
            reason=reason,
            rule=f"{label} by {principal.username}",
            **_move_detail(source, target, principal.username),
        )
        audit.record(
            session,
            principal.user_id,
            "second_opinion" if second_opinion else "escalate",
            "case",
            case_id,
            remote=remote,
            to=target.code,
        )
        session.flush()
        return summary_of(session, case_id)


def escalate_overdue(session: Session, settings: Settings, case: Case, now: datetime) -> bool:
    """The SLA's automatic escalation of a case left unclaimed past escalate_at; True when it
    moved. With nowhere higher to go, escalate_at is cleared so the sweep stops looking."""
    if case.centre is None:
        return False
    target = routing.higher_centre(session, case.centre, routing.facts_for(case), now)
    if target is None:
        session.execute(
            update(Case)
            .where(Case.id == case.id, Case.escalate_at <= now)
            .values(escalate_at=None)
            .execution_options(synchronize_session=False)
        )
        return False
    source = case.centre
    waited = sla.escalate_after(settings, case.priority)
    if not move_up(session, settings, case, target, expect_reader_id=None, due_before=now):
        return False
    timeline.record(
        session,
        case.id,
        timeline.Event.ESCALATED,
        rule=f"sla: unclaimed after {waited:g} s",
        reason=f"unclaimed at {source.code} after {waited:g} s ({case.priority} SLA)",
        **_move_detail(source, target, "sla"),
    )
    return True


def apply_priority(
    settings: Settings,
    session: Session,
    case: Case,
    priority: str,
    principal: Principal,
    **detail: Any,
) -> None:
    """Give a case another priority: the SLA recomputed from the same start and a
    PRIORITY_CHANGED event (the one way the API and uploads change it)."""
    old = case.priority
    case.priority = priority
    case.priority_rank = PRIORITY_RANK[Priority(priority)]
    sla.reprioritise(settings, session, case)
    timeline.record(
        session,
        case.id,
        timeline.Event.PRIORITY_CHANGED,
        actor_id=principal.user_id,
        **{"from": old, "to": priority, "by": principal.username},
        sla_deadline=case.sla_deadline.isoformat() if case.sla_deadline else None,
        **detail,
    )


def change_priority(
    db: Database,
    settings: Settings,
    principal: Principal,
    case_id: int,
    priority: Any,
    remote: str = "",
) -> dict[str, Any]:
    """The origin clinic, a reader of the case or an admin changes its priority; the SLA is
    recomputed from the same start (the case's completion)."""
    allowed = [p.value for p in Priority]
    if priority not in allowed:
        raise Invalid(f"priority must be one of {', '.join(allowed)}", "bad_priority")
    with db.session() as session:
        case = _load(session, principal, case_id)
        if principal.role == Role.READER.value and not (
            case.reader_id == principal.user_id or case.centre_id == principal.centre_id
        ):
            raise Forbidden(f"case {case_id} is no longer at your centre", "not_your_case")
        if case.status == CaseStatus.FINAL.value:
            raise Conflict(f"case {case_id} already has a final report", "case_final")
        if case.priority != priority:
            apply_priority(settings, session, case, priority, principal)
            audit.record(
                session, principal.user_id, "priority", "case", case.id, remote=remote, to=priority
            )
        session.flush()
        return summary_of(session, case.id)
