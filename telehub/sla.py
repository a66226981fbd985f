"""SLA arithmetic: when a case's report is due, when it warns, when it goes up a tier.

The clock starts when the case is complete (all its images or its ECG are in): a clinic that
takes an hour to send a study should not eat the reader's time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from telehub.config import Settings
from telehub.db.models import Case


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
