"""Who reads a case: pull (a reader claims), push (the hub assigns), admin reassignment, release
(unclaim) and lease expiry.

Every change of holder is one conditional UPDATE (``WHERE reader_id IS NULL AND status =
'routed'`` or the like), so two readers, two workers or two beats racing for the same case can
never both win, on SQLite or PostgreSQL. Each change is in the timeline: CLAIMED (pull),
ASSIGNED (push or admin, with why), UNCLAIMED, LEASE_EXPIRED.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from telehub import audit, leases, modalities, outbox, timeline
from telehub.auth import Principal
from telehub.case_summaries import OPEN_FOR_READING
from telehub.case_summaries import one as summary_of
from telehub.cases import HELD, load_visible
from telehub.config import Settings
from telehub.db import Database
from telehub.db.models import Case, CaseKind, CaseStatus, ClaimKind, Priority, Role, User
from telehub.db.types import utcnow
from telehub.errors import Conflict, Forbidden, Invalid, NotFound

log = logging.getLogger(__name__)

ASSIGN_TASK = "telehub.assign_case"
_EPOCH = datetime.min.replace(tzinfo=UTC)


# ----- qualification -------------------------------------------------------------------------
def required_qualifications(case: Case) -> set[str]:
    """What a reader must be qualified for to read the case: its modalities ("ECG" for an ECG
    case) and its subspecialty, if it has one."""
    needed = {"ECG"} if case.kind == CaseKind.ECG.value else modalities.acquired(case)
    if case.subspecialty:
        needed.add(case.subspecialty)
    return needed


def is_qualified(user: User, case: Case) -> bool:
    """Empty qualifications: everything the reader's centre reads. Otherwise every required
    qualification must be listed (compared without regard to case)."""
    if not user.qualifications:
        return True
    have = {q.casefold() for q in user.qualifications}
    return all(need.casefold() in have for need in required_qualifications(case))


def require_qualified(user: User, case: Case) -> None:
    """Forbidden ``not_qualified`` naming what is missing (for claims and signing)."""
    if not is_qualified(user, case):
        have = {q.casefold() for q in user.qualifications}
        missing = sorted(n for n in required_qualifications(case) if n.casefold() not in have)
        raise Forbidden(
            f"{user.username} is not qualified for case {case.id} (needs {', '.join(missing)})",
            "not_qualified",
        )


# ----- pull: claim, unclaim, heartbeat ------------------------------------------------------
def _require_reader(principal: Principal, what: str) -> None:
    if principal.role != Role.READER.value:
        raise Forbidden(f"only readers {what}", "not_a_reader")


def _take(
    session: Session,
    settings: Settings,
    case_id: int,
    reader_id: int,
    kind: ClaimKind,
    centre_id: int | None = None,
) -> datetime | None:
    """The conditional UPDATE that gives an unheld, routed case (of ``centre_id``, if given)
    to ``reader_id``; the new lease's expiry when it won, None when it lost."""
    now = utcnow()
    expiry = leases.new_expiry(settings, now)
    query = update(Case).where(
        Case.id == case_id,
        Case.status == CaseStatus.ROUTED.value,
        Case.reader_id.is_(None),
    )
    if centre_id is not None:
        query = query.where(Case.centre_id == centre_id)
    won = session.execute(
        query.values(
            reader_id=reader_id,
            status=CaseStatus.CLAIMED.value,
            claim_kind=kind.value,
            claimed_at=now,
            lease_expires_at=expiry,
            updated_at=now,
        ).execution_options(synchronize_session=False)
    ).rowcount
    return expiry if won == 1 else None


def claim(
    db: Database, settings: Settings, principal: Principal, case_id: int, remote: str
) -> dict[str, Any]:
    """Take a routed case from the centre's worklist. Claiming a case one holds again renews
    the lease (also a lapsed one nobody else has taken yet)."""
    _require_reader(principal, "claim cases")
    with db.session() as session:
        case = load_visible(session, principal, case_id)
        mine = case.reader_id == principal.user_id and case.status in HELD
        if mine and _extend(session, settings, case_id, principal.user_id):
            session.expire(case)
            return summary_of(session, case_id)
        if principal.centre_id is None or case.centre_id != principal.centre_id:
            raise _not_claimable(case, principal)
        user = session.get_one(User, principal.user_id)
        require_qualified(user, case)
        expiry = _take(
            session, settings, case_id, principal.user_id, ClaimKind.CLAIM, principal.centre_id
        )
        if expiry is None:
            session.refresh(case)
            raise _not_claimable(case, principal)
        timeline.record(
            session,
            case_id,
            timeline.Event.CLAIMED,
            actor_id=principal.user_id,
            claim_kind=ClaimKind.CLAIM.value,
            lease_expires_at=expiry.isoformat(),
        )
        audit.record(session, principal.user_id, "claim", "case", case_id, remote=remote)
        return summary_of(session, case_id)


