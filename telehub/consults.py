"""Consult sessions on a case (交互式会诊): who is invited, who may join, join tokens, the
waiting room, consent to recording, and what each step leaves in the case timeline.

Everything here is synchronous and transactional; the live part (sockets, rooms, shared viewing)
is in telehub.api.consults and telehub.consult_sync. Invitees see the case only through the
consult: telehub.access is not widened, the consult detail carries what they need.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from telehub import audit, timeline
from telehub.access import visible_to
from telehub.auth import Principal
from telehub.db import Database
from telehub.db.models import (
    Case,
    Consult,
    ConsultKind,
    ConsultParticipant,
    ConsultStatus,
    ConsultToken,
    ParticipantState,
    ReadingCentre,
    Role,
    User,
)
from telehub.db.types import utcnow
from telehub.errors import Conflict, Forbidden, Invalid, NotFound, Unauthorized
from telehub.timeline import Event

HOST = "host"
GUEST = "guest"


@dataclass(frozen=True)
class Seat:
    """A redeemed join token: who joins which consult, and whether they skip the waiting room."""

    consult_id: int
    case_id: int
    participant_id: int
    user_id: int
    username: str
    display_name: str
    role: str
    skip_waiting: bool
    consent: bool | None


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _parse_time(raw: Any) -> datetime:
    if not isinstance(raw, str):
        raise Invalid("scheduled_at must be an ISO 8601 time", "bad_scheduled_at")
    try:
        value = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError as exc:
        raise Invalid("scheduled_at must be an ISO 8601 time", "bad_scheduled_at") from exc
    if value.tzinfo is None:
        raise Invalid("scheduled_at needs a time zone (e.g. +08:00 or Z)", "bad_scheduled_at")
    return value.astimezone(UTC)


def _case_visible(session: Session, principal: Principal, case_id: int) -> bool:
    return (
        session.scalar(select(Case.id).where(Case.id == case_id, visible_to(principal))) is not None
    )


def _load(session: Session, consult_id: int) -> Consult:
    consult = session.get(Consult, consult_id)
    if consult is None:
        raise NotFound(f"consult {consult_id} not found", "consult_not_found")
    return consult


def _participant(session: Session, consult_id: int, user_id: int) -> ConsultParticipant | None:
    return session.scalar(
        select(ConsultParticipant).where(
            ConsultParticipant.consult_id == consult_id, ConsultParticipant.user_id == user_id
        )
    )


def _may_access(session: Session, principal: Principal, consult: Consult) -> bool:
    """Participants, members of an invited centre, anyone who may see the case, admins."""
    if principal.role == Role.ADMIN.value:
        return True
    if _participant(session, consult.id, principal.user_id) is not None:
        return True
    if consult.centre_id is not None and principal.centre_id == consult.centre_id:
        return True
    return _case_visible(session, principal, consult.case_id)


def _load_accessible(session: Session, principal: Principal, consult_id: int) -> Consult:
    consult = session.get(Consult, consult_id)
    if consult is None or not _may_access(session, principal, consult):
        raise NotFound(f"consult {consult_id} not found", "consult_not_found")  # no probing
    return consult


# ----- create, read, list, end -------------------------------------------------------------
def create(
    db: Database, principal: Principal, case_id: int, body: dict[str, Any], remote: str
) -> dict[str, Any]:
    """A consult on a case the caller may see, with its invitees (usernames or a centre)."""
    kind = body.get("kind", ConsultKind.ADHOC.value)
    if not isinstance(kind, str) or kind not in {k.value for k in ConsultKind}:
        raise Invalid("kind must be 'adhoc' or 'scheduled'", "bad_kind")
    scheduled_at = None
    if kind == ConsultKind.SCHEDULED.value:
        scheduled_at = _parse_time(body.get("scheduled_at"))
    elif body.get("scheduled_at") is not None:
        raise Invalid("scheduled_at is only for scheduled consults", "bad_scheduled_at")
    auto_admit = body.get("auto_admit", False)
    if not isinstance(auto_admit, bool):
        raise Invalid("auto_admit must be true or false", "bad_auto_admit")
    invite = body.get("invite", [])
    with db.session() as session:
        if not _case_visible(session, principal, case_id):
            raise NotFound(f"case {case_id} not found")
        centre_id, usernames = _invitees(session, invite)
        users = _users(session, usernames)
        consult = Consult(
            case_id=case_id,
            kind=kind,
            status=ConsultStatus.OPEN.value,
            host_id=principal.user_id,
            centre_id=centre_id,
            auto_admit=auto_admit,
            scheduled_at=scheduled_at,
            recording=False,
        )
        session.add(consult)
        session.flush()
        session.add(
            ConsultParticipant(
                consult_id=consult.id, user_id=principal.user_id, role=HOST, invited=True
            )
        )
        for user in users:
            if user.id != principal.user_id:
                session.add(
                    ConsultParticipant(
                        consult_id=consult.id, user_id=user.id, role=GUEST, invited=True
                    )
                )
        audit.record(
            session, principal.user_id, "create", "consult", consult.id, remote, case_id=case_id
        )
        session.flush()
        return _describe(session, consult)


def _invitees(session: Session, invite: Any) -> tuple[int | None, list[str]]:
    if isinstance(invite, dict):
        code = invite.get("centre")
        if not isinstance(code, str) or set(invite) != {"centre"}:
            raise Invalid('invite must be a list of usernames or {"centre": code}', "bad_invite")
        centre_id = session.scalar(select(ReadingCentre.id).where(ReadingCentre.code == code))
        if centre_id is None:
            raise Invalid(f"unknown reading centre {code!r}", "unknown_centre")
        return centre_id, []
    if not isinstance(invite, list) or not all(isinstance(u, str) for u in invite):
        raise Invalid('invite must be a list of usernames or {"centre": code}', "bad_invite")
    return None, list(dict.fromkeys(invite))


def _users(session: Session, usernames: list[str]) -> list[User]:
    if not usernames:
        return []
    users = list(
        session.scalars(select(User).where(User.username.in_(usernames), User.active.is_(True)))
    )
    missing = sorted(set(usernames) - {u.username for u in users})
    if missing:
        raise Invalid(f"unknown users: {', '.join(missing)}", "unknown_user")
    return users


def detail(db: Database, principal: Principal, consult_id: int, remote: str) -> dict[str, Any]:
    with db.session() as session:
        consult = _load_accessible(session, principal, consult_id)
        audit.record(session, principal.user_id, "read", "consult", consult.id, remote)
        data = _describe(session, consult)
        data["case"] = _case_brief(session, consult.case_id)
        return data


def list_consults(
    db: Database, principal: Principal, case_id: int | None, remote: str
) -> list[dict[str, Any]]:
    """The caller's consults (participant, invited centre, or visible case), newest first."""
    with db.session() as session:
        query = select(Consult).order_by(Consult.id.desc()).limit(200)
        if case_id is not None:
            query = query.where(Consult.case_id == case_id)
        if principal.role != Role.ADMIN.value:
            mine = select(ConsultParticipant.consult_id).where(
                ConsultParticipant.user_id == principal.user_id
            )
            clauses = [
                Consult.id.in_(mine),
                Consult.case_id.in_(select(Case.id).where(visible_to(principal))),
            ]
            if principal.centre_id is not None:
                clauses.append(Consult.centre_id == principal.centre_id)
            query = query.where(or_(*clauses))
        found = [_describe(session, c) for c in session.scalars(query)]
        audit.record(
            session,
            principal.user_id,
            "list",
            "consult",
            remote=remote,
            consult_ids=[c["id"] for c in found],
        )
        return found


