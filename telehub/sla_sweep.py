"""The periodic SLA check (Celery beat, every ``sla_check_seconds``): "near breach" warnings,
breaches, and automatic escalation of cases left unclaimed past their escalation time.

Safe to run twice at once (two beats, a late tick): every mark is a conditional UPDATE
(``... WHERE sla_warned_at IS NULL``) and an event is recorded only by the call whose UPDATE
changed the row; on PostgreSQL the second UPDATE waits for the first's commit and then finds
nothing to change, on SQLite writers are serialised. Work goes in batches, each its own short
transaction, so a backlog never holds the SQLite writer lock for long.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from telehub import escalation, sla, timeline
from telehub.config import Settings
from telehub.db import Database
from telehub.db.models import Case, CaseStatus, Priority
from telehub.db.types import utcnow

#: Cases that still owe a report (FINAL is done; RECEIVING has no deadline yet).
OPEN = (
    CaseStatus.COMPLETE.value,
    CaseStatus.ROUTED.value,
    CaseStatus.UNROUTABLE.value,
    CaseStatus.CLAIMED.value,
    CaseStatus.PRELIMINARY.value,
)
BATCH = 200


@dataclass
class SweepResult:
    warned: int = 0
    breached: int = 0
    escalated: int = 0


def sweep(db: Database, settings: Settings, now: datetime | None = None) -> SweepResult:
    """One pass: warnings first (a case found past its deadline is warned, then breached),
    then breaches, then escalations."""
    now = now or utcnow()
    result = SweepResult()
    result.warned = _drain(db, lambda s: _warn(s, settings, now))
    result.breached = _drain(db, lambda s: _breach(s, now))
    result.escalated = _drain(db, lambda s: _escalate(s, settings, now))
    return result


def _drain(db: Database, step: Callable[[Session], tuple[int, int]]) -> int:
    """Run ``step`` in fresh transactions until a batch comes back short (or changes nothing:
    a parallel sweep got there first)."""
    total = 0
    while True:
        with db.session() as session:
            seen, done = step(session)
        total += done
        if seen < BATCH or done == 0:
            return total


def _near_breach(settings: Settings, now: datetime) -> ColumnElement[bool]:
    """Past the warn point of its own priority: deadline - (1 - warn_fraction) * target."""
    return or_(
        *(
            (Case.priority == p.value) & (Case.sla_deadline <= now + sla.warn_margin(settings, p))
            for p in Priority
        )
    )


def _warn(session: Session, settings: Settings, now: datetime) -> tuple[int, int]:
    ids = list(
        session.scalars(
            select(Case.id)
            .where(
                Case.status.in_(OPEN),
                Case.sla_warned_at.is_(None),
                Case.sla_deadline.is_not(None),
                _near_breach(settings, now),
            )
            .order_by(Case.id)
            .limit(BATCH)
        )
    )
    done = 0
    for case_id in ids:
        if _mark(session, case_id, Case.sla_warned_at, now):
            case = session.get_one(Case, case_id)
            timeline.record(
                session,
                case_id,
                timeline.Event.SLA_WARNING,
                **_detail(case, now),
            )
            done += 1
    return len(ids), done


def _breach(session: Session, now: datetime) -> tuple[int, int]:
    ids = list(
        session.scalars(
            select(Case.id)
            .where(
                Case.status.in_(OPEN),
                Case.sla_breached_at.is_(None),
                Case.sla_deadline <= now,
            )
            .order_by(Case.id)
            .limit(BATCH)
        )
    )
    done = 0
    for case_id in ids:
        if _mark(session, case_id, Case.sla_breached_at, now):
            case = session.get_one(Case, case_id)
            timeline.record(session, case_id, timeline.Event.SLA_BREACHED, **_detail(case, now))
            done += 1
    return len(ids), done


def _mark(
    session: Session, case_id: int, column: InstrumentedAttribute[Any], now: datetime
) -> bool:
    """Set a once-only timestamp; True only for the caller that set it."""
    changed = session.execute(
        update(Case)
        .where(Case.id == case_id, column.is_(None))
        .values({column.key: now})
        .execution_options(synchronize_session=False)
    ).rowcount
    return changed == 1


def _detail(case: Case, now: datetime) -> dict[str, object]:
    assert case.sla_deadline is not None
    return {
        "priority": case.priority,
        "status": case.status,
        "centre_id": case.centre_id,
        "sla_deadline": case.sla_deadline.isoformat(),
        "seconds_left": round((case.sla_deadline - now).total_seconds(), 1),
    }


def _escalate(session: Session, settings: Settings, now: datetime) -> tuple[int, int]:
    ids = list(
        session.scalars(
            select(Case.id)
            .where(
                Case.status == CaseStatus.ROUTED.value,
                Case.escalate_at <= now,
                Case.reader_id.is_(None),
            )
            .order_by(Case.id)
            .limit(BATCH)
        )
    )
    done = 0
    for case_id in ids:
        case = session.get_one(Case, case_id)
        if escalation.escalate_overdue(session, settings, case, now):
            done += 1
    return len(ids), done