def _extend(session: Session, settings: Settings, case_id: int, user_id: int) -> bool:
    """Renew the holder's lease with a conditional UPDATE (the lease sweep may be releasing
    the case at this very moment: then nothing happens and the caller claims afresh)."""
    return (
        session.execute(
            update(Case)
            .where(Case.id == case_id, Case.reader_id == user_id, Case.status.in_(HELD))
            .values(lease_expires_at=leases.new_expiry(settings))
            .execution_options(synchronize_session=False)
        ).rowcount
        == 1
    )


def _not_claimable(case: Case, principal: Principal) -> Conflict:
    """Why a claim lost, from the case as it is now."""
    if case.reader_id is not None:
        holder = case.reader.username if case.reader else f"user {case.reader_id}"
        return Conflict(
            f"case {case.id} is already held by {holder} ({case.claim_kind or 'claim'})",
            "already_claimed",
        )
    if case.status != CaseStatus.ROUTED.value:
        return Conflict(
            f"case {case.id} is {case.status}, not waiting on a worklist", "not_claimable"
        )
    return Conflict(f"case {case.id} is on another reading centre's worklist", "not_claimable")


def renew_lease(
    db: Database, settings: Settings, principal: Principal, case_id: int
) -> dict[str, Any]:
    """The viewer's heartbeat: keep the hold while the reader works. 409 when the caller does
    not hold the case (any more)."""
    _require_reader(principal, "hold cases")
    with db.session() as session:
        case = load_visible(session, principal, case_id)
        leases.require_holder(settings, case, principal.user_id)  # renews on success
        return {
            "case_id": case.id,
            "reader_id": case.reader_id,
            "lease_expires_at": _iso(case.lease_expires_at),
            "lease_seconds": settings.claim_lease_seconds,
        }


def unclaim(
    db: Database, settings: Settings, principal: Principal, case_id: int, remote: str
) -> dict[str, Any]:
    """The holder gives a case back to the centre's worklist (its preliminary reports stay);
    push may then offer it to another reader on duty."""
    _require_reader(principal, "unclaim cases")
    with db.session() as session:
        case = load_visible(session, principal, case_id)
        if case.reader_id != principal.user_id:
            leases.require_holder(settings, case, principal.user_id)  # raises the right 409
        previous = case.status
        won = session.execute(
            update(Case)
            .where(Case.id == case_id, Case.reader_id == principal.user_id, Case.status.in_(HELD))
            .values(_released())
            .execution_options(synchronize_session=False)
        ).rowcount
        if won != 1:
            raise Conflict(f"case {case_id} is {case.status}, not held by you", "not_claimed")
        timeline.record(
            session,
            case_id,
            timeline.Event.UNCLAIMED,
            actor_id=principal.user_id,
            reader_id=principal.user_id,
            previous_status=previous,
        )
        outbox.enqueue(session, ASSIGN_TASK, case_id=case_id, exclude=[principal.user_id])
        audit.record(session, principal.user_id, "unclaim", "case", case_id, remote=remote)
        session.expire(case)
        return summary_of(session, case_id)


