"""The consortium figures the field reports (see docs/tat.md): remote diagnoses by kind
(imaging, ECG, clinical consultation), interactive vs non-interactive, by origin tier, and
upward (escalations, second opinions, upward referrals) vs downward (downward referrals), per
month, quarter or year.

Counted in SQL on both databases: the periods' boundaries are computed here in the requested
time zone (a month in Asia/Shanghai starts 8 hours before the UTC month), and a CASE over those
boundaries buckets each row, so the answer is a few grouped rows whatever the number of cases.
Cases count by arrival, escalations by the time of the event, referrals by their creation
(cancelled referrals are not counted).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, exists, func, select
from sqlalchemy import case as when
from sqlalchemy.orm import aliased

from telehub import referrals
from telehub.access import visible_to
from telehub.analytics import Window, audit_read, parse_window
from telehub.auth import Principal
from telehub.db import Database
from telehub.db.models import (
    Case,
    CaseEvent,
    CaseKind,
    Facility,
    Referral,
    ReferralDirection,
    ReferralStatus,
    Tier,
)
from telehub.errors import Invalid
from telehub.timeline import Event

PERIODS = ("month", "quarter", "year")
MAX_PERIODS = 240
UPWARD_EVENTS = (Event.ESCALATED, Event.SECOND_OPINION)


@dataclass(frozen=True)
class Period:
    label: str  # "2024-05", "2024-Q2", "2024"
    start: datetime  # UTC; the first period starts at the window's start
    end: datetime  # UTC; the last period ends at the window's end


def _next_start(local: datetime, period: str) -> datetime:
    months = {"month": 1, "quarter": 3, "year": 12}[period]
    index = local.year * 12 + local.month - 1 + months
    return local.replace(year=index // 12, month=index % 12 + 1)


def _period_start(local: datetime, period: str) -> datetime:
    month = {"month": local.month, "quarter": (local.month - 1) // 3 * 3 + 1, "year": 1}[period]
    return local.replace(month=month, day=1, hour=0, minute=0, second=0, microsecond=0)


def _label(local: datetime, period: str) -> str:
    if period == "month":
        return f"{local.year}-{local.month:02d}"
    if period == "quarter":
        return f"{local.year}-Q{(local.month - 1) // 3 + 1}"
    return str(local.year)


def periods(window: Window, period: str) -> list[Period]:
    """The calendar periods (in the window's zone) that overlap the window, clipped to it."""
    if period not in PERIODS:
        raise Invalid(f"period must be one of {', '.join(PERIODS)}", "bad_parameter")
    result: list[Period] = []
    local = _period_start(window.start.astimezone(window.tz), period)
    while local.astimezone(window.start.tzinfo) < window.end:
        following = _next_start(local, period)
        start = max(local.astimezone(window.start.tzinfo), window.start)
        end = min(following.astimezone(window.start.tzinfo), window.end)
        result.append(Period(_label(local, period), start, end))
        if len(result) > MAX_PERIODS:
            raise Invalid(f"more than {MAX_PERIODS} periods; choose a longer period", "bad_period")
        local = following
    return result


def _bucket(column: Any, spans: list[Period]) -> ColumnElement[Any]:
    """The index of the period a time falls in (the rows are already limited to the window)."""
    return when(*((column < p.end, i) for i, p in enumerate(spans)), else_=None)


def _blank() -> dict[str, Any]:
    return {
        "remote_diagnoses": 0,
        "by_kind": {k.value: 0 for k in CaseKind},
        "interactive": 0,
        "non_interactive": 0,
        "by_origin_tier": {t.value: 0 for t in Tier},
        "upward": {"escalations": 0, "referrals": 0, "total": 0},
        "downward": {"referrals": 0, "total": 0},
        "referrals": {"up": 0, "down": 0, "up_completed": 0, "down_completed": 0},
    }


def _add(target: dict[str, Any], path: tuple[str, ...], n: int) -> None:
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = target.get(path[-1], 0) + n


def _finish(figures: dict[str, Any]) -> dict[str, Any]:
    up, down = figures["upward"], figures["downward"]
    up["total"] = up["escalations"] + up["referrals"]
    down["total"] = down["referrals"]
    figures["non_interactive"] = figures["remote_diagnoses"] - figures["interactive"]
    refs = figures["referrals"]
    figures["up_down_ratio"] = round(refs["up"] / refs["down"], 3) if refs["down"] else None
    return figures


def parse(params: Mapping[str, str]) -> tuple[Window, str]:
    """``from``/``to``/``tz`` (default: the last 365 days) and ``period`` (default month)."""
    period = params.get("period") or "month"
    if period not in PERIODS:
        raise Invalid(f"period must be one of {', '.join(PERIODS)}", "bad_parameter")
    return parse_window(params, default_days=365), period


def figures(
    db: Database, principal: Principal, window: Window, period: str, remote: str
) -> dict[str, Any]:
    """Per period and in total, over what the caller may see (admins: the consortium)."""
    spans = periods(window, period)
    rows: list[dict[str, Any]] = [_blank() for _ in spans]
    with db.reader() as session:
        interactive = exists().where(
            CaseEvent.case_id == Case.id, CaseEvent.kind == Event.CONSULT_STARTED
        )
        cases = (
            select(
                _bucket(Case.arrived_at, spans).label("p"),
                Case.kind.label("kind"),
                Facility.tier.label("tier"),
                when((interactive, 1), else_=0).label("interactive"),
            )
            .join(Facility, Facility.id == Case.origin_facility_id)
            .where(
                visible_to(principal),
                Case.arrived_at >= window.start,
                Case.arrived_at < window.end,
            )
            .subquery()
        )
        c = cases.c
        for p, kind, tier, inter, n in session.execute(
            select(c.p, c.kind, c.tier, c.interactive, func.count()).group_by(
                c.p, c.kind, c.tier, c.interactive
            )
        ):
            row = rows[p]
            _add(row, ("remote_diagnoses",), n)
            _add(row, ("by_kind", kind), n)
            _add(row, ("by_origin_tier", tier), n)
            if inter:
                _add(row, ("interactive",), n)

        sent = aliased(CaseEvent)  # visible_to may hold its own subquery on the timeline
        upward = (
            select(_bucket(sent.at, spans).label("p"))
            .join(Case, Case.id == sent.case_id)
            .where(
                visible_to(principal),
                sent.kind.in_(UPWARD_EVENTS),
                sent.at >= window.start,
                sent.at < window.end,
            )
            .subquery()
        )
        for p, n in session.execute(select(upward.c.p, func.count()).group_by(upward.c.p)):
            _add(rows[p], ("upward", "escalations"), n)

        refs = (
            select(
                _bucket(Referral.created_at, spans).label("p"),
                Referral.direction.label("direction"),
                Referral.status.label("status"),
            )
            .where(
                referrals.scope(principal),
                Referral.created_at >= window.start,
                Referral.created_at < window.end,
                Referral.status != ReferralStatus.CANCELLED.value,
            )
            .subquery()
        )
        r = refs.c
        for p, direction, status, n in session.execute(
            select(r.p, r.direction, r.status, func.count()).group_by(r.p, r.direction, r.status)
        ):
            row = rows[p]
            up = direction == ReferralDirection.UP.value
            _add(row, ("upward" if up else "downward", "referrals"), n)
            _add(row, ("referrals", direction), n)
            if status == ReferralStatus.COMPLETED.value:
                _add(row, ("referrals", f"{direction}_completed"), n)

    total = _blank()
    for row in rows:
        _merge(total, row)
    audit_read(db, principal, "figures", remote, window, period=period)
    return {
        **window.describe(),
        "period": period,
        "periods": [
            {
                "period": s.label,
                "start": s.start.isoformat(),
                "end": s.end.isoformat(),
                **_finish(r),
            }
            for s, r in zip(spans, rows, strict=True)
        ],
        "total": _finish(total),
    }


def _merge(total: dict[str, Any], row: dict[str, Any]) -> None:
    for key, value in row.items():
        if isinstance(value, dict):
            _merge(total[key], value)
        elif isinstance(value, int):
            total[key] = total.get(key, 0) + value