def end(db: Database, principal: Principal, consult_id: int, remote: str) -> dict[str, Any]:
    """The host (or an admin) ends the consult: everyone still in leaves, CONSULT_ENDED."""
    with db.session() as session:
        consult = _load_accessible(session, principal, consult_id)
        if principal.role != Role.ADMIN.value and consult.host_id != principal.user_id:
            raise Forbidden("only the host or an admin ends a consult", "not_host")
        if consult.status == ConsultStatus.ENDED.value:
            raise Conflict("the consult has already ended", "consult_ended")
        now = utcnow()
        for p in consult.participants:
            _leave(session, consult, p, now)
        if consult.recording:
            _set_recording(session, consult, False, principal.user_id)
        consult.status = ConsultStatus.ENDED.value
        consult.ended_at = now
        duration = (now - consult.started_at).total_seconds() if consult.started_at else 0.0
        timeline.record(
            session,
            consult.case_id,
            Event.CONSULT_ENDED,
            actor_id=principal.user_id,
            consult_id=consult.id,
            duration_seconds=round(duration, 3),
        )
        audit.record(session, principal.user_id, "end", "consult", consult.id, remote)
        session.flush()
        return _describe(session, consult)


def _describe(session: Session, consult: Consult) -> dict[str, Any]:
    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    centre = session.get(ReadingCentre, consult.centre_id) if consult.centre_id else None
    duration = None
    if consult.started_at:
        duration = ((consult.ended_at or utcnow()) - consult.started_at).total_seconds()
    return {
        "id": consult.id,
        "case_id": consult.case_id,
        "kind": consult.kind,
        "status": consult.status,
        "host_id": consult.host_id,
        "invite_centre": centre.code if centre else None,
        "auto_admit": consult.auto_admit,
        "scheduled_at": iso(consult.scheduled_at),
        "created_at": iso(consult.created_at),
        "started_at": iso(consult.started_at),
        "ended_at": iso(consult.ended_at),
        "duration_seconds": round(duration, 3) if duration is not None else None,
        "recording": consult.recording,
        "participants": [
            {
                "id": p.id,
                "user_id": p.user_id,
                "username": p.user.username,
                "display_name": p.user.display_name,
                "role": p.role,
                "invited": p.invited,
                "state": p.state,
                "consent": p.consent,
                "seconds": round(p.seconds, 3),
            }
            for p in consult.participants
        ],
        "ws_url": f"/api/v1/consults/{consult.id}/ws?token=",
    }


