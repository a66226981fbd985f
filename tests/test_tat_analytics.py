"""TAT and SLA aggregates over real HTTP: cases built through the real path (C-STORE as two
township clinics' modalities, claim, open, preliminary and final report), then their
timeline moved to chosen times in the hub's database (the aggregates read that same table), so
every percentile, count and compliance figure is checked exactly. On SQLite (percentiles in
Python) and on PostgreSQL (percentile_cont in SQL)."""

from __future__ import annotations

import csv
import io
import statistics
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom.send import send_paths
from telehub import analytics, figures
from telehub.auth import Principal
from telehub.db import Database
from telehub.db.migrate import upgrade
from telehub.db.models import (
    PRIORITY_RANK,
    AuditEntry,
    Case,
    CaseEvent,
    Facility,
    Priority,
    Series,
    Study,
    User,
)
from telehub.db.types import utcnow
from telehub.demo import seed_demo
from telehub.timeline import Event
from tests.helpers import Api, Hub, fresh_copy, start_hub


# ----- building cases through the real path (also used by the referral and priors tests) --------
def hub_db(hub: Hub) -> Database:
    """The running hub's own database (SQLite writers queue on its lock file, so this is safe)."""
    url = hub.env.get("TELEHUB_DATABASE_URL") or f"sqlite:///{(hub.data / 'telehub.sqlite3')}"
    return Database(url)


def send_studies(hub: Hub, folder: Path, aet: str, patient_ids: list[str]) -> list[str]:
    """One new CT study per patient ID, C-STOREd as the clinic's modality (by the engine of
    ``telehub send --aet``, in this process: a CLI start per call would cost seconds); their
    Study Instance UIDs in order."""
    folder = folder / f"send-{uuid.uuid4().hex[:8]}"
    paths = [fresh_copy("CT_small.dcm", folder, PatientID=pid) for pid in patient_ids]
    result = send_paths(paths, "127.0.0.1", hub.dicom_port, aet)
    assert result.sent == len(paths), result.refused
    return [pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in paths]


def routed_cases(api: Api, token: str, study_uids: list[str]) -> list[int]:
    """Wait until each study's case is on a worklist; the case ids in the studies' order."""

    def ready(body: dict[str, Any]) -> dict[str, int] | None:
        found = {
            uid: c["id"]
            for c in body["cases"]
            for uid in c["study_instance_uids"]
            if uid in study_uids and c["status"] == "routed"
        }
        return found if len(found) == len(study_uids) else None

    found = api.wait_for("/api/v1/cases?limit=500", token, ready, timeout=60)
    return [found[uid] for uid in study_uids]


def read_case(api: Api, reader: str, case_id: int, prelim: bool, final: bool) -> None:
    """Claim, open, and report as the reader would."""
    claimed = api.post(f"/api/v1/cases/{case_id}/claim", token=reader)
    assert claimed.status == 200, claimed.body
    assert api.get(f"/api/v1/cases/{case_id}", reader).status == 200
    if prelim:
        resp = api.post(
            f"/api/v1/cases/{case_id}/reports",
            {"text": "初步意见 preliminary", "status": "preliminary"},
            reader,
        )
        assert resp.status == 201, resp.body
    if final:
        resp = api.post(
            f"/api/v1/cases/{case_id}/reports",
            {"text": "未见明显异常 No acute abnormality.", "status": "final"},
            reader,
        )
        assert resp.status == 201, resp.body


#: Milestone event kind -> the plan's field giving its offset from arrival (seconds).
PLAN_KINDS = {
    Event.FIRST_INSTANCE: "arrival",
    Event.STUDY_COMPLETE: "complete",
    Event.ROUTED: "routed",
    Event.CLAIMED: "claimed",
    Event.OPENED: "opened",
    Event.REPORT_PRELIMINARY: "preliminary",
    Event.REPORT_FINAL: "final",
}


