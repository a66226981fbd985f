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
    # routing and SLA
    ESCALATED = "escalated"  # up a tier: by a reader (with reason) or by SLA
    SECOND_OPINION = "second_opinion_requested"
    PRIORITY_CHANGED = "priority_changed"
    SLA_WARNING = "sla_warning"
    SLA_BREACHED = "sla_breached"
    # assignment
    ASSIGNED = "assigned"  # pushed to a reader by the hub, or reassigned by an admin
    UNCLAIMED = "unclaimed"
    LEASE_EXPIRED = "lease_expired"
    OPENED = "opened"  # a reader opened the case (first time per reader)
    # reports
    REPORT_ADDENDUM = "report_addendum"
    REPORT_COSIGNED = "report_cosigned"
    DELIVERED = "delivered"  # the final report reached the origin clinic
    SR_STORED = "sr_stored"  # the report as a DICOM Basic Text SR, stored with the study
    # referral and consults
    REFERRAL_CREATED = "referral_created"
    REFERRAL_UPDATED = "referral_updated"
    CONSULT_STARTED = "consult_started"
    CONSULT_JOINED = "consult_joined"
    CONSULT_LEFT = "consult_left"
    CONSULT_CONSENT = "consult_consent"
    CONSULT_ENDED = "consult_ended"
    CONSULT_RECORDED = "consult_recorded"


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
    # Who must hear of it (in-app, webhooks) is decided in the same transaction, so a
    # notification exists exactly when its event does.
    from telehub import notifications

    notifications.on_event(session, event)
    return event
