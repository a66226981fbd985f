"""Routing: which reading centre's worklist a complete case goes to, and why.

Order of decision (see docs/routing.md):
1. enabled routing rules in ``position`` order; the first whose centre can read the case wins;
2. the default: the origin's linked reading centre for the case's service (a link for the
   study's modality before a catch-all link, a county centre before a tertiary one);
3. up the grid: the origin's lead hospitals (``Facility.parent_id`` chain), nearest first;
4. nothing can read it: UNROUTABLE, with the reason, for an admin to route by hand.

"Can read" means: same service, the centre's modality list (if any) covers the case's image
modalities, and it offers the case's subspecialty (if any). A STAT case skips a centre that is
closed now (``telehub.service_hours``) in favour of an open one up the grid; when nothing open
can read it, it stays with the closed centre rather than being unroutable.

Idempotent: only a COMPLETE case is routed, under a row lock (PostgreSQL) or the SQLite writer
lock, so a repeated or duplicated task changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from telehub import audit, modalities, outbox, rules, service_hours, sla, timeline
from telehub.auth import Principal
from telehub.case_summaries import one as summary_of
from telehub.config import Settings
from telehub.db import Database
from telehub.db.models import (
    Case,
    CaseKind,
    CaseStatus,
    Facility,
    Priority,
    ReadingCentre,
    ReadingLink,
    Role,
    RoutingRule,
    Series,
    Service,
    Study,
    Tier,
)
from telehub.db.types import utcnow
from telehub.errors import Conflict, Forbidden, Invalid, NotFound

ASSIGN_TASK = "telehub.assign_case"
_TIER_PREFERENCE = {Tier.COUNTY.value: 0, Tier.TERTIARY.value: 1}
#: Non-image objects a study may carry beside its images; they do not limit who can read it.
#: Statuses in which a case can still be (re)routed by an admin.
_ROUTABLE_BY_ADMIN = (
    CaseStatus.COMPLETE.value,
    CaseStatus.UNROUTABLE.value,
    CaseStatus.ROUTED.value,
)


@dataclass(frozen=True)
class RoutingDecision:
    case_id: int
    centre_id: int | None
    rule: str
    changed: bool


@dataclass(frozen=True)
class Choice:
    """The chosen centre and the rule that chose it; no centre: ``rule`` says why not."""

    centre: ReadingCentre | None
    rule: str
    rule_id: int | None = None


def service_for(kind: str) -> str:
    return Service.ECG.value if kind == CaseKind.ECG.value else Service.IMAGING.value


# ----- facts and capabilities ----------------------------------------------------------------
def facts_for(case: Case) -> rules.CaseFacts:
    return rules.CaseFacts.of(
        kind=case.kind,
        priority=case.priority,
        origin_facility_id=case.origin_facility_id,
        origin_tier=case.origin.tier,
        modalities=modalities.of_case(case),
        body_part=case.body_part,
        subspecialty=case.subspecialty,
    )


def first_body_part(session: Session, case_id: int) -> str:
    """The case's body part: the first non-empty one of its series."""
    return (
        session.scalar(
            select(Series.body_part)
            .join(Study, Study.id == Series.study_id)
            .where(Study.case_id == case_id, Series.body_part != "")
            .order_by(Study.id, Series.id)
            .limit(1)
        )
        or ""
    )


def cannot_read(centre: ReadingCentre, facts: rules.CaseFacts) -> str | None:
    """Why ``centre`` cannot read the case, or None when it can."""
    service = service_for(facts.kind)
    if centre.service != service:
        return f"{centre.code} reads {centre.service}, not {service}"
    if service == Service.IMAGING.value and centre.modalities:
        offered = {m.strip().upper() for m in centre.modalities}
        missing = facts.modalities - modalities.NON_IMAGE - offered
        if missing:
            only, absent = ", ".join(sorted(offered)), ", ".join(sorted(missing))
            return f"{centre.code} reads only {only} (not {absent})"
    if facts.subspecialty and facts.subspecialty not in {
        s.strip().lower() for s in centre.subspecialties
    }:
        return f"{centre.code} offers no {facts.subspecialty} subspecialty"
    return None


def is_open(centre: ReadingCentre, now: datetime) -> bool:
    return service_hours.is_open(centre.service_hours, centre.timezone, now)


