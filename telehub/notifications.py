"""Notifications: which timeline events someone must hear of, in-app and through webhooks.

``on_event`` is called by ``timeline.record`` for every event, inside the event's transaction,
so a notification exists exactly when its event does. One table says, per event kind, what the
message is and who hears it; kinds not in it cost one dict lookup.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from telehub import webhooks
from telehub.auth import Principal
from telehub.db import Database
from telehub.db.models import (
    Case,
    CaseEvent,
    CaseKind,
    Facility,
    Notification,
    Priority,
    ReadingCentre,
    Referral,
    Role,
    Study,
    User,
)
from telehub.db.types import utcnow
from telehub.errors import NotFound
from telehub.timeline import Event


class Kind:
    """Notification kinds: what users see, and what a webhook's ``events`` filter names."""

    STAT_CASE = "stat_case"
    ASSIGNED = "assigned"
    SLA_WARNING = "sla_warning"
    SLA_BREACHED = "sla_breached"
    REPORT_SIGNED = "report_signed"
    ESCALATED = "escalated"
    REFERRAL = "referral"


KINDS = (
    Kind.STAT_CASE,
    Kind.ASSIGNED,
    Kind.SLA_WARNING,
    Kind.SLA_BREACHED,
    Kind.REPORT_SIGNED,
    Kind.ESCALATED,
    Kind.REFERRAL,
)

PRIORITY_LABEL = {
    Priority.STAT.value: "急诊 STAT",
    Priority.URGENT.value: "加急 Urgent",
    Priority.ROUTINE.value: "常规 Routine",
}


@dataclass
class Context:
    """The event and what its audiences and texts need, looked up once."""

    session: Session
    event: CaseEvent
    case: Case
    centre: ReadingCentre | None
    referral: Referral | None


Audience = Callable[[Context], ColumnElement[bool] | None]
#: Checked first, on the case and event alone, so a routine case costs no further query.
Condition = Callable[[Case, CaseEvent], bool]


@dataclass(frozen=True)
class Rule:
    kind: str
    title: str
    #: Each names a group of users (a WHERE clause on users); recipients are their union.
    audiences: tuple[Audience, ...]
    when: Condition | None = None


# ----- conditions ------------------------------------------------------------------------------
def _is_stat(case: Case, event: CaseEvent) -> bool:
    return case.priority == Priority.STAT.value


def _raised_to_stat(case: Case, event: CaseEvent) -> bool:
    """Raised to STAT on a worklist; before routing, ROUTED of the STAT case tells the same
    readers once (an ECG found critical before routing is raised first, routed second)."""
    detail = event.detail or {}
    new = detail.get("to", detail.get("priority", detail.get("new")))
    return new == Priority.STAT.value and case.centre_id is not None


# ----- audiences -------------------------------------------------------------------------------
def _centre_readers(ctx: Context) -> ColumnElement[bool] | None:
    if ctx.centre is None:
        return None
    return (User.role == Role.READER.value) & (User.centre_id == ctx.centre.id)


def _assigned_reader(ctx: Context) -> ColumnElement[bool] | None:
    reader_id = _detail_id(ctx.event.detail, "reader_id", "to_reader_id", "to") or (
        ctx.case.reader_id
    )
    return User.id == reader_id if reader_id else None


def _holder_or_centre_readers(ctx: Context) -> ColumnElement[bool] | None:
    if ctx.case.reader_id is not None:
        return User.id == ctx.case.reader_id
    return _centre_readers(ctx)


def _centre_admins(ctx: Context) -> ColumnElement[bool] | None:
    if ctx.centre is None:
        return None
    return (User.role == Role.ADMIN.value) & (User.facility_id == ctx.centre.facility_id)


def _origin_clinic(ctx: Context) -> ColumnElement[bool] | None:
    return (User.role == Role.CLINIC.value) & (User.facility_id == ctx.case.origin_facility_id)


def _receiving_facility(ctx: Context) -> ColumnElement[bool] | None:
    fid = ctx.referral.to_facility_id if ctx.referral else None
    fid = fid or _detail_id(ctx.event.detail, "to_facility_id")
    return User.facility_id == fid if fid else None


def _referring_facility(ctx: Context) -> ColumnElement[bool] | None:
    fid = ctx.referral.from_facility_id if ctx.referral else None
    fid = fid or _detail_id(ctx.event.detail, "from_facility_id")
    return User.facility_id == fid if fid else None