def _released() -> dict[str, Any]:
    return {
        "reader_id": None,
        "status": CaseStatus.ROUTED.value,
        "claim_kind": None,
        "claimed_at": None,
        "lease_expires_at": None,
        "updated_at": utcnow(),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# ----- admin reassignment --------------------------------------------------------------------
def reassign(
    db: Database,
    settings: Settings,
    principal: Principal,
    case_id: int,
    username: str,
    remote: str,
) -> dict[str, Any]:
    """An admin gives an open case to a named, qualified reader of its centre (claim kind
    "admin"); whoever held it loses it. A preliminary case stays preliminary."""
    if principal.role != Role.ADMIN.value:
        raise Forbidden("only admins reassign cases", "not_an_admin")
    with db.session() as session:
        query = select(Case).where(Case.id == case_id).options(selectinload(Case.studies))
        if not db.is_sqlite:
            query = query.with_for_update(of=Case)
        case = session.scalar(query)
        if case is None:
            raise NotFound(f"case {case_id} not found")
        if case.status not in OPEN_FOR_READING:
            raise Conflict(
                f"case {case_id} is {case.status}; only routed, claimed or preliminary cases "
                "can be assigned",
                "not_assignable",
            )
        target = session.scalar(select(User).where(User.username == username))
        if target is None or target.role != Role.READER.value or not target.active:
            raise Invalid(f"{username!r} is not an active reader", "bad_reader")
        if target.centre_id != case.centre_id:
            raise Invalid(
                f"{username} does not read for the case's centre; route the case there first",
                "reader_not_in_centre",
            )
        if not is_qualified(target, case):
            raise Invalid(
                f"{username} is not qualified for case {case_id} "
                f"(needs {', '.join(sorted(required_qualifications(case)))})",
                "not_qualified",
            )
        previous_reader = case.reader_id
        now = utcnow()
        case.reader_id = target.id
        if case.status == CaseStatus.ROUTED.value:
            case.status = CaseStatus.CLAIMED.value
        case.claim_kind = ClaimKind.ADMIN.value
        case.claimed_at = now
        case.lease_expires_at = leases.new_expiry(settings, now)
        timeline.record(
            session,
            case_id,
            timeline.Event.ASSIGNED,
            actor_id=principal.user_id,
            reader_id=target.id,
            reader=target.username,
            claim_kind=ClaimKind.ADMIN.value,
            previous_reader_id=previous_reader,
            why=f"reassigned by {principal.username}",
        )
        audit.record(
            session, principal.user_id, "assign", "case", case_id, remote=remote, reader=username
        )
        session.flush()
        session.expire(case)
        return summary_of(session, case_id)


# ----- push ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Assignment:
    case_id: int
    reader_id: int | None
    reason: str


def open_counts(session: Session, reader_ids: Iterable[int]) -> dict[int, int]:
    """Cases each reader holds now (claimed or preliminary)."""
    ids = list(reader_ids)
    rows = session.execute(
        select(Case.reader_id, func.count())
        .where(Case.reader_id.in_(ids), Case.status.in_(HELD))
        .group_by(Case.reader_id)
    ).all()
    counts = dict.fromkeys(ids, 0)
    counts.update({reader_id: n for reader_id, n in rows})
    return counts


def _last_assigned(session: Session, reader_ids: Iterable[int]) -> dict[int, datetime]:
    rows = session.execute(
        select(Case.reader_id, func.max(Case.claimed_at))
        .where(Case.reader_id.in_(list(reader_ids)))
        .group_by(Case.reader_id)
    ).all()
    return {reader_id: at for reader_id, at in rows if at is not None}


def assign_case(
    db: Database,
    settings: Settings,
    case_id: int,
    outbox_id: int | None = None,
    exclude: Sequence[int] = (),
) -> Assignment:
    """Give a routed, unheld case to the best available qualified reader of its centre:
    on duty, active, qualified, fewest open cases, under their cap (STAT cases bypass caps),
    ties to whoever was assigned least recently. Push is on for a centre exactly when one of
    its readers is on duty. Idempotent: a held or no longer routed case is left alone."""
    with db.session() as session:
        query = select(Case).where(Case.id == case_id).options(selectinload(Case.studies))
        if not db.is_sqlite:
            query = query.with_for_update(of=Case)
        case = session.scalar(query)
        result = _push(session, settings, case, case_id, set(exclude))
        outbox.mark_done(session, outbox_id)
        return result


def _push(
    session: Session, settings: Settings, case: Case | None, case_id: int, exclude: set[int]
) -> Assignment:
    if case is None:
        return Assignment(case_id, None, "case not found")
    if case.status != CaseStatus.ROUTED.value or case.reader_id is not None:
        return Assignment(case_id, case.reader_id, f"left alone: {case.status}")
    readers_query = (
        select(User)
        .where(
            User.role == Role.READER.value,
            User.centre_id == case.centre_id,
            User.active.is_(True),
            User.on_duty.is_(True),
        )
        .order_by(User.id)
    )
    if session.get_bind().dialect.name != "sqlite":
        # Pushes to one centre take turns, so two cases cannot both fill a reader's last slot.
        readers_query = readers_query.with_for_update()
    on_duty = list(session.scalars(readers_query))
    if not on_duty:
        return Assignment(case_id, None, "nobody of the centre is on duty: push is off")
    qualified = [r for r in on_duty if r.id not in exclude and is_qualified(r, case)]
    if not qualified:
        return Assignment(case_id, None, "no qualified reader on duty; left on the worklist")
    load = open_counts(session, [r.id for r in qualified])
    stat = case.priority == Priority.STAT.value
    eligible = [
        r for r in qualified if stat or r.max_open_cases is None or load[r.id] < r.max_open_cases
    ]
    if not eligible:
        return Assignment(case_id, None, "every qualified reader is at their cap")
    last = _last_assigned(session, [r.id for r in eligible])
    chosen = min(eligible, key=lambda r: (load[r.id], last.get(r.id, _EPOCH), r.id))
    if not _take(session, settings, case.id, chosen.id, ClaimKind.PUSH):
        return Assignment(case_id, None, "taken meanwhile")
    why = {
        "open_cases": load[chosen.id],
        "max_open_cases": chosen.max_open_cases,
        "stat_bypasses_cap": stat
        and chosen.max_open_cases is not None
        and load[chosen.id] >= chosen.max_open_cases,
        "candidates": [
            {"username": r.username, "open_cases": load[r.id], "max_open_cases": r.max_open_cases}
            for r in qualified
        ],
    }
    timeline.record(
        session,
        case.id,
        timeline.Event.ASSIGNED,
        reader_id=chosen.id,
        reader=chosen.username,
        claim_kind=ClaimKind.PUSH.value,
        why=why,
    )
    return Assignment(case.id, chosen.id, f"pushed to {chosen.username}")


def get_duty(db: Database, principal: Principal) -> dict[str, Any]:
    """Whether the calling reader is on duty (the hub's state, whatever device set it)."""
    _require_reader(principal, "be on duty")
    with db.session() as session:
        user = session.get_one(User, principal.user_id)
        return {"username": user.username, "on_duty": user.on_duty, "centre_id": user.centre_id}


def set_duty(db: Database, principal: Principal, on_duty: bool) -> dict[str, Any]:
    """A reader goes on or off duty (on: new cases of the centre may be pushed to them)."""
    _require_reader(principal, "go on duty")
    with db.session() as session:
        user = session.get_one(User, principal.user_id)
        user.on_duty = on_duty
        return {"username": user.username, "on_duty": user.on_duty, "centre_id": user.centre_id}


# ----- lease expiry --------------------------------------------------------------------------
def expire_leases(db: Database, limit: int = 500) -> list[int]:
    """Put held cases whose lease passed back on their centre's worklist (LEASE_EXPIRED), and
    offer them to push again, not to the reader who let them lapse. Each release is a
    conditional UPDATE, so two sweeps running at once release a case once."""
    now = utcnow()
    released: list[int] = []
    with db.session() as session:
        due = session.execute(
            select(Case.id, Case.reader_id, Case.status, Case.lease_expires_at)
            .where(
                Case.lease_expires_at < now,
                Case.reader_id.is_not(None),
                Case.status.in_(HELD),
            )
            .order_by(Case.lease_expires_at)
            .limit(limit)
        ).all()
        for case_id, reader_id, status, expired_at in due:
            won = session.execute(
                update(Case)
                .where(
                    Case.id == case_id,
                    Case.reader_id == reader_id,
                    Case.lease_expires_at < now,
                    Case.status.in_(HELD),
                )
                .values(_released())
                .execution_options(synchronize_session=False)
            ).rowcount
            if won != 1:
                continue
            timeline.record(
                session,
                case_id,
                timeline.Event.LEASE_EXPIRED,
                reader_id=reader_id,
                lease_expires_at=expired_at.isoformat(),
                previous_status=status,
            )
            outbox.enqueue(session, ASSIGN_TASK, case_id=case_id, exclude=[reader_id])
            released.append(case_id)
    if released:
        log.info("leases lapsed: cases %s back on their worklists", released)
    return released