@dataclass
class Plan:
    """A case's timeline as the test wants it: seconds after arrival (None: never)."""

    name: str
    aet: str
    reader: str
    priority: str
    complete: int
    routed: int
    claimed: int
    opened: int
    preliminary: int | None
    final: int | None
    #: SLA deadline, seconds after arrival; None: a day after the test runs (still ahead).
    deadline: int | None
    arrived: datetime
    arrival: int = 0
    case_id: int = 0

    def at(self, field: str) -> datetime | None:
        value = getattr(self, field)
        return None if value is None else self.arrived + timedelta(seconds=value)


def retime(db: Database, plan: Plan) -> None:
    """Move the case's milestone events and arrival to the plan's times; set priority and SLA."""
    with db.session() as session:
        case = session.get_one(Case, plan.case_id)
        events = list(session.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id)))
        kinds = {e.kind for e in events}
        if Event.OPENED not in kinds:  # the case detail records it; the plan needs it either way
            session.add(CaseEvent(case_id=case.id, kind=Event.OPENED, at=utcnow(), detail={}))
            session.flush()
            events = list(session.scalars(select(CaseEvent).where(CaseEvent.case_id == case.id)))
        for event in events:
            field = PLAN_KINDS.get(event.kind)
            if field is not None:
                when = plan.at(field)
                assert when is not None, f"{plan.name}: unexpected {event.kind}"
                event.at = when
        case.arrived_at = plan.arrived
        case.priority = plan.priority
        case.priority_rank = PRIORITY_RANK[Priority(plan.priority)]
        case.escalate_at = None
        case.sla_deadline = (
            plan.at("deadline") if plan.deadline is not None else utcnow() + timedelta(days=1)
        )


def build(hub: Hub, tmp: Path, plans: list[Plan]) -> None:
    """Run every plan's case through the real path, then retime it."""
    api = hub.api
    admin = api.login("admin")
    tokens: dict[str, str] = {}
    for aet in dict.fromkeys(p.aet for p in plans):
        group = [p for p in plans if p.aet == aet]
        uids = send_studies(hub, tmp, aet, [f"TAT-{p.name}" for p in group])
        for plan, case_id in zip(group, routed_cases(api, admin, uids), strict=True):
            plan.case_id = case_id
    for plan in plans:
        token = tokens.setdefault(plan.reader, api.login(plan.reader))
        read_case(api, token, plan.case_id, plan.preliminary is not None, plan.final is not None)
    db = hub_db(hub)
    try:
        for plan in plans:
            retime(db, plan)
    finally:
        db.dispose()


# ----- expectations computed from the plans, independently of telehub ---------------------------
def quantiles(values: list[float]) -> dict[str, float | None]:
    """p50/p90/p95 by linear interpolation (statistics' inclusive method = percentile_cont)."""
    if not values:
        return {"p50": None, "p90": None, "p95": None}
    if len(values) == 1:
        return {"p50": values[0], "p90": values[0], "p95": values[0]}
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return {"p50": round(cuts[49], 3), "p90": round(cuts[89], 3), "p95": round(cuts[94], 3)}


SPANS = {
    "first_instance_to_complete": ("arrival", "complete"),
    "complete_to_routed": ("complete", "routed"),
    "routed_to_claimed": ("routed", "claimed"),
    "claimed_to_final": ("claimed", "final"),
    "routed_to_opened": ("routed", "opened"),
    "claimed_to_preliminary": ("claimed", "preliminary"),
    "preliminary_to_final": ("preliminary", "final"),
    "arrival_to_final": ("arrival", "final"),
    "complete_to_final": ("complete", "final"),
}


def expected_tat(plans: list[Plan]) -> dict[str, dict[str, Any]]:
    out = {}
    for name, (a, b) in SPANS.items():
        values = [
            float(getattr(p, b) - getattr(p, a))
            for p in plans
            if getattr(p, a) is not None and getattr(p, b) is not None
        ]
        out[name] = {"n": len(values), **quantiles(values)}
    return out


