"""Who may see which case: the one rule every service that reads case data applies."""

from __future__ import annotations

from sqlalchemy import ColumnElement, exists, false, or_, select, true

from telehub.auth import Principal
from telehub.db.models import (
    Case,
    CaseEvent,
    Consult,
    ConsultParticipant,
    ConsultStatus,
    ReadingCentre,
    Role,
)
from telehub.timeline import Event


def visible_to(principal: Principal) -> ColumnElement[bool]:
    """Which cases a user may see: a clinic its facility's, a reader its centre's (and those
    its centre sent up a tier); anyone, the case of an open consult they take part in."""
    if principal.role == Role.ADMIN.value:
        return true()
    if principal.role == Role.CLINIC.value:
        return or_(
            Case.origin_facility_id == principal.facility_id, _in_open_consult(principal.user_id)
        )
    if principal.role == Role.READER.value:
        clauses: list[ColumnElement[bool]] = [Case.reader_id == principal.user_id]
        if principal.centre_id is not None:
            clauses.append(Case.centre_id == principal.centre_id)
            clauses.append(_sent_up_from(principal.centre_id))
        clauses.append(_in_open_consult(principal.user_id))
        return or_(*clauses)
    return false()


def _in_open_consult(user_id: int) -> ColumnElement[bool]:
    """The case of an open consult the user is invited to or in: a specialist called in must
    open the same study and ECG in the hub's viewer (shared viewing), for as long as the
    consult is open. Last in the OR, like _sent_up_from."""
    return exists().where(
        Consult.case_id == Case.id,
        Consult.status == ConsultStatus.OPEN.value,
        ConsultParticipant.consult_id == Consult.id,
        ConsultParticipant.user_id == user_id,
    )


def _sent_up_from(centre_id: int) -> ColumnElement[bool]:
    """Cases the centre sent up a tier (escalation or second opinion), so its readers can
    follow them. A correlated EXISTS on the timeline's (case_id, kind) index, last in the OR:
    rows the centre or reader arms already admit never evaluate it, and a query driven by
    another index (the worklist's) keeps that index."""
    return exists().where(
        CaseEvent.case_id == Case.id,
        CaseEvent.kind.in_((Event.ESCALATED, Event.SECOND_OPINION)),
        CaseEvent.detail["from_centre_id"].as_integer() == centre_id,
    )


def visible_to_facility(facility_id: int) -> ColumnElement[bool]:
    """What a facility's own systems (its DICOM AE title) may see: the union of what its clinic
    users and its readers see, i.e. the cases it sent and those routed to its reading centres."""
    centres = select(ReadingCentre.id).where(ReadingCentre.facility_id == facility_id)
    return or_(Case.origin_facility_id == facility_id, Case.centre_id.in_(centres))
