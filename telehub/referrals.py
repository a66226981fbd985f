"""Two-way referral (双向转诊): a case's patient is referred up a tier (上转) or back down for
rehabilitation (下转), with a reason and, through the green channel (绿色通道), a booked
appointment, exam or bed; the receiving facility tracks it to completion.

Where the patient is: the case's origin, or the receiving facility of the case's last completed
referral (a patient referred up and treated at the county hospital is referred down *from*
there). The direction must agree with the tiers of that facility and the receiving one.

Who sees a referral: both facilities' users, its author, whoever may see its case, and admins.
The receiving facility thereby sees the referral and the summary of that one case, nothing else
of the sending side. Only the receiving facility accepts, books, completes or declines it; only
the referring side (author or sending facility) cancels it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, or_, select, true
from sqlalchemy.orm import Session

from telehub import audit, case_summaries, timeline
from telehub.access import visible_to
from telehub.auth import Principal
from telehub.db import Database
from telehub.db.models import (
    BookingKind,
    Case,
    Facility,
    Patient,
    Referral,
    ReferralDirection,
    ReferralStatus,
    Report,
    ReportStatus,
    Role,
    Tier,
    User,
)
from telehub.db.types import utcnow
from telehub.errors import Conflict, Forbidden, Invalid, NotFound

TIER_RANK = {
    Tier.VILLAGE.value: 0,
    Tier.TOWNSHIP.value: 1,
    Tier.COUNTY.value: 2,
    Tier.TERTIARY.value: 3,
}
MAX_REASON = 4000
S = ReferralStatus
OPEN = (S.REQUESTED.value, S.ACCEPTED.value, S.BOOKED.value)
#: What the receiving facility may do from each status (booked -> booked: a new booking).
RECEIVER_MOVES: dict[str, frozenset[str]] = {
    S.REQUESTED.value: frozenset({S.ACCEPTED.value, S.BOOKED.value, S.DECLINED.value}),
    S.ACCEPTED.value: frozenset({S.BOOKED.value, S.COMPLETED.value, S.DECLINED.value}),
    S.BOOKED.value: frozenset({S.BOOKED.value, S.COMPLETED.value, S.DECLINED.value}),
}


def scope(principal: Principal) -> ColumnElement[bool]:
    """The referrals a user may see."""
    if principal.role == Role.ADMIN.value:
        return true()
    return or_(
        Referral.from_facility_id == principal.facility_id,
        Referral.to_facility_id == principal.facility_id,
        Referral.created_by == principal.user_id,
        Referral.case_id.in_(select(Case.id).where(visible_to(principal))),
    )


def parse_booking(raw: Any) -> dict[str, Any] | None:
    """``{"kind": appointment|exam|bed, "at": ISO time, "ref": text}``; a time without an offset
    is taken as UTC."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise Invalid('booking must be an object {"kind", "at", "ref"}', "bad_booking")
    kind, at, ref = raw.get("kind"), raw.get("at"), raw.get("ref", "")
    if not isinstance(kind, str) or kind not in {k.value for k in BookingKind}:
        raise Invalid("booking kind must be appointment, exam or bed", "bad_booking")
    try:
        when = datetime.fromisoformat(at) if isinstance(at, str) else None
    except ValueError:
        when = None
    if when is None:
        raise Invalid("booking at must be an ISO 8601 time", "bad_booking")
    if not isinstance(ref, str) or len(ref) > 100:
        raise Invalid("booking ref must be text of at most 100 characters", "bad_booking")
    at_utc = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return {"kind": kind, "at": at_utc, "ref": ref}


def patient_location(session: Session, case: Case) -> int:
    """The facility the case's patient is at: after a completed referral, its receiver."""
    last = session.scalar(
        select(Referral.to_facility_id)
        .where(Referral.case_id == case.id, Referral.status == S.COMPLETED.value)
        .order_by(Referral.completed_at.desc(), Referral.id.desc())
        .limit(1)
    )
    return last or case.origin_facility_id


def _check_direction(direction: str, source: Facility, target: Facility) -> None:
    lower, higher = TIER_RANK[source.tier], TIER_RANK[target.tier]
    ok = higher > lower if direction == ReferralDirection.UP.value else higher < lower
    if not ok:
        way = "higher" if direction == ReferralDirection.UP.value else "lower"
        raise Invalid(
            f"a{'n up' if way == 'higher' else ' down'}ward referral must go to a {way} tier: "
            f"{target.code} is {target.tier}, the patient is at {source.code} ({source.tier})",
            "bad_direction",
        )