def expected_sla(plans: list[Plan]) -> dict[str, Any]:
    met = sum(
        1 for p in plans if p.final is not None and p.deadline is not None and p.final <= p.deadline
    )
    breached = sum(
        1 for p in plans if p.deadline is not None and (p.final is None or p.final > p.deadline)
    )
    return {
        "met": met,
        "breached": breached,
        "pending": len(plans) - met - breached,
        "compliance": round(met / (met + breached), 4) if met + breached else None,
    }


def check(figures: dict[str, Any], plans: list[Plan]) -> None:
    assert figures["count"] == len(plans)
    want = expected_tat(plans)
    for name in SPANS:
        assert figures["tat"][name] == want[name], name
    assert figures["sla"] == expected_sla(plans)


# ----- the data set ------------------------------------------------------------------------------
JUNE = datetime(2003, 6, 1, tzinfo=UTC)


def plans() -> list[Plan]:
    day = timedelta(days=1)
    rows = [
        # name aet reader priority complete routed claimed opened prelim final deadline
        ("A", "CLINIC1", "reader", "routine", 30, 32, 92, 100, None, 630, 1000),
        ("B", "CLINIC1", "reader", "urgent", 60, 61, 301, 305, 900, 1500, 1200),
        ("C", "CLINIC1", "reader", "stat", 10, 12, 42, 50, None, 250, 250),
        ("D", "CLINIC2", "reader2", "routine", 20, 25, 145, 150, None, 2025, 3000),
        ("E", "CLINIC2", "reader2", "urgent", 45, 50, 110, 115, 400, 800, 700),
        ("F", "CLINIC2", "reader2", "routine", 15, 16, 76, 80, None, None, 500),
        ("G", "CLINIC2", "reader2", "routine", 5, 6, 36, 40, None, None, None),
        # outside June: only in a wider period
        ("H", "CLINIC1", "reader", "routine", 7, 8, 9, 10, None, 11, 100),
    ]
    out = []
    for i, (name, aet, reader, prio, c, r, cl, o, pre, fin, dl) in enumerate(rows):
        arrived = JUNE + day * (3 * i + 1) if name != "H" else datetime(2003, 7, 2, tzinfo=UTC)
        out.append(Plan(name, aet, reader, prio, c, r, cl, o, pre, fin, dl, arrived))
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Hub, list[Plan]]]:
    tmp = tmp_path_factory.mktemp("tat")
    hub = start_hub(tmp)
    try:
        cases = plans()
        build(hub, tmp, cases)
        yield hub, cases
    finally:
        hub.proc.stop()


def june(plans: list[Plan]) -> list[Plan]:
    return [p for p in plans if p.name != "H"]


# ----- tests -------------------------------------------------------------------------------------
def test_case_detail_has_every_tat_part(built: tuple[Hub, list[Plan]]) -> None:
    hub, cases = built
    api = hub.api
    b = next(p for p in cases if p.name == "B")
    detail = api.get(f"/api/v1/cases/{b.case_id}", api.login("clinic"))
    assert detail.status == 200, detail.body
    want = {name: float(getattr(b, y) - getattr(b, x)) for name, (x, y) in SPANS.items()}
    assert {k: detail.body["tat"][k] for k in want} == want
    assert want["complete_to_final"] == (
        want["complete_to_routed"] + want["routed_to_claimed"] + want["claimed_to_final"]
    )


