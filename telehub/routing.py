"""Routing: which reading centre's worklist a complete case goes to.

First cut (the rules engine comes later): the reading centres linked to the case's origin
facility for the case's service (imaging or ECG), preferring a link for the study's modality over
a catch-all link, and a county centre over a tertiary one. Idempotent: a routed case is left as
it is, so a repeated or duplicated task changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from telehub import outbox, timeline
from telehub.db import Database
from telehub.db.models import (
    Case,
    CaseKind,
    CaseStatus,
    Facility,
    ReadingCentre,
    ReadingLink,
    Service,
    Tier,
)

_TIER_PREFERENCE = {Tier.COUNTY.value: 0, Tier.TERTIARY.value: 1}


@dataclass(frozen=True)
class RoutingDecision:
    case_id: int
    centre_id: int | None
    rule: str
    changed: bool


def service_for(kind: str) -> str:
    return Service.ECG.value if kind == CaseKind.ECG.value else Service.IMAGING.value


def route_case(db: Database, case_id: int, outbox_id: int | None = None) -> RoutingDecision:
    with db.session() as session:
        case = session.get(Case, case_id, with_for_update=not db.is_sqlite)
        if case is None:
            outbox.mark_done(session, outbox_id)
            return RoutingDecision(case_id, None, "case not found", changed=False)
        if case.status != CaseStatus.COMPLETE.value:
            outbox.mark_done(session, outbox_id)
            return RoutingDecision(case_id, case.centre_id, "already routed", changed=False)
        centre, rule = _choose_centre(session, case)
        if centre is None:
            case.status = CaseStatus.UNROUTABLE.value
            timeline.record(session, case.id, timeline.Event.UNROUTABLE, rule=rule)
        else:
            case.centre_id = centre.id
            case.status = CaseStatus.ROUTED.value
            timeline.record(
                session,
                case.id,
                timeline.Event.ROUTED,
                centre_id=centre.id,
                centre=centre.name,
                rule=rule,
            )
        outbox.mark_done(session, outbox_id)
        return RoutingDecision(case_id, centre.id if centre else None, rule, changed=True)


def _choose_centre(session: Session, case: Case) -> tuple[ReadingCentre | None, str]:
    service = service_for(case.kind)
    modalities = {m for s in case.studies for m in s.modalities.split("\\") if m}
    rows = session.execute(
        select(ReadingLink, ReadingCentre, Facility)
        .join(ReadingCentre, ReadingCentre.id == ReadingLink.centre_id)
        .join(Facility, Facility.id == ReadingCentre.facility_id)
        .where(ReadingLink.origin_facility_id == case.origin_facility_id)
        .where(ReadingCentre.service == service)
    ).all()
    candidates = [
        (link.modality is None, _TIER_PREFERENCE.get(fac.tier, 2), centre.id, centre, link)
        for link, centre, fac in rows
        if link.modality is None or link.modality in modalities
    ]
    if not candidates:
        return None, f"no {service} reading centre is linked to the origin facility"
    catch_all, _, _, centre, link = min(candidates, key=lambda c: c[:3])
    scope = "all modalities" if catch_all else f"modality {link.modality}"
    return centre, f"default: origin's {service} reading centre ({scope})"