_STAT = "新的急诊病例 New STAT case"
_ESCALATED = "上转会诊 Escalated"
_REFERRAL = "转诊 Referral"

#: Event kind -> what to say and to whom. REPORT_FINAL (not DELIVERED) tells the clinic, so
#: the message goes once, at signing.
RULES: dict[str, Rule] = {
    Event.ROUTED: Rule(Kind.STAT_CASE, _STAT, (_centre_readers,), when=_is_stat),
    Event.PRIORITY_CHANGED: Rule(Kind.STAT_CASE, _STAT, (_centre_readers,), when=_raised_to_stat),
    Event.PRIORITY_RAISED: Rule(Kind.STAT_CASE, _STAT, (_centre_readers,), when=_raised_to_stat),
    Event.ASSIGNED: Rule(Kind.ASSIGNED, "病例已分配给您 Case assigned to you", (_assigned_reader,)),
    Event.SLA_WARNING: Rule(
        Kind.SLA_WARNING, "即将超时 SLA near breach", (_holder_or_centre_readers,)
    ),
    Event.SLA_BREACHED: Rule(
        Kind.SLA_BREACHED, "已超时 SLA breached", (_holder_or_centre_readers, _centre_admins)
    ),
    Event.REPORT_FINAL: Rule(Kind.REPORT_SIGNED, "报告已签发 Report signed", (_origin_clinic,)),
    Event.ESCALATED: Rule(Kind.ESCALATED, _ESCALATED, (_centre_readers,)),
    Event.SECOND_OPINION: Rule(Kind.ESCALATED, _ESCALATED, (_centre_readers,)),
    Event.REFERRAL_CREATED: Rule(Kind.REFERRAL, _REFERRAL, (_receiving_facility,)),
    Event.REFERRAL_UPDATED: Rule(
        Kind.REFERRAL, _REFERRAL, (_receiving_facility, _referring_facility)
    ),
}


# ----- the hook --------------------------------------------------------------------------------
def on_event(session: Session, event: CaseEvent) -> None:
    """Create the notifications (and webhook deliveries) an event calls for."""
    rule = RULES.get(event.kind)
    if rule is None:
        return
    case = session.get(Case, event.case_id)
    if case is None or (rule.when is not None and not rule.when(case, event)):
        return
    ctx = Context(session, event, case, _centre(session, event, case), _referral(session, event))
    modality = _modality(ctx)
    text = _text(ctx, rule, modality)
    for user_id in sorted(_recipients(ctx, rule)):
        session.add(
            Notification(
                user_id=user_id,
                kind=rule.kind,
                case_id=case.id,
                title=rule.title,
                body=text,
                detail={"event": event.kind, **(event.detail or {})},
            )
        )
    webhooks.fan_out(session, _message(ctx, rule, text, modality), _facilities(ctx))


def _recipients(ctx: Context, rule: Rule) -> set[int]:
    clauses = [c for c in (audience(ctx) for audience in rule.audiences) if c is not None]
    if not clauses:
        return set()
    query = select(User.id).where(User.active.is_(True), _any(clauses))
    recipients = set(ctx.session.scalars(query))
    recipients.discard(ctx.event.actor_id)  # nobody needs telling what they just did
    return recipients


def _any(clauses: list[ColumnElement[bool]]) -> ColumnElement[bool]:
    combined = clauses[0]
    for clause in clauses[1:]:
        combined = combined | clause
    return combined


def _detail_id(detail: dict[str, Any] | None, *keys: str) -> int | None:
    """The first integer id under one of ``keys`` (a ``{"id": ...}`` object counts too)."""
    for key in keys:
        value = (detail or {}).get(key)
        if isinstance(value, dict):
            value = value.get("id")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


#: Events that move a case to another centre (their detail's "to" names it).
_MOVES = frozenset({Event.ESCALATED, Event.SECOND_OPINION})


def _centre(session: Session, event: CaseEvent, case: Case) -> ReadingCentre | None:
    """The centre the event concerns: the new one for an escalation, else the case's."""
    keys = ("to_centre_id", "centre_id", "to") if event.kind in _MOVES else ("centre_id",)
    centre_id = _detail_id(event.detail, *keys) or case.centre_id
    return session.get(ReadingCentre, centre_id) if centre_id else None


def _referral(session: Session, event: CaseEvent) -> Referral | None:
    if not event.kind.startswith("referral_"):
        return None
    referral_id = _detail_id(event.detail, "referral_id", "id")
    return session.get(Referral, referral_id) if referral_id else None