def test_overall_and_groups_match_the_timeline(built: tuple[Hub, list[Plan]]) -> None:
    hub, cases = built
    api = hub.api
    admin = api.login("admin")
    resp = api.get("/api/v1/analytics/tat?from=2003-06-01&to=2003-06-30&group_by=origin", admin)
    assert resp.status == 200, resp.body
    body = resp.body
    assert body["from"] == "2003-06-01T00:00:00+00:00"
    assert body["to"] == "2003-07-01T00:00:00+00:00"  # a date "to" includes that day
    check(body["overall"], june(cases))
    assert [g["group"]["code"] for g in body["groups"]] == ["T1", "T2"]
    for group in body["groups"]:
        aet = {"T1": "CLINIC1", "T2": "CLINIC2"}[group["group"]["code"]]
        check(group, [p for p in june(cases) if p.aet == aet])
    assert body["groups"][0]["group"]["name"].startswith("城关镇卫生院")

    # July's case H joins when the period covers it
    wide = api.get("/api/v1/analytics/tat?from=2003-06-01&to=2003-07-31", admin).body
    check(wide["overall"], cases)


@pytest.mark.parametrize(
    ("group_by", "key"),
    [
        ("reader", lambda p: p.reader),
        ("priority", lambda p: p.priority),
        ("centre", lambda p: "CH-IMAGING"),
        ("modality", lambda p: "CT"),
        ("kind", lambda p: "imaging"),
    ],
)
def test_group_by(built: tuple[Hub, list[Plan]], group_by: str, key: Any) -> None:
    hub, cases = built
    api = hub.api
    url = f"/api/v1/analytics/tat?from=2003-06-01&to=2003-06-30&group_by={group_by}"
    body = api.get(url, api.login("admin")).body
    groups = {g["group"]["code"]: g for g in body["groups"]}
    want_keys = list(dict.fromkeys(key(p) for p in june(cases)))
    assert set(groups) == set(want_keys)
    for code, group in groups.items():
        check(group, [p for p in june(cases) if key(p) == code])
    if group_by == "priority":
        assert list(groups) == ["stat", "urgent", "routine"]


def test_filters(built: tuple[Hub, list[Plan]]) -> None:
    hub, cases = built
    api = hub.api
    admin = api.login("admin")
    base = "/api/v1/analytics/tat?from=2003-06-01&to=2003-06-30"
    urgent = api.get(base + "&priority=urgent", admin).body
    check(urgent["overall"], [p for p in june(cases) if p.priority == "urgent"])
    t2 = api.get(base + "&origin=T2", admin).body
    check(t2["overall"], [p for p in june(cases) if p.aet == "CLINIC2"])
    centre = api.get(base + "&centre=CH-IMAGING", admin).body
    check(centre["overall"], june(cases))
    assert api.get(base + "&centre=PH-ECG", admin).body["overall"]["count"] == 0
    # a period written as instants, in another zone: 2003-06-04 08:00 Shanghai = 00:00 UTC
    narrow = api.get(
        "/api/v1/analytics/tat?from=2003-06-04T08:00:00%2B08:00&to=2003-06-05&tz=Asia/Shanghai",
        admin,
    ).body
    check(narrow["overall"], [p for p in cases if p.name == "B"])


def test_bad_parameters_answer_400(built: tuple[Hub, list[Plan]]) -> None:
    hub, _ = built
    api = hub.api
    admin = api.login("admin")
    for query, code in [
        ("group_by=weather", "bad_parameter"),
        ("from=last-tuesday", "bad_parameter"),
        ("from=2003-06-30&to=2003-06-01", "bad_period"),
        ("centre=NOWHERE", "bad_parameter"),
        ("priority=soon", "bad_parameter"),
        ("tz=Mars/Olympus", "bad_parameter"),
    ]:
        resp = api.get(f"/api/v1/analytics/tat?{query}", admin)
        assert resp.status == 400, (query, resp.body)
        assert resp.body["error"] == code, query
    bad_period = api.get("/api/v1/analytics/figures?period=week", admin)
    assert bad_period.status == 400
    assert api.get("/api/v1/analytics/tat").status == 401