def _ancestors(session: Session, facility_id: int) -> Iterator[Facility]:
    """The facility's lead hospitals, nearest first (a cycle in the grid ends the walk)."""
    seen = {facility_id}
    facility = session.get(Facility, facility_id)
    while facility is not None and facility.parent_id is not None:
        if facility.parent_id in seen:
            return
        seen.add(facility.parent_id)
        facility = session.get(Facility, facility.parent_id)
        if facility is not None:
            yield facility


def _centres_at(session: Session, facility_id: int, service: str) -> list[ReadingCentre]:
    return list(
        session.scalars(
            select(ReadingCentre)
            .where(ReadingCentre.facility_id == facility_id, ReadingCentre.service == service)
            .order_by(ReadingCentre.id)
        )
    )


def up_the_grid(
    session: Session,
    facility_id: int,
    facts: rules.CaseFacts,
    now: datetime,
    notes: list[str],
    require_open: bool = False,
) -> ReadingCentre | None:
    """The nearest centre above ``facility_id`` in the grid that can read the case (and is
    open, when asked); what was passed over goes to ``notes``."""
    service = service_for(facts.kind)
    for facility in _ancestors(session, facility_id):
        for centre in _centres_at(session, facility.id, service):
            problem = cannot_read(centre, facts)
            if problem is None and require_open and not is_open(centre, now):
                problem = f"{centre.code} is closed now"
            if problem is None:
                return centre
            notes.append(problem)
    return None


def higher_centre(
    session: Session, centre: ReadingCentre, facts: rules.CaseFacts, now: datetime
) -> ReadingCentre | None:
    """Where a case at ``centre`` goes up a tier: the nearest centre of the same service above
    the centre's facility that can read it; for STAT an open one if there is one."""
    notes: list[str] = []
    stat = facts.priority == Priority.STAT.value
    found = up_the_grid(session, centre.facility_id, facts, now, notes, require_open=stat)
    if found is None and stat:
        found = up_the_grid(session, centre.facility_id, facts, now, notes)
    return found


# ----- the choice ----------------------------------------------------------------------------
def choose(session: Session, facts: rules.CaseFacts, now: datetime) -> Choice:
    """Pick the centre for a case with these facts (see the module docstring)."""
    notes: list[str] = []
    stat = facts.priority == Priority.STAT.value
    enabled = session.scalars(
        select(RoutingRule)
        .where(RoutingRule.enabled.is_(True))
        .order_by(RoutingRule.position, RoutingRule.id)
    )
    for rule in rules.matching(enabled, facts):
        centre = rule.centre
        label = f"rule {rule.name}: {rules.why(rule)}"
        problem = cannot_read(centre, facts)
        if problem is not None:
            notes.append(f"rule {rule.name} skipped: {problem}")
            continue
        if stat and not is_open(centre, now):
            higher = up_the_grid(session, centre.facility_id, facts, now, notes, True)
            if higher is not None:
                return Choice(
                    higher,
                    f"{label}; {centre.code} closed for a STAT case, up the grid to {higher.code}",
                    rule.id,
                )
            return Choice(centre, f"{label} (closed now; nothing open up the grid)", rule.id)
        return Choice(centre, _with_notes(label, notes), rule.id)
    return _default(session, facts, now, notes)


def _default(session: Session, facts: rules.CaseFacts, now: datetime, notes: list[str]) -> Choice:
    service = service_for(facts.kind)
    stat = facts.priority == Priority.STAT.value
    rows = session.execute(
        select(ReadingLink, ReadingCentre, Facility)
        .join(ReadingCentre, ReadingCentre.id == ReadingLink.centre_id)
        .join(Facility, Facility.id == ReadingCentre.facility_id)
        .where(ReadingLink.origin_facility_id == facts.origin_facility_id)
        .where(ReadingCentre.service == service)
    ).all()
    linked = sorted(
        (
            (link.modality is None, _TIER_PREFERENCE.get(fac.tier, 2), centre.id, centre, link)
            for link, centre, fac in rows
            if link.modality is None or link.modality.upper() in facts.modalities
        ),
        key=lambda c: c[:3],
    )
    closed: ReadingCentre | None = None
    for catch_all, _, _, centre, link in linked:
        problem = cannot_read(centre, facts)
        if problem is not None:
            notes.append(problem)
            continue
        if stat and not is_open(centre, now):
            notes.append(f"{centre.code} is closed now")
            closed = closed or centre
            continue
        scope = "all modalities" if catch_all else f"modality {link.modality}"
        return Choice(
            centre, _with_notes(f"default: origin's {service} reading centre ({scope})", notes)
        )
    higher = up_the_grid(session, facts.origin_facility_id, facts, now, notes, require_open=stat)
    if higher is not None:
        tier = higher.facility.tier
        return Choice(higher, _with_notes(f"default: up the grid to {tier} centre", notes))
    if closed is not None:
        return Choice(closed, f"default: origin's {service} reading centre (closed now)")
    if stat:  # nothing open: a closed centre that can read beats no centre at all
        higher = up_the_grid(session, facts.origin_facility_id, facts, now, [])
        if higher is not None:
            return Choice(higher, f"default: up the grid to {higher.code} (closed now)")
    if not notes:
        return Choice(
            None, f"no {service} reading centre is linked to the origin facility or up its grid"
        )
    reasons = "; ".join(dict.fromkeys(notes))
    return Choice(None, f"no {service} reading centre can read it: {reasons}")


