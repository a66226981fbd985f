"""TAT aggregates and SLA compliance over a period (by case arrival), grouped by origin facility,
reading centre, reader, modality, priority or kind; and their CSV export.

One SQL statement gives each case's milestone times (the first event of each kind, as
telehub.tat defines them) and, grouped, the count and the SLA figures. The percentiles (linear
interpolation, as PostgreSQL's ``percentile_cont``) are computed by PostgreSQL in the same
statement; SQLite has no percentile function, so there the milestone times of the period's
cases are fetched (one row of eight timestamps per case, nothing else) and interpolated in
Python. The tests check both against the same timeline.

SLA: a case met its SLA when its first final report is at or before ``Case.sla_deadline``; it is
breached when the final came later, or when it has none and the deadline has passed; otherwise
(deadline still ahead, or no deadline yet) it is pending and not in the compliance ratio.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import (
    ColumnElement,
    Float,
    Select,
    Subquery,
    and_,
    cast,
    func,
    literal,
    or_,
    select,
    type_coerce,
)
from sqlalchemy import case as when
from sqlalchemy.orm import Session, aliased

from telehub import audit
from telehub.access import visible_to
from telehub.auth import Principal
from telehub.db import Database
from telehub.db.models import (
    PRIORITY_RANK,
    Case,
    CaseEvent,
    CaseKind,
    Facility,
    Priority,
    ReadingCentre,
    Series,
    Study,
    User,
)
from telehub.db.types import UTCDateTime, utcnow
from telehub.errors import Invalid
from telehub.modalities import NON_IMAGE
from telehub.tat import MILESTONES, SPANS

GROUPS = ("origin", "centre", "reader", "modality", "priority", "kind")
PERCENTILES = (0.5, 0.9, 0.95)
#: Longest period one request may cover.
MAX_PERIOD = timedelta(days=366 * 20)


# ----- periods -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Window:
    """A period in UTC, start inclusive, end exclusive, and the zone its dates were given in."""

    start: datetime
    end: datetime
    tz: ZoneInfo

    def describe(self) -> dict[str, str]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat(), "tz": self.tz.key}


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise Invalid(f"unknown time zone {name!r}", "bad_parameter") from exc


def instant(raw: str, name: str, tz: ZoneInfo, end_of_day: bool = False) -> datetime:
    """A query parameter as a UTC time: a date (YYYY-MM-DD, the start of that day in ``tz``, or
    the start of the next day for an inclusive end) or an ISO 8601 time (no offset: ``tz``)."""
    raw = raw.strip()
    # An unencoded "+08:00" in a query string arrives as " 08:00".
    raw = re.sub(r" (\d\d:\d\d)$", r"+\1", raw)
    try:
        if len(raw) == 10:
            day = date.fromisoformat(raw)
            if end_of_day:
                day += timedelta(days=1)
            return datetime.combine(day, time(), tz).astimezone(UTC)
        value = datetime.fromisoformat(raw)
    except ValueError as exc:
        raise Invalid(
            f"{name} must be a date (YYYY-MM-DD) or an ISO 8601 time, not {raw!r}",
            "bad_parameter",
        ) from exc
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.astimezone(UTC)


def parse_window(params: Mapping[str, str], default_days: int) -> Window:
    """``from``/``to``/``tz`` query parameters. A date ``to`` includes that whole day; without
    ``to`` the period ends now, without ``from`` it starts ``default_days`` before its end."""
    tz = zone(params.get("tz") or "UTC")
    end = instant(params["to"], "to", tz, end_of_day=True) if params.get("to") else utcnow()
    start = (
        instant(params["from"], "from", tz)
        if params.get("from")
        else end - timedelta(days=default_days)
    )
    if start >= end:
        raise Invalid("from must be before to", "bad_period")
    if end - start > MAX_PERIOD:
        raise Invalid("a period may cover at most 20 years", "bad_period")
    return Window(start, end, tz)


# ----- the query -----------------------------------------------------------------------------
@dataclass(frozen=True)
class TatQuery:
    window: Window
    group_by: str | None = None
    priority: str | None = None
    kind: str | None = None
    #: A reading centre or origin facility, by id or code.
    centre: str | None = None
    origin: str | None = None


def parse_tat_query(params: Mapping[str, str], default_days: int = 30) -> TatQuery:
    group_by = params.get("group_by") or None
    if group_by is not None and group_by not in GROUPS:
        raise Invalid(f"group_by must be one of {', '.join(GROUPS)}", "bad_parameter")
    priority = params.get("priority") or None
    if priority is not None and priority not in {p.value for p in Priority}:
        raise Invalid(f"unknown priority {priority!r}", "bad_parameter")
    kind = params.get("kind") or None
    if kind is not None and kind not in {k.value for k in CaseKind}:
        raise Invalid(f"unknown kind {kind!r}", "bad_parameter")
    return TatQuery(
        window=parse_window(params, default_days),
        group_by=group_by,
        priority=priority,
        kind=kind,
        centre=params.get("centre") or None,
        origin=params.get("origin") or None,
    )


def _resolve(session: Session, model: type[Facility] | type[ReadingCentre], raw: str) -> int:
    """A facility or centre given by id or code; an unknown code is a 400."""
    if raw.isdigit():
        return int(raw)
    found = session.scalar(select(model.id).where(model.code == raw))
    if found is None:
        what = "centre" if model is ReadingCentre else "origin facility"
        raise Invalid(f"unknown {what} {raw!r}", "bad_parameter")
    return found


def case_modality() -> ColumnElement[str]:
    """A case's modality for grouping: the first acquisition modality of its series (a case is
    one examination; CT with a stored SR report is "CT"), "ECG" for an uploaded ECG."""
    first = (
        select(func.min(Series.modality))
        .join(Study, Study.id == Series.study_id)
        .where(Study.case_id == Case.id, Series.modality.not_in(sorted(NON_IMAGE)))
        .scalar_subquery()
    )
    fallback = when((Case.kind == CaseKind.ECG.value, literal("ECG")), else_=literal(""))
    return func.coalesce(first, fallback)


def _group_key(group_by: str | None) -> ColumnElement[Any]:
    if group_by == "origin":
        return Case.origin_facility_id
    if group_by == "centre":
        return Case.centre_id
    if group_by == "reader":
        return Case.reader_id
    if group_by == "modality":
        return case_modality()
    if group_by == "priority":
        return Case.priority
    if group_by == "kind":
        return Case.kind
    return literal("all")


def per_case(
    principal: Principal, window: Window, key: ColumnElement[Any], where: Sequence[Any] = ()
) -> Select[Any]:
    """One row per visible case that arrived in the window: its group key, SLA deadline and the
    time of each milestone (NULL when not reached)."""
    # An alias: visible_to may hold its own (correlated) subquery on the timeline.
    event = aliased(CaseEvent)
    kinds = [kind for kinds in MILESTONES.values() for kind in kinds]
    milestones = [
        type_coerce(func.min(when((event.kind.in_(ks), event.at))), UTCDateTime).label(name)
        for name, ks in MILESTONES.items()
    ]
    return (
        select(
            Case.id.label("case_id"),
            key.label("key"),
            Case.sla_deadline.label("deadline"),
            *milestones,
        )
        .select_from(Case)
        .outerjoin(event, and_(event.case_id == Case.id, event.kind.in_(kinds)))
        .where(
            visible_to(principal),
            Case.arrived_at >= window.start,
            Case.arrived_at < window.end,
            *where,
        )
        # Every other column depends on the primary key (PostgreSQL accepts that).
        .group_by(Case.id)
    )


def _aggregate(m: Subquery, now: datetime, percentiles_in_sql: bool) -> Select[Any]:
    final, deadline = m.c.final, m.c.deadline
    met = when((and_(final.is_not(None), deadline.is_not(None), final <= deadline), 1), else_=0)
    overdue = and_(final.is_(None), deadline < literal(now, UTCDateTime))
    breached = when((and_(deadline.is_not(None), or_(final > deadline, overdue)), 1), else_=0)
    columns: list[Any] = [
        m.c.key,
        func.count().label("count"),
        func.sum(met).label("met"),
        func.sum(breached).label("breached"),
    ]
    if percentiles_in_sql:
        for name, start, end in SPANS:
            seconds = cast(func.extract("epoch", m.c[end] - m.c[start]), Float)
            columns.append(func.count(seconds).label(f"{name}__n"))
            for p in PERCENTILES:
                columns.append(
                    func.percentile_cont(p).within_group(seconds).label(f"{name}__{_pname(p)}")
                )
    return select(*columns).group_by(m.c.key)


def _pname(p: float) -> str:
    return f"p{round(p * 100)}"


def percentile(ordered: Sequence[float], p: float) -> float | None:
    """Linear interpolation between closest ranks (PostgreSQL's percentile_cont)."""
    if not ordered:
        return None
    pos = (len(ordered) - 1) * p
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _python_percentiles(session: Session, stmt: Select[Any]) -> dict[Any, dict[str, Any]]:
    """SQLite: the milestone times of the period's cases, spans and percentiles in Python."""
    durations: dict[Any, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in session.execute(stmt).mappings():
        for name, start, end in SPANS:
            a, b = row[start], row[end]
            if a is not None and b is not None:
                durations[row["key"]][name].append((b - a).total_seconds())
    out: dict[Any, dict[str, Any]] = {}
    for key, spans in durations.items():
        out[key] = {}
        for name, values in spans.items():
            values.sort()
            out[key][f"{name}__n"] = len(values)
            for p in PERCENTILES:
                out[key][f"{name}__{_pname(p)}"] = percentile(values, p)
    return out


def _figures(row: Mapping[str, Any], extra: Mapping[str, Any], with_tat: bool) -> dict[str, Any]:
    count, met, breached = int(row["count"]), int(row["met"] or 0), int(row["breached"] or 0)
    result: dict[str, Any] = {"count": count}
    if with_tat:
        values = {**row, **extra}
        tat: dict[str, Any] = {}
        for name, _, _ in SPANS:
            part: dict[str, Any] = {"n": int(values.get(f"{name}__n") or 0)}
            for p in PERCENTILES:
                value = values.get(f"{name}__{_pname(p)}")
                part[_pname(p)] = None if value is None else round(float(value), 3)
            tat[name] = part
        result["tat"] = tat
    result["sla"] = {
        "met": met,
        "breached": breached,
        "pending": count - met - breached,
        "compliance": round(met / (met + breached), 4) if met + breached else None,
    }
    return result


def _labels(session: Session, group_by: str | None, keys: list[Any]) -> dict[Any, dict[str, Any]]:
    """What to show for each group key (code and name of a facility, centre or reader)."""
    labels: dict[Any, dict[str, Any]] = {}
    ids = [k for k in keys if k is not None]
    if group_by == "origin":
        for fac in session.scalars(select(Facility).where(Facility.id.in_(ids))):
            labels[fac.id] = {"id": fac.id, "code": fac.code, "name": fac.name, "tier": fac.tier}
    elif group_by == "centre":
        for centre in session.scalars(select(ReadingCentre).where(ReadingCentre.id.in_(ids))):
            labels[centre.id] = {"id": centre.id, "code": centre.code, "name": centre.name}
    elif group_by == "reader":
        for user in session.scalars(select(User).where(User.id.in_(ids))):
            labels[user.id] = {"id": user.id, "code": user.username, "name": user.display_name}
    for key in keys:
        if key not in labels:
            if key is None:
                labels[key] = {"id": None, "code": "", "name": "未分配 unassigned"}
            elif key == "":
                labels[key] = {"id": None, "code": "", "name": "未知 unknown"}
            else:
                labels[key] = {"id": None, "code": str(key), "name": str(key)}
    return labels


def _filters(session: Session, q: TatQuery) -> list[Any]:
    where: list[Any] = []
    if q.priority:
        where.append(Case.priority == q.priority)
    if q.kind:
        where.append(Case.kind == q.kind)
    if q.centre:
        where.append(Case.centre_id == _resolve(session, ReadingCentre, q.centre))
    if q.origin:
        where.append(Case.origin_facility_id == _resolve(session, Facility, q.origin))
    return where


def grouped(
    session: Session,
    db: Database,
    principal: Principal,
    window: Window,
    group_by: str | None,
    where: Sequence[Any] = (),
    with_tat: bool = True,
) -> list[dict[str, Any]]:
    """Count, TAT percentiles and SLA figures per group, groups in key order."""
    stmt = per_case(principal, window, _group_key(group_by), where)
    in_sql = with_tat and not db.is_sqlite
    rows = session.execute(_aggregate(stmt.subquery(), utcnow(), in_sql)).mappings().all()
    extra = _python_percentiles(session, stmt) if with_tat and db.is_sqlite else {}
    labels = _labels(session, group_by, [row["key"] for row in rows])
    groups = [
        {"group": labels[row["key"]], **_figures(row, extra.get(row["key"], {}), with_tat)}
        for row in rows
    ]
    if group_by == "priority":  # most urgent first, as on a worklist
        order = [p.value for p in PRIORITY_RANK]
        groups.sort(key=lambda g: order.index(g["group"]["code"]))
    else:
        groups.sort(key=lambda g: str(g["group"]["code"]))
    return groups


def _empty(with_tat: bool) -> dict[str, Any]:
    return _figures({"count": 0, "met": 0, "breached": 0}, {}, with_tat)


def tat_report(db: Database, principal: Principal, q: TatQuery, remote: str) -> dict[str, Any]:
    """TAT percentiles and SLA compliance of the visible cases that arrived in the period:
    per group and overall. A reader sees their centre's cases, a clinic its own."""
    with db.reader() as session:
        where = _filters(session, q)
        overall = grouped(session, db, principal, q.window, None, where)
        groups = grouped(session, db, principal, q.window, q.group_by, where) if q.group_by else []
    result = {
        **q.window.describe(),
        "group_by": q.group_by,
        "filters": {"priority": q.priority, "kind": q.kind, "centre": q.centre, "origin": q.origin},
        "spans": [{"name": n, "from": a, "to": b} for n, a, b in SPANS],
        "unit": "seconds",
        "overall": {k: v for k, v in overall[0].items() if k != "group"}
        if overall
        else _empty(True),
        "groups": groups,
    }
    audit_read(db, principal, "tat", remote, q.window, group_by=q.group_by)
    return result


def sla_report(db: Database, principal: Principal, window: Window, remote: str) -> dict[str, Any]:
    """SLA compliance of the visible cases that arrived in the period, by priority and centre."""
    with db.reader() as session:
        overall = grouped(session, db, principal, window, None, with_tat=False)
        by_priority = grouped(session, db, principal, window, "priority", with_tat=False)
        by_centre = grouped(session, db, principal, window, "centre", with_tat=False)
    audit_read(db, principal, "sla", remote, window)
    return {
        **window.describe(),
        "overall": {k: v for k, v in overall[0].items() if k != "group"}
        if overall
        else _empty(False),
        "by_priority": by_priority,
        "by_centre": by_centre,
    }


def audit_read(
    db: Database, principal: Principal, what: str, remote: str, window: Window, **detail: Any
) -> None:
    with db.session() as session:
        audit.record(
            session,
            principal.user_id,
            "read",
            "analytics",
            what,
            remote=remote,
            **window.describe(),
            **detail,
        )


# ----- CSV -----------------------------------------------------------------------------------
def csv_columns() -> list[str]:
    columns = ["group_by", "id", "code", "name", "count"]
    for name, _, _ in SPANS:
        columns += [f"{name}_n", *(f"{name}_{_pname(p)}" for p in PERCENTILES)]
    return [*columns, "sla_met", "sla_breached", "sla_pending", "sla_compliance"]


def to_csv(report: Mapping[str, Any]) -> str:
    """The TAT report as CSV, one row per group then the overall row; seconds. Starts with a
    byte order mark so Excel reads the UTF-8 (Chinese facility names) correctly."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(csv_columns())
    rows = [(report["group_by"] or "", g["group"], g) for g in report["groups"]]
    rows.append(("all", {"id": None, "code": "*", "name": "全部 All"}, report["overall"]))
    for group_by, label, figures in rows:
        line: list[Any] = [group_by, label["id"] or "", label["code"], label["name"]]
        line.append(figures["count"])
        for name, _, _ in SPANS:
            part = figures["tat"][name]
            line += [
                part["n"],
                *("" if part[_pname(p)] is None else part[_pname(p)] for p in PERCENTILES),
            ]
        sla = figures["sla"]
        compliance = "" if sla["compliance"] is None else sla["compliance"]
        line += [sla["met"], sla["breached"], sla["pending"], compliance]
        writer.writerow(line)
    return "\ufeff" + out.getvalue()