def create(
    db: Database,
    principal: Principal,
    case_id: int,
    direction: str,
    to_facility: str,
    reason: str,
    booking: dict[str, Any] | None,
    remote: str,
) -> dict[str, Any]:
    """Refer the case's patient; with a booking (green channel) it is booked at once."""
    if direction not in {d.value for d in ReferralDirection}:
        raise Invalid('direction must be "up" or "down"', "bad_direction")
    if not isinstance(reason, str) or not reason.strip():
        raise Invalid("a referral needs a reason", "no_reason")
    if len(reason) > MAX_REASON:
        raise Invalid(f"reason is longer than {MAX_REASON} characters", "too_long")
    with db.session() as session:
        # Locked on PostgreSQL, so two referrals of one case cannot both pass the check below.
        case = session.get(Case, case_id, with_for_update=not db.is_sqlite)
        if case is None:
            raise NotFound(f"case {case_id} not found")
        here = patient_location(session, case)
        sees_case = session.scalar(select(Case.id).where(Case.id == case_id, visible_to(principal)))
        if sees_case is None and principal.facility_id != here:
            raise NotFound(f"case {case_id} not found")
        target = session.scalar(select(Facility).where(Facility.code == to_facility))
        if target is None:
            raise Invalid(f"unknown facility {to_facility!r}", "unknown_facility")
        source = session.get_one(Facility, here)
        _check_direction(direction, source, target)
        already = session.scalar(
            select(Referral.id).where(Referral.case_id == case_id, Referral.status.in_(OPEN))
        )
        if already is not None:
            raise Conflict(f"case {case_id} has an open referral ({already})", "referral_open")
        referral = Referral(
            case_id=case_id,
            patient_id=case.patient_id,
            direction=direction,
            from_facility_id=source.id,
            to_facility_id=target.id,
            reason=reason.strip(),
            status=(S.BOOKED if booking else S.REQUESTED).value,
            created_by=principal.user_id,
            **_booking_columns(booking),
        )
        session.add(referral)
        session.flush()
        timeline.record(
            session,
            case_id,
            timeline.Event.REFERRAL_CREATED,
            actor_id=principal.user_id,
            referral_id=referral.id,
            direction=direction,
            status=referral.status,
            from_facility_id=source.id,
            from_facility=source.code,
            to_facility_id=target.id,
            to_facility=target.code,
            booking=_booking_json(referral),
        )
        audit.record(
            session, principal.user_id, "create", "referral", referral.id, remote, case_id=case_id
        )
        return describe(session, principal, referral, with_case=True)


def _booking_columns(booking: dict[str, Any] | None) -> dict[str, Any]:
    if not booking:
        return {}
    return {
        "booking_kind": booking["kind"],
        "booking_at": booking["at"],
        "booking_ref": booking["ref"],
    }


def _booking_json(referral: Referral) -> dict[str, Any] | None:
    if not referral.booking_kind:
        return None
    return {
        "kind": referral.booking_kind,
        "at": referral.booking_at.isoformat() if referral.booking_at else None,
        "ref": referral.booking_ref,
    }


def update(
    db: Database,
    principal: Principal,
    referral_id: int,
    status: str,
    booking: dict[str, Any] | None,
    note: str,
    remote: str,
) -> dict[str, Any]:
    """Move a referral on: the receiver accepts, books, completes or declines; the referring
    side cancels. Anything else from the current status is a 409."""
    if status not in {s.value for s in ReferralStatus} or status == S.REQUESTED.value:
        raise Invalid(
            "status must be accepted, booked, completed, declined or cancelled", "bad_status"
        )
    if len(note) > MAX_REASON:
        raise Invalid(f"note is longer than {MAX_REASON} characters", "too_long")
    with db.session() as session:
        referral = session.scalar(
            select(Referral)
            .where(Referral.id == referral_id, scope(principal))
            .with_for_update(of=Referral)
        )
        if referral is None:
            raise NotFound(f"referral {referral_id} not found")
        admin = principal.role == Role.ADMIN.value
        if status == S.CANCELLED.value:
            if not (
                admin
                or principal.user_id == referral.created_by
                or principal.facility_id == referral.from_facility_id
            ):
                raise Forbidden("only the referring side cancels a referral", "not_referrer")
            allowed = referral.status in OPEN
        else:
            if not (admin or principal.facility_id == referral.to_facility_id):
                raise Forbidden("only the receiving facility updates a referral", "not_receiver")
            allowed = status in RECEIVER_MOVES.get(referral.status, frozenset())
        if not allowed:
            raise Conflict(
                f"referral {referral_id} is {referral.status}; it cannot become {status}",
                "bad_transition",
            )
        if status == S.BOOKED.value and booking is None:
            raise Invalid("a booked referral needs its booking", "booking_required")
        if status != S.BOOKED.value and booking is not None:
            raise Invalid("a booking goes with status booked", "bad_booking")
        previous = referral.status
        referral.status = status
        for column, value in _booking_columns(booking).items():
            setattr(referral, column, value)
        now = utcnow()
        referral.updated_at = now
        if status == S.COMPLETED.value:
            referral.completed_at = now
        timeline.record(
            session,
            referral.case_id,
            timeline.Event.REFERRAL_UPDATED,
            actor_id=principal.user_id,
            referral_id=referral.id,
            direction=referral.direction,
            status=status,
            previous=previous,
            from_facility_id=referral.from_facility_id,
            to_facility_id=referral.to_facility_id,
            booking=_booking_json(referral),
            note=note,
        )
        audit.record(
            session, principal.user_id, "update", "referral", referral.id, remote, status=status
        )
        return describe(session, principal, referral, with_case=False)