def _with_notes(label: str, notes: list[str]) -> str:
    return f"{label} ({'; '.join(dict.fromkeys(notes))})" if notes else label


# ----- the task ------------------------------------------------------------------------------
def route_case(
    db: Database,
    case_id: int,
    outbox_id: int | None = None,
    settings: Settings | None = None,
) -> RoutingDecision:
    """Route a COMPLETE case: body part, SLA from its completion, centre, timeline, then the
    assignment job. Anything else is left as it is (a repeated task changes nothing)."""
    settings = settings or Settings()
    with db.session() as session:
        case = session.get(Case, case_id, with_for_update=not db.is_sqlite)
        if case is None:
            outbox.mark_done(session, outbox_id)
            return RoutingDecision(case_id, None, "case not found", changed=False)
        if case.status != CaseStatus.COMPLETE.value:
            outbox.mark_done(session, outbox_id)
            return RoutingDecision(case_id, case.centre_id, "already routed", changed=False)
        now = utcnow()
        if not case.body_part:
            case.body_part = first_body_part(session, case.id)
        sla.apply(settings, case, sla.start_of(session, case.id) or now)
        choice = choose(session, facts_for(case), now)
        if choice.centre is None:
            case.status = CaseStatus.UNROUTABLE.value
            timeline.record(
                session, case.id, timeline.Event.UNROUTABLE, rule=choice.rule, reason=choice.rule
            )
        else:
            _place(session, settings, case, choice.centre, now)
            timeline.record(
                session,
                case.id,
                timeline.Event.ROUTED,
                **_routed_detail(case, choice.centre, choice.rule, choice.rule_id),
            )
            outbox.enqueue(session, ASSIGN_TASK, case_id=case.id)
        outbox.mark_done(session, outbox_id)
        centre_id = choice.centre.id if choice.centre else None
        return RoutingDecision(case_id, centre_id, choice.rule, changed=True)


def _place(
    session: Session,
    settings: Settings,
    case: Case,
    centre: ReadingCentre,
    now: datetime,
    fresh_timer: bool = False,
) -> None:
    """Put the case on ``centre``'s worklist; automatic escalation only if there is a tier
    above it to go to. ``fresh_timer``: the centre gets the full unclaimed grace from now (a
    manual route), instead of the one counted from the case's completion."""
    case.centre_id = centre.id
    case.centre = centre
    case.status = CaseStatus.ROUTED.value
    if fresh_timer:
        case.escalate_at = sla.next_escalate_at(settings, case.priority, now)
    if (
        case.escalate_at is not None
        and higher_centre(session, centre, facts_for(case), now) is None
    ):
        case.escalate_at = None


def _routed_detail(
    case: Case, centre: ReadingCentre, rule: str, rule_id: int | None
) -> dict[str, Any]:
    return {
        "centre_id": centre.id,
        "centre": centre.code,
        "centre_name": centre.name,
        "rule": rule,
        "rule_id": rule_id,
        "priority": case.priority,
        "sla_deadline": case.sla_deadline.isoformat() if case.sla_deadline else None,
    }


# ----- admin: manual routing and preview -----------------------------------------------------
def _require_admin(principal: Principal) -> None:
    if principal.role != Role.ADMIN.value:
        raise Forbidden("only an administrator may do this", "admin_only")