def _case_brief(session: Session, case_id: int) -> dict[str, Any]:
    """What a participant needs to open the case's images and ECGs in the hub's viewer."""
    case = session.get(Case, case_id)
    assert case is not None
    patient = case.patient
    return {
        "id": case.id,
        "kind": case.kind,
        "priority": case.priority,
        "status": case.status,
        "clinical_question": case.clinical_question,
        "origin": case.origin.name,
        "patient": (
            {
                "patient_id": patient.patient_id,
                "name": patient.name,
                "sex": patient.sex,
                "birth_date": patient.birth_date,
            }
            if patient
            else None
        ),
        "studies": [
            {
                "study_instance_uid": s.study_uid,
                "description": s.description,
                "modalities": [m for m in s.modalities.split("\\") if m],
                "series": [
                    {
                        "series_instance_uid": se.series_uid,
                        "modality": se.modality,
                        "instance_count": se.instance_count,
                    }
                    for se in s.series
                ],
            }
            for s in case.studies
        ],
        "ecgs": [{"id": e.id} for e in case.ecgs],
    }


# ----- tokens ------------------------------------------------------------------------------
def issue_token(
    db: Database, principal: Principal, consult_id: int, ttl_seconds: int, remote: str
) -> dict[str, Any]:
    """A join token bound to (consult, caller); the caller gets a participant row if they had
    none (someone who may see the case but was not invited: they will wait to be admitted)."""
    with db.session() as session:
        consult = _load_accessible(session, principal, consult_id)
        if consult.status == ConsultStatus.ENDED.value:
            raise Conflict("the consult has ended", "consult_ended")
        participant = _participant(session, consult.id, principal.user_id)
        if participant is None:
            invited = consult.centre_id is not None and principal.centre_id == consult.centre_id
            participant = ConsultParticipant(
                consult_id=consult.id, user_id=principal.user_id, role=GUEST, invited=invited
            )
            session.add(participant)
            session.flush()
        token = secrets.token_urlsafe(32)
        session.add(
            ConsultToken(
                token_hash=_digest(token),
                consult_id=consult.id,
                user_id=principal.user_id,
                expires_at=utcnow() + timedelta(seconds=ttl_seconds),
            )
        )
        audit.record(session, principal.user_id, "token", "consult", consult.id, remote)
        return {
            "token": token,
            "expires_in": ttl_seconds,
            "participant_id": participant.id,
            "url": f"/api/v1/consults/{consult.id}/ws?token={token}",
        }


def redeem(db: Database, consult_id: int, token: str) -> Seat:
    """Check a join token for this consult; the seat it gives. Tokens stay valid until they
    expire, so a dropped participant reconnects with the same one."""
    with db.reader() as session:
        consult = _load(session, consult_id)
        row = session.scalar(select(ConsultToken).where(ConsultToken.token_hash == _digest(token)))
        if row is None:
            raise Unauthorized("invalid consult token", "invalid_token")
        if row.consult_id != consult_id:
            raise Forbidden("the token is for another consult", "token_other_consult")
        if row.expires_at <= utcnow():
            raise Unauthorized("consult token expired", "token_expired")
        if consult.status == ConsultStatus.ENDED.value:
            raise Conflict("the consult has ended", "consult_ended")
        p = _participant(session, consult_id, row.user_id)
        if p is None or not p.user.active:
            raise Unauthorized("invalid consult token", "invalid_token")
        skip = p.role == HOST or p.admitted_at is not None or (p.invited and consult.auto_admit)
        return Seat(
            consult_id=consult.id,
            case_id=consult.case_id,
            participant_id=p.id,
            user_id=p.user_id,
            username=p.user.username,
            display_name=p.user.display_name,
            role=p.role,
            skip_waiting=skip,
            consent=p.consent,
        )