def get(db: Database, principal: Principal, referral_id: int, remote: str) -> dict[str, Any]:
    """A referral with the summary of its case (also for the receiving facility)."""
    with db.session() as session:
        referral = session.scalar(
            select(Referral).where(Referral.id == referral_id, scope(principal))
        )
        if referral is None:
            raise NotFound(f"referral {referral_id} not found")
        audit.record(session, principal.user_id, "read", "referral", referral.id, remote)
        audit.record(
            session,
            principal.user_id,
            "read",
            "case",
            referral.case_id,
            remote,
            via_referral=referral.id,
        )
        return describe(session, principal, referral, with_case=True)


def list_referrals(
    db: Database,
    principal: Principal,
    remote: str,
    direction: str | None = None,
    status: str | None = None,
    box: str | None = None,
    case_id: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Incoming and outgoing referrals of the caller's facility (admins: all), newest first."""
    query = select(Referral).where(scope(principal))
    if direction:
        query = query.where(Referral.direction == direction)
    if status:
        query = query.where(Referral.status == status)
    if box == "incoming":
        query = query.where(Referral.to_facility_id == principal.facility_id)
    elif box == "outgoing":
        query = query.where(
            or_(
                Referral.from_facility_id == principal.facility_id,
                Referral.created_by == principal.user_id,
            )
        )
    if case_id is not None:
        query = query.where(Referral.case_id == case_id)
    if start is not None:
        query = query.where(Referral.created_at >= start)
    if end is not None:
        query = query.where(Referral.created_at < end)
    query = query.order_by(Referral.created_at.desc(), Referral.id.desc()).limit(limit)
    with db.session() as session:
        found = list(session.scalars(query.offset(offset)))
        audit.record(
            session,
            principal.user_id,
            "list",
            "referral",
            remote=remote,
            referral_ids=[r.id for r in found],
        )
        return [describe(session, principal, r, with_case=False) for r in found]


def _facility(session: Session, facility_id: int) -> dict[str, Any]:
    fac = session.get_one(Facility, facility_id)
    return {"id": fac.id, "code": fac.code, "name": fac.name, "tier": fac.tier}


def describe(
    session: Session, principal: Principal, referral: Referral, with_case: bool
) -> dict[str, Any]:
    author = session.get_one(User, referral.created_by)
    patient = session.get(Patient, referral.patient_id) if referral.patient_id else None
    data: dict[str, Any] = {
        "id": referral.id,
        "case_id": referral.case_id,
        "direction": referral.direction,
        "status": referral.status,
        "reason": referral.reason,
        "from": _facility(session, referral.from_facility_id),
        "to": _facility(session, referral.to_facility_id),
        "booking": _booking_json(referral),
        "created_by": {"id": author.id, "username": author.username, "name": author.display_name},
        "created_at": referral.created_at.isoformat(),
        "updated_at": referral.updated_at.isoformat(),
        "completed_at": referral.completed_at.isoformat() if referral.completed_at else None,
        "incoming": referral.to_facility_id == principal.facility_id,
        "outgoing": referral.from_facility_id == principal.facility_id
        or referral.created_by == principal.user_id,
        "patient": (
            {
                "patient_id": patient.patient_id,
                "issuer": patient.issuer,
                "name": patient.name,
                "sex": patient.sex,
                "birth_date": patient.birth_date,
            }
            if patient
            else None
        ),
    }
    if with_case:
        final = session.scalar(
            select(Report.text)
            .where(Report.case_id == referral.case_id, Report.status == ReportStatus.FINAL.value)
            .order_by(Report.version.desc())
            .limit(1)
        )
        data["case"] = {
            **case_summaries.one(session, referral.case_id),
            "clinical_question": session.scalar(
                select(Case.clinical_question).where(Case.id == referral.case_id)
            ),
            "final_report": final,
        }
    return data