def _centre_by_code(session: Session, code: Any) -> ReadingCentre:
    if not isinstance(code, str) or not code.strip():
        raise Invalid("centre_code is required", "centre_code_required")
    centre = session.scalar(select(ReadingCentre).where(ReadingCentre.code == code.strip()))
    if centre is None:
        raise Invalid(f"no reading centre has the code {code!r}", "unknown_centre")
    return centre


def manual_route(
    db: Database,
    settings: Settings,
    principal: Principal,
    case_id: int,
    centre_code: Any,
    remote: str = "",
) -> dict[str, Any]:
    """An admin puts an unroutable or misrouted (unclaimed) case on a centre's worklist."""
    _require_admin(principal)
    with db.session() as session:
        centre = _centre_by_code(session, centre_code)
        case = session.get(Case, case_id, with_for_update=not db.is_sqlite)
        if case is None:
            raise NotFound(f"case {case_id} not found")
        if case.status not in _ROUTABLE_BY_ADMIN or case.reader_id is not None:
            raise Conflict(
                f"case {case_id} is {case.status}"
                + (" and held by a reader; unclaim or reassign it first" if case.reader_id else "")
                + "; only complete, unroutable or unclaimed routed cases can be routed",
                "not_routable",
            )
        service = service_for(case.kind)
        if centre.service != service:
            raise Invalid(
                f"{centre.code} reads {centre.service}; case {case_id} needs {service}",
                "wrong_service",
            )
        now = utcnow()
        if case.sla_deadline is None:
            sla.apply(settings, case, sla.start_of(session, case.id) or now)
        if not case.body_part:
            case.body_part = first_body_part(session, case.id)
        previous = case.centre.code if case.centre else None
        _place(session, settings, case, centre, now, fresh_timer=True)
        detail = _routed_detail(case, centre, f"manual by {principal.username}", None)
        timeline.record(
            session,
            case.id,
            timeline.Event.ROUTED,
            actor_id=principal.user_id,
            previous_centre=previous,
            **detail,
        )
        outbox.enqueue(session, ASSIGN_TASK, case_id=case.id)
        audit.record(
            session, principal.user_id, "route", "case", case.id, remote=remote, centre=centre.code
        )
        session.flush()
        return summary_of(session, case.id)


def preview(db: Database, principal: Principal, body: dict[str, Any]) -> dict[str, Any]:
    """Which centre and rule a case with these attributes would get now (nothing changes)."""
    _require_admin(principal)
    kind = str(body.get("kind", CaseKind.IMAGING.value))
    priority = str(body.get("priority", Priority.ROUTINE.value))
    if kind not in {k.value for k in CaseKind}:
        raise Invalid(f"kind must be one of {', '.join(k.value for k in CaseKind)}", "bad_kind")
    if priority not in {p.value for p in Priority}:
        raise Invalid(
            f"priority must be one of {', '.join(p.value for p in Priority)}", "bad_priority"
        )
    modalities = body.get("modalities", [body["modality"]] if body.get("modality") else [])
    if not isinstance(modalities, list) or not all(isinstance(m, str) for m in modalities):
        raise Invalid("modalities must be a list of modality codes", "bad_modalities")
    with db.reader() as session:
        origin = _origin(session, body)
        facts = rules.CaseFacts.of(
            kind=kind,
            priority=priority,
            origin_facility_id=origin.id,
            origin_tier=origin.tier,
            modalities=modalities,
            body_part=str(body.get("body_part") or ""),
            subspecialty=str(body.get("subspecialty") or ""),
        )
        choice = choose(session, facts, utcnow())
        centre = choice.centre
        return {
            "routable": centre is not None,
            "centre": (
                {
                    "id": centre.id,
                    "code": centre.code,
                    "name": centre.name,
                    "facility": centre.facility.code,
                    "tier": centre.facility.tier,
                }
                if centre
                else None
            ),
            "rule": choice.rule,
            "rule_id": choice.rule_id,
        }


def _origin(session: Session, body: dict[str, Any]) -> Facility:
    code, fid = body.get("origin"), body.get("origin_facility_id")
    if isinstance(code, str) and code:
        found = session.scalar(select(Facility).where(Facility.code == code))
    elif isinstance(fid, int):
        found = session.get(Facility, fid)
    else:
        raise Invalid("origin (a facility code) or origin_facility_id is required", "bad_origin")
    if found is None:
        raise Invalid(f"unknown origin facility {code or fid!r}", "unknown_facility")
    return found