# ----- the call: waiting room, admission, leaving, consent -----------------------------------
def wait(db: Database, participant_id: int) -> None:
    """The participant is in the waiting room (no timeline entry: they are not in the call)."""
    with db.session() as session:
        p = _open_participant(session, participant_id)
        p.state = ParticipantState.WAITING.value


def admit(db: Database, participant_id: int, actor_id: int | None) -> bool:
    """The participant is in the call: CONSULT_JOINED, and CONSULT_STARTED when they make the
    first two in (the consult became interactive). True when it started now."""
    with db.session() as session:
        p = _open_participant(session, participant_id)
        consult = _load(session, p.consult_id)
        now = utcnow()
        p.state = ParticipantState.ADMITTED.value
        p.admitted_at = p.admitted_at or now
        p.joined_at = now
        p.left_at = None
        timeline.record(
            session,
            consult.case_id,
            Event.CONSULT_JOINED,
            actor_id=p.user_id,
            consult_id=consult.id,
            participant_id=p.id,
            role=p.role,
            admitted_by=actor_id,
        )
        session.flush()
        inside = sum(1 for q in consult.participants if q.state == ParticipantState.ADMITTED)
        if consult.started_at is None and inside >= 2:
            consult.started_at = now
            timeline.record(
                session,
                consult.case_id,
                Event.CONSULT_STARTED,
                actor_id=p.user_id,
                consult_id=consult.id,
                participants=inside,
            )
            return True
        return False


def leave(db: Database, participant_id: int) -> float | None:
    """The participant left (or their link stayed down): CONSULT_LEFT with the time they were
    in; the seconds, or None when they were not in the call."""
    with db.session() as session:
        p = session.get(ConsultParticipant, participant_id)
        if p is None:
            return None
        consult = _load(session, p.consult_id)
        return _leave(session, consult, p, utcnow())


def _leave(
    session: Session, consult: Consult, p: ConsultParticipant, now: datetime
) -> float | None:
    was_in = p.state == ParticipantState.ADMITTED.value
    if p.state in (ParticipantState.ADMITTED.value, ParticipantState.WAITING.value):
        p.state = ParticipantState.LEFT.value
        p.left_at = now
    if not was_in or p.joined_at is None:
        return None
    seconds = max(0.0, (now - p.joined_at).total_seconds())
    p.seconds += seconds
    timeline.record(
        session,
        consult.case_id,
        Event.CONSULT_LEFT,
        actor_id=p.user_id,
        consult_id=consult.id,
        participant_id=p.id,
        duration_seconds=round(seconds, 3),
    )
    return seconds


def set_consent(db: Database, participant_id: int, given: bool) -> None:
    """Consent to recording given or withdrawn: kept on the participant and in the timeline."""
    with db.session() as session:
        p = _open_participant(session, participant_id)
        consult = _load(session, p.consult_id)
        p.consent = given
        p.consent_at = utcnow()
        timeline.record(
            session,
            consult.case_id,
            Event.CONSULT_CONSENT,
            actor_id=p.user_id,
            consult_id=consult.id,
            participant_id=p.id,
            user_id=p.user_id,
            given=given,
        )


def set_recording(db: Database, consult_id: int, on: bool, actor_id: int | None) -> None:
    """Recording switched on (everyone present consented) or off: CONSULT_RECORDED."""
    with db.session() as session:
        consult = _load(session, consult_id)
        if consult.recording != on:
            _set_recording(session, consult, on, actor_id)


def recording_stored(db: Database, consult_id: int, key: str, duration: float) -> None:
    """A finalised recording segment is in the object store: CONSULT_RECORDED with its key."""
    with db.session() as session:
        consult = _load(session, consult_id)
        timeline.record(
            session,
            consult.case_id,
            Event.CONSULT_RECORDED,
            consult_id=consult.id,
            object_key=key,
            duration_seconds=round(duration, 3),
        )


def _set_recording(session: Session, consult: Consult, on: bool, actor_id: int | None) -> None:
    consult.recording = on
    timeline.record(
        session,
        consult.case_id,
        Event.CONSULT_RECORDED,
        actor_id=actor_id,
        consult_id=consult.id,
        recording=on,
    )


def _open_participant(session: Session, participant_id: int) -> ConsultParticipant:
    p = session.get(ConsultParticipant, participant_id)
    if p is None:
        raise NotFound(f"participant {participant_id} not found", "participant_not_found")
    consult = _load(session, p.consult_id)
    if consult.status == ConsultStatus.ENDED.value:
        raise Conflict("the consult has ended", "consult_ended")
    return p