def _facilities(ctx: Context) -> set[int]:
    """Facilities a webhook's scope may name for this event: sender, reader, referral ends."""
    ids = {ctx.case.origin_facility_id}
    if ctx.centre is not None:
        ids.add(ctx.centre.facility_id)
    if ctx.referral is not None:
        ids |= {ctx.referral.from_facility_id, ctx.referral.to_facility_id}
    return ids


def _modality(ctx: Context) -> str:
    if ctx.case.kind == CaseKind.ECG.value:
        return "ECG"
    rows = ctx.session.scalars(select(Study.modalities).where(Study.case_id == ctx.case.id))
    return "/".join(sorted({m for row in rows for m in row.split("\\") if m}))


def _text(ctx: Context, rule: Rule, modality: str) -> str:
    """One line without patient identifiers: case, modality, priority, where from and to."""
    origin = ctx.session.get(Facility, ctx.case.origin_facility_id)
    parts = [f"病例 Case #{ctx.case.id}", modality]
    parts.append(PRIORITY_LABEL.get(ctx.case.priority, ctx.case.priority))
    route = origin.name if origin else ""
    if ctx.centre is not None:
        route += f" → {ctx.centre.name}"
    parts.append(route)
    if rule.kind in (Kind.SLA_WARNING, Kind.SLA_BREACHED) and ctx.case.sla_deadline:
        parts.append(f"截止 due {ctx.case.sla_deadline.strftime('%Y-%m-%d %H:%M')} UTC")
    if ctx.referral is not None:
        to = ctx.session.get(Facility, ctx.referral.to_facility_id)
        arrow = "上转 up" if ctx.referral.direction == "up" else "下转 down"
        parts.append(f"{arrow} → {to.name if to else ''} ({ctx.referral.status})")
    return " · ".join(p for p in parts if p)


def _message(ctx: Context, rule: Rule, text: str, modality: str) -> webhooks.Message:
    origin = ctx.session.get(Facility, ctx.case.origin_facility_id)
    patient = ctx.case.patient
    return webhooks.Message(
        event=rule.kind,
        case_id=ctx.case.id,
        priority=ctx.case.priority,
        modality=modality,
        facility=origin.name if origin else "",
        centre=ctx.centre.name if ctx.centre else "",
        title=rule.title,
        text=text,
        at=ctx.event.at.isoformat() if ctx.event.at else utcnow().isoformat(),
        patient_name=(patient.name if patient else "").replace("^", " ").strip(),
    )


# ----- in-app: the user's own list -----------------------------------------------------------
def describe(row: Notification) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "case_id": row.case_id,
        "title": row.title,
        "body": row.body,
        "detail": row.detail,
        "created_at": row.created_at.isoformat(),
        "read_at": row.read_at.isoformat() if row.read_at else None,
    }


def list_own(
    db: Database,
    principal: Principal,
    unread_only: bool = False,
    limit: int = 50,
    offset: int = 0,
    after_id: int = 0,
) -> dict[str, Any]:
    """The caller's notifications, newest first, and how many are unread; ``after_id`` lets a
    page poll for only what is new."""
    with db.reader() as session:
        query = select(Notification).where(
            Notification.user_id == principal.user_id, Notification.id > after_id
        )
        if unread_only:
            query = query.where(Notification.read_at.is_(None))
        rows = session.scalars(query.order_by(Notification.id.desc()).limit(limit).offset(offset))
        unread = session.scalar(
            select(func.count()).where(
                Notification.user_id == principal.user_id, Notification.read_at.is_(None)
            )
        )
        return {"notifications": [describe(r) for r in rows], "unread": unread or 0}


def mark_read(db: Database, principal: Principal, notification_id: int) -> dict[str, Any]:
    """Another user's notification answers 404, as a missing one does."""
    with db.session() as session:
        row = session.get(Notification, notification_id)
        if row is None or row.user_id != principal.user_id:
            raise NotFound(f"notification {notification_id} not found")
        if row.read_at is None:
            row.read_at = utcnow()
        session.flush()
        return describe(row)


def mark_all_read(db: Database, principal: Principal) -> int:
    with db.session() as session:
        return session.execute(
            update(Notification)
            .where(Notification.user_id == principal.user_id, Notification.read_at.is_(None))
            .values(read_at=utcnow())
            .execution_options(synchronize_session=False)
        ).rowcount
