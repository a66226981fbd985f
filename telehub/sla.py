"""SLA arithmetic: when a case's report is due, when it warns, when it goes up a tier.

The clock starts when the case is complete (its first STUDY_COMPLETE event: all its images or
its ECG are in): a clinic that takes an hour to send a study should not eat the reader's time.
A priority change recomputes the deadline from that same start. The periodic check that acts
on these times is telehub.sla_sweep.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from telehub.config import Settings
from telehub.db.models import Case, CaseEvent
from telehub.timeline import Event


def deadline(settings: Settings, priority: str, start: datetime) -> datetime:
    return start + timedelta(seconds=settings.sla_seconds(priority))


def warn_at(settings: Settings, priority: str, start: datetime) -> datetime:
    return start + timedelta(seconds=settings.sla_seconds(priority) * settings.sla_warn_fraction)


def escalate_at(settings: Settings, priority: str, start: datetime) -> datetime | None:
    """When an unclaimed case goes up a tier; None when automatic escalation is off."""
    if settings.sla_escalate_fraction <= 0:
        return None
    return start + timedelta(
        seconds=settings.sla_seconds(priority) * settings.sla_escalate_fraction
    )


def apply(settings: Settings, case: Case, start: datetime) -> None:
    """Set the case's deadline and escalation time for its current priority."""
    case.sla_deadline = deadline(settings, case.priority, start)
    case.escalate_at = escalate_at(settings, case.priority, start)


def start_of(session: Session, case_id: int) -> datetime | None:
    """When the case's clock started: its first STUDY_COMPLETE event (DICOM or ECG)."""
    return session.scalar(
        select(func.min(CaseEvent.at)).where(
            CaseEvent.case_id == case_id, CaseEvent.kind == Event.STUDY_COMPLETE
        )
    )


def warn_margin(settings: Settings, priority: str) -> timedelta:
    """How long before the deadline "near breach" is: (1 - warn_fraction) of the target."""
    return timedelta(seconds=settings.sla_seconds(priority) * (1 - settings.sla_warn_fraction))


def escalate_after(settings: Settings, priority: str) -> float:
    """Seconds a case may wait unclaimed at one centre before it goes up a tier (0: never)."""
    return settings.sla_seconds(priority) * settings.sla_escalate_fraction


def next_escalate_at(settings: Settings, priority: str, now: datetime) -> datetime | None:
    """The escalation time for a case arriving at a new centre now (None when off)."""
    seconds = escalate_after(settings, priority)
    return now + timedelta(seconds=seconds) if seconds > 0 else None


def reprioritise(settings: Settings, session: Session, case: Case) -> None:
    """After a priority change, move the deadline (and, before any escalation, the escalation
    time) to the new priority's target from the same start; a case not yet routed gets both
    when it is."""
    start = start_of(session, case.id)
    if start is None or case.sla_deadline is None:
        return
    case.sla_deadline = deadline(settings, case.priority, start)
    if case.escalate_at is not None and case.escalations == 0:
        case.escalate_at = escalate_at(settings, case.priority, start)