def test_sla_by_priority_and_centre(built: tuple[Hub, list[Plan]]) -> None:
    hub, cases = built
    api = hub.api
    body = api.get("/api/v1/analytics/sla?from=2003-06-01&to=2003-06-30", api.login("admin")).body
    assert body["overall"]["sla"] == expected_sla(june(cases))
    assert body["overall"]["sla"]["pending"] == 1  # G: no report, deadline still ahead
    by_priority = {g["group"]["code"]: g["sla"] for g in body["by_priority"]}
    for prio in ("stat", "urgent", "routine"):
        assert by_priority[prio] == expected_sla([p for p in june(cases) if p.priority == prio])
    assert by_priority["routine"]["compliance"] == round(2 / 3, 4)  # A, D met; F overdue
    assert [g["group"]["code"] for g in body["by_centre"]] == ["CH-IMAGING"]
    assert body["by_centre"][0]["sla"] == expected_sla(june(cases))


def test_each_role_sees_its_own_figures(built: tuple[Hub, list[Plan]]) -> None:
    hub, cases = built
    api = hub.api
    url = "/api/v1/analytics/tat?from=2003-06-01&to=2003-06-30&group_by=origin"
    clinic = api.get(url, api.login("clinic")).body
    check(clinic["overall"], [p for p in june(cases) if p.aet == "CLINIC1"])
    assert [g["group"]["code"] for g in clinic["groups"]] == ["T1"]
    # another clinic's facility as a filter yields nothing, not their figures
    assert api.get(url + "&origin=T1", api.login("clinic2")).body["overall"]["count"] == 0
    reader = api.get(url, api.login("reader2")).body  # the county imaging centre's reader
    check(reader["overall"], june(cases))
    for outsider in ("ecgreader", "expert"):  # another centre of the county; the province
        body = api.get(url, api.login(outsider)).body
        assert body["overall"]["count"] == 0 and body["groups"] == []
        assert body["overall"]["sla"]["compliance"] is None


def test_csv_export(built: tuple[Hub, list[Plan]]) -> None:
    hub, cases = built
    api = hub.api
    admin = api.login("admin")
    query = "from=2003-06-01&to=2003-06-30&group_by=origin"
    raw = api.get(f"/api/v1/analytics/tat.csv?{query}", admin)
    assert raw.status == 200
    assert isinstance(raw.body, bytes) and raw.body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(raw.body.decode("utf-8-sig"))))
    assert [r["code"] for r in rows] == ["T1", "T2", "*"]
    assert rows[0]["name"].startswith("城关镇卫生院")
    for row in rows:
        group = [
            p
            for p in june(cases)
            if row["code"] == "*" or p.aet == {"T1": "CLINIC1", "T2": "CLINIC2"}[row["code"]]
        ]
        assert int(row["count"]) == len(group)
        for name, want in expected_tat(group).items():
            assert int(row[f"{name}_n"]) == want["n"]
            for p in ("p50", "p90", "p95"):
                cell = row[f"{name}_{p}"]
                assert (float(cell) if cell else None) == want[p], (row["code"], name, p)
        sla = expected_sla(group)
        assert int(row["sla_met"]) == sla["met"] and int(row["sla_breached"]) == sla["breached"]
        assert float(row["sla_compliance"]) == sla["compliance"]
    json_body = api.get(f"/api/v1/analytics/tat?{query}", admin).body
    assert (
        float(rows[2]["complete_to_final_p90"])
        == (json_body["overall"]["tat"]["complete_to_final"]["p90"])
    )


def test_reads_are_audited(built: tuple[Hub, list[Plan]]) -> None:
    hub, _ = built
    api = hub.api
    token = api.login("clinic2")
    assert api.get("/api/v1/analytics/sla?from=2003-06-01&to=2003-06-30", token).status == 200
    db = hub_db(hub)
    try:
        with db.reader() as session:
            rows = session.execute(
                select(AuditEntry.resource_id, AuditEntry.detail)
                .where(AuditEntry.resource_type == "analytics")
                .order_by(AuditEntry.id.desc())
            ).all()
    finally:
        db.dispose()
    assert rows[0].resource_id == "sla"
    assert rows[0].detail["from"] == "2003-06-01T00:00:00+00:00"
    assert {"tat", "sla"} <= {r.resource_id for r in rows}


