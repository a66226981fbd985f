"""Turnaround time, computed from the case timeline (never stored beside it).

A case passes milestones (arrival, complete, routed, claimed, first opened, preliminary, final,
delivered); each is the *first* event of its kinds, so a re-route, a second claim or an addendum
never moves it. TAT parts are the seconds between two milestones; the total runs from complete
(the SLA clock's start) to the final report. The aggregates (telehub.analytics) use the same
milestone definitions, in SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from telehub.db.models import CaseEvent
from telehub.timeline import Event

#: Milestone name -> the event kinds that reach it (the first of them counts). An ECG upload
#: records FIRST_INSTANCE and STUDY_COMPLETE itself (telehub.ecgs), so one definition fits both.
MILESTONES: dict[str, tuple[str, ...]] = {
    "arrival": (Event.FIRST_INSTANCE,),
    "complete": (Event.STUDY_COMPLETE,),
    "routed": (Event.ROUTED,),
    "claimed": (Event.CLAIMED, Event.ASSIGNED),
    "opened": (Event.OPENED,),
    "preliminary": (Event.REPORT_PRELIMINARY,),
    "final": (Event.REPORT_FINAL,),
    "delivered": (Event.DELIVERED,),
}

#: (part name, from milestone, to milestone). The first four are the original parts (the case
#: detail shows them); complete_to_routed + routed_to_claimed + claimed_to_final = the total.
PARTS: tuple[tuple[str, str, str], ...] = (
    ("first_instance_to_complete", "arrival", "complete"),
    ("complete_to_routed", "complete", "routed"),
    ("routed_to_claimed", "routed", "claimed"),
    ("claimed_to_final", "claimed", "final"),
    ("routed_to_opened", "routed", "opened"),
    ("claimed_to_preliminary", "claimed", "preliminary"),
    ("preliminary_to_final", "preliminary", "final"),
    ("final_to_delivered", "final", "delivered"),
    ("arrival_to_final", "arrival", "final"),
)
TOTAL = ("complete_to_final", "complete", "final")
#: Every measured span, parts then the total: the columns of the aggregates.
SPANS: tuple[tuple[str, str, str], ...] = (*PARTS, TOTAL)

_MILESTONE_OF_KIND = {kind: name for name, kinds in MILESTONES.items() for kind in kinds}


def milestones(events: Iterable[CaseEvent]) -> dict[str, datetime]:
    """When each milestone was first reached."""
    first: dict[str, datetime] = {}
    for event in events:
        name = _MILESTONE_OF_KIND.get(event.kind)
        if name is not None and (name not in first or event.at < first[name]):
            first[name] = event.at
    return first


def spans(first: Mapping[str, datetime | None]) -> dict[str, float | None]:
    """Seconds of each part and the total from milestone times; None where one end is missing."""
    result: dict[str, float | None] = {}
    for name, start, end in SPANS:
        a, b = first.get(start), first.get(end)
        result[name] = round((b - a).total_seconds(), 3) if a and b else None
    return result


def compute(events: Iterable[CaseEvent]) -> dict[str, float | None]:
    """Seconds for each part and the total; None for a part not reached yet."""
    return spans(milestones(events))
