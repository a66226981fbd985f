"""Turnaround time, computed from the case timeline (never stored beside it)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from telehub.db.models import CaseEvent
from telehub.timeline import Event

#: (name, from event, to event); the last three add up to the total.
PARTS: tuple[tuple[str, str, str], ...] = (
    ("first_instance_to_complete", Event.FIRST_INSTANCE, Event.STUDY_COMPLETE),
    ("complete_to_routed", Event.STUDY_COMPLETE, Event.ROUTED),
    ("routed_to_claimed", Event.ROUTED, Event.CLAIMED),
    ("claimed_to_final", Event.CLAIMED, Event.REPORT_FINAL),
)
TOTAL = ("complete_to_final", Event.STUDY_COMPLETE, Event.REPORT_FINAL)


def milestones(events: Iterable[CaseEvent]) -> dict[str, datetime]:
    """The first time each event kind happened."""
    first: dict[str, datetime] = {}
    for event in events:
        if event.kind not in first or event.at < first[event.kind]:
            first[event.kind] = event.at
    return first


def compute(events: Iterable[CaseEvent]) -> dict[str, float | None]:
    """Seconds for each part and the total; None for a part not reached yet."""
    first = milestones(events)
    result: dict[str, float | None] = {}
    for name, start, end in (*PARTS, TOTAL):
        if start in first and end in first:
            result[name] = round((first[end] - first[start]).total_seconds(), 3)
        else:
            result[name] = None
    return result