# ----- PostgreSQL: the percentiles come from percentile_cont ------------------------------------
def insert_plans(db: Database, cases: list[Plan]) -> None:
    """The plans' cases written straight into a database (the HTTP path is tested above)."""
    with db.session() as session:
        facilities = {f.code: f for f in session.scalars(select(Facility))}
        users = {u.username: u for u in session.scalars(select(User))}
        for plan in cases:
            reader = users[plan.reader]
            case = Case(
                origin_facility_id=facilities[{"CLINIC1": "T1", "CLINIC2": "T2"}[plan.aet]].id,
                kind="imaging",
                priority=plan.priority,
                priority_rank=PRIORITY_RANK[Priority(plan.priority)],
                status="final" if plan.final is not None else "claimed",
                centre_id=reader.centre_id,
                reader_id=reader.id,
                arrived_at=plan.arrived,
                sla_deadline=plan.at("deadline")
                if plan.deadline is not None
                else utcnow() + timedelta(days=1),
            )
            session.add(case)
            session.flush()
            study = Study(study_uid=generate_uid(), case_id=case.id, modalities="CT\\SR")
            session.add(study)
            session.flush()
            session.add(Series(series_uid=generate_uid(), study_id=study.id, modality="SR"))
            session.add(Series(series_uid=generate_uid(), study_id=study.id, modality="CT"))
            for kind, field in PLAN_KINDS.items():
                when = plan.at(field)
                if when is not None:
                    session.add(CaseEvent(case_id=case.id, kind=kind, at=when, detail={}))
            plan.case_id = case.id


def principal_of(db: Database, username: str) -> Principal:
    with db.reader() as session:
        user = session.scalars(select(User).where(User.username == username)).one()
        return Principal(user.id, user.username, user.role, user.facility_id, user.centre_id)


def test_postgresql_aggregates_match(postgres_url: str) -> None:
    db = Database(postgres_url)
    try:
        upgrade(db)
        seed_demo(db)
        cases = plans()
        insert_plans(db, cases)
        admin = principal_of(db, "admin")
        params = {"from": "2003-06-01", "to": "2003-06-30", "group_by": "priority"}
        body = analytics.tat_report(db, admin, analytics.parse_tat_query(params), "test")
        check(body["overall"], june(cases))
        assert [g["group"]["code"] for g in body["groups"]] == ["stat", "urgent", "routine"]
        for group in body["groups"]:
            check(group, [p for p in june(cases) if p.priority == group["group"]["code"]])
        rows = list(csv.DictReader(io.StringIO(analytics.to_csv(body).lstrip("\ufeff"))))
        assert [r["code"] for r in rows] == ["stat", "urgent", "routine", "*"]

        by_modality = analytics.tat_report(
            db, admin, analytics.parse_tat_query({**params, "group_by": "modality"}), "test"
        )
        assert [g["group"]["code"] for g in by_modality["groups"]] == ["CT"]  # not the SR
        clinic = analytics.tat_report(
            db, principal_of(db, "clinic2"), analytics.parse_tat_query(params), "test"
        )
        check(clinic["overall"], [p for p in june(cases) if p.aet == "CLINIC2"])

        window = analytics.parse_window({"from": "2003-06-01", "to": "2003-07-31"}, 30)
        sla = analytics.sla_report(db, admin, window, "test")
        assert sla["overall"]["sla"] == expected_sla(cases)
        figures_ = figures.figures(db, admin, window, "month", "test")
        assert [p["remote_diagnoses"] for p in figures_["periods"]] == [7, 1]
        assert figures_["total"]["by_origin_tier"]["township"] == 8
    finally:
        db.dispose()
