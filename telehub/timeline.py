"""The case timeline: every state change appends one event with its time."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from telehub.db.models import CaseEvent
from telehub.db.types import utcnow


class Event:
    """Event kinds; TAT parts are measured between some of them (see telehub.tat)."""

    FIRST_INSTANCE = "first_instance"
    STUDY_COMPLETE = "study_complete"
    STUDY_GREW = "study_grew"
    ROUTED = "routed"
    UNROUTABLE = "unroutable"
    CLAIMED = "claimed"
    REPORT_PRELIMINARY = "report_preliminary"
    REPORT_FINAL = "report_final"
    ECG_ANALYSED = "ecg_analysed"
    PRIORITY_RAISED = "priority_raised"
    INSTANCE_RESENT = "instance_resent"
    MARKED_COMPLETE = "marked_complete"


def record(
    session: Session,
    case_id: int,
    kind: str,
    *,
    at: datetime | None = None,
    actor_id: int | None = None,
    **detail: Any,
) -> CaseEvent:
    event = CaseEvent(
        case_id=case_id, kind=kind, at=at or utcnow(), actor_id=actor_id, detail=detail
    )
    session.add(event)
    return event
