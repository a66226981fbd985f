"""The reader's hold on a case: a lease renewed by activity, lapsing back to the worklist.

A claim (pull), a push assignment and an admin reassignment all set ``Case.reader_id`` and
``Case.lease_expires_at``. Activity by the holder (the viewer's heartbeat, opening the case,
writing a report) renews the lease; the ``telehub.expire_leases`` beat task puts a case whose
lease passed back on its centre's worklist. Until that task has run, a lapsed lease already
counts as lost: ``require_holder`` refuses it, so the answer does not depend on the sweep's timing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import object_session

from telehub.config import Settings
from telehub.db.models import Case, CaseEvent
from telehub.db.types import utcnow
from telehub.errors import Conflict
from telehub.timeline import Event

#: Events that start or end a hold; the latest tells whether a lapsed lease was the caller's.
_HOLD_EVENTS = (Event.CLAIMED, Event.ASSIGNED, Event.UNCLAIMED, Event.LEASE_EXPIRED)


def new_expiry(settings: Settings, now: datetime | None = None) -> datetime:
    """When a lease taken or renewed now runs out."""
    return (now or utcnow()) + timedelta(seconds=settings.claim_lease_seconds)


def is_live(case: Case, now: datetime | None = None) -> bool:
    """The case has a holder whose lease has not passed."""
    return (
        case.reader_id is not None
        and case.lease_expires_at is not None
        and case.lease_expires_at > (now or utcnow())
    )


def renew(settings: Settings, case: Case, user_id: int) -> bool:
    """Extend the lease if ``user_id`` holds the case and the lease is still running; True
    when it did. A lapsed lease is not revived: the case may already be someone else's."""
    if case.reader_id != user_id or not is_live(case):
        return False
    case.lease_expires_at = new_expiry(settings)
    return True


def require_holder(settings: Settings, case: Case, user_id: int) -> None:
    """Refuse work on a case the caller does not hold (now): Conflict with the code
    ``not_claimed``, ``claimed_by_other`` or ``lease_expired``. On success the lease is
    renewed, so writing a report counts as activity."""
    now = utcnow()
    if case.reader_id == user_id:
        if case.lease_expires_at is not None and case.lease_expires_at <= now:
            raise Conflict(
                f"your hold on case {case.id} lapsed at {case.lease_expires_at.isoformat()} "
                "(no activity for the lease time); claim it again if it is still free",
                "lease_expired",
            )
        renew(settings, case, user_id)
        return
    if case.reader_id is not None:
        raise Conflict(f"case {case.id} is held by another reader", "claimed_by_other")
    if _lapsed_for(case, user_id):
        raise Conflict(
            f"your hold on case {case.id} lapsed and it went back to the worklist; claim it again",
            "lease_expired",
        )
    raise Conflict(f"claim case {case.id} before working on it", "not_claimed")


def _lapsed_for(case: Case, user_id: int) -> bool:
    """The case's last hold event is the lapse of ``user_id``'s lease (only asked on the
    error path, so the extra query costs nothing on the normal one)."""
    session = object_session(case)
    if session is None:
        return False
    last = session.scalars(
        select(CaseEvent)
        .where(CaseEvent.case_id == case.id, CaseEvent.kind.in_(_HOLD_EVENTS))
        .order_by(CaseEvent.id.desc())
        .limit(1)
    ).first()
    return (
        last is not None
        and last.kind == Event.LEASE_EXPIRED
        and (last.detail or {}).get("reader_id") == user_id
    )
