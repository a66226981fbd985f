"""Two-way referral over real HTTP, and the consortium figures that count it: a township clinic
refers a patient up to the county hospital, the county books an exam and completes it, the county
refers the patient back down with a bed booked, bad directions and transitions are refused, and
each side sees only what it should. The figures count cases by kind, interactive, origin tier and
upward/downward per month, quarter and year, in UTC and in Asia/Shanghai."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from telehub import figures, referrals
from telehub.analytics import parse_window
from telehub.auth import Principal
from telehub.db import Database
from telehub.db.migrate import upgrade
from telehub.db.models import AuditEntry, Case, CaseEvent, Facility, Referral, User
from telehub.demo import seed_demo
from telehub.errors import Conflict, Forbidden, NotFound
from telehub.timeline import Event
from tests.helpers import ECG_DATA, Api, Hub, start_hub
from tests.test_ecg_api import upload
from tests.test_tat_analytics import hub_db, read_case, routed_cases, send_studies


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    tmp = tmp_path_factory.mktemp("referrals")
    hub = start_hub(tmp)
    try:
        yield hub
    finally:
        hub.proc.stop()


def refer(api: Api, token: str, case_id: int, **body: Any) -> Any:
    return api.post(f"/api/v1/cases/{case_id}/referrals", body, token)


def move(api: Api, token: str, referral_id: int, **body: Any) -> Any:
    return api.post(f"/api/v1/referrals/{referral_id}", body, token)


def test_referral_up_and_down_with_bookings(hub: Hub, tmp_path: Path) -> None:
    api = hub.api
    admin, clinic, clinic2 = api.login("admin"), api.login("clinic"), api.login("clinic2")
    reader, reader2 = api.login("reader"), api.login("reader2")
    ecgreader, expert = api.login("ecgreader"), api.login("expert")
    (uid,) = send_studies(hub, tmp_path, "CLINIC1", ["REF-FLOW"])
    (case_id,) = routed_cases(api, admin, [uid])
    read_case(api, reader, case_id, prelim=False, final=True)

    # wrong way, unknown place, no reason: 400 and nothing stored
    for body, code in [
        ({"direction": "up", "to_facility": "T2"}, "bad_direction"),  # same tier
        ({"direction": "down", "to_facility": "PH"}, "bad_direction"),
        ({"direction": "sideways", "to_facility": "CH"}, "bad_direction"),
        ({"direction": "up", "to_facility": "NOWHERE"}, "unknown_facility"),
        ({"direction": "up", "to_facility": "CH", "reason": " "}, "no_reason"),
        ({"direction": "up", "to_facility": "CH", "booking": {"kind": "spa"}}, "bad_booking"),
    ]:
        resp = refer(api, clinic, case_id, **{"reason": "胸痛 chest pain", **body})
        assert resp.status == 400, (body, resp.body)
        assert resp.body["error"] == code, body
    assert refer(api, clinic2, case_id, direction="up", to_facility="CH", reason="x").status == 404

    # up: the township clinic refers its patient to the county hospital
    created = refer(
        api, clinic, case_id, direction="up", to_facility="CH", reason="疑似脑出血 suspected bleed"
    )
    assert created.status == 201, created.body
    up = created.body
    assert (up["status"], up["direction"]) == ("requested", "up")
    assert (up["from"]["code"], up["to"]["code"]) == ("T1", "CH")
    assert up["patient"]["patient_id"] == "REF-FLOW"
    assert up["case"]["study_instance_uids"] == [uid]
    assert up["outgoing"] and not up["incoming"]
    again = refer(api, clinic, case_id, direction="up", to_facility="PH", reason="again")
    assert again.status == 409 and again.body["error"] == "referral_open"

    # only the receiving facility moves it on; outsiders do not even see it
    assert move(api, clinic, up["id"], status="accepted").status == 403
    for outsider in (clinic2, expert):
        assert api.get(f"/api/v1/referrals/{up['id']}", outsider).status == 404
        assert move(api, outsider, up["id"], status="accepted").status == 404
    # the county's ECG reader cannot open the imaging case, but sees the referral and its case
    seen = api.get(f"/api/v1/referrals/{up['id']}", ecgreader)
    assert seen.status == 200, seen.body
    assert seen.body["incoming"] is True
    assert seen.body["case"]["id"] == case_id
    assert "No acute abnormality" in seen.body["case"]["final_report"]
    assert api.get(f"/api/v1/cases/{case_id}", ecgreader).status == 404

    no_booking = move(api, reader2, up["id"], status="booked")
    assert no_booking.status == 400 and no_booking.body["error"] == "booking_required"
    assert move(api, reader2, up["id"], status="accepted").body["status"] == "accepted"
    exam = {"kind": "exam", "at": "2030-01-05T09:30:00+08:00", "ref": "CT-0105"}
    booked = move(api, reader2, up["id"], status="booked", booking=exam)
    assert booked.status == 200, booked.body
    assert booked.body["booking"] == {
        "kind": "exam",
        "at": "2030-01-05T01:30:00+00:00",
        "ref": "CT-0105",
    }
    back = move(api, reader2, up["id"], status="accepted")
    assert back.status == 409 and back.body["error"] == "bad_transition"
    done = move(api, reader2, up["id"], status="completed", note="到院 arrived")
    assert done.status == 200 and done.body["completed_at"]
    assert move(api, clinic, up["id"], status="cancelled").status == 409

    # down: the patient is at the county hospital now, which refers them home with a bed booked
    wrong = refer(api, reader, case_id, direction="up", to_facility="T1", reason="rehab")
    assert wrong.status == 400 and wrong.body["error"] == "bad_direction"
    bed = {"kind": "bed", "at": "2030-01-20T08:00:00+00:00", "ref": "康复科 3床"}
    down = refer(
        api,
        reader,
        case_id,
        direction="down",
        to_facility="T1",
        reason="康复 rehabilitation",
        booking=bed,
    )
    assert down.status == 201, down.body
    assert (down.body["from"]["code"], down.body["to"]["code"]) == ("CH", "T1")
    assert down.body["status"] == "booked" and down.body["booking"]["ref"] == "康复科 3床"

    incoming = api.get("/api/v1/referrals?box=incoming", clinic).body["referrals"]
    assert [r["id"] for r in incoming] == [down.body["id"]]
    outgoing = api.get("/api/v1/referrals?box=outgoing", clinic).body["referrals"]
    assert [r["id"] for r in outgoing] == [up["id"]]
    listed = api.get("/api/v1/referrals?direction=up&status=completed", reader2).body
    assert [r["id"] for r in listed["referrals"]] == [up["id"]]
    assert api.get("/api/v1/referrals", clinic2).body["referrals"] == []
    assert len(api.get(f"/api/v1/referrals?case={case_id}", admin).body["referrals"]) == 2
    assert api.get("/api/v1/referrals?status=lost", admin).status == 400
    assert move(api, clinic, down.body["id"], status="completed").body["status"] == "completed"

    # the referring side may cancel; the other side may not
    third = refer(api, clinic, case_id, direction="up", to_facility="PH", reason="second look")
    assert third.status == 201 and third.body["from"]["code"] == "T1"
    refused = move(api, reader2, third.body["id"], status="cancelled")
    assert refused.status == 403 and refused.body["error"] == "not_referrer"
    assert move(api, clinic, third.body["id"], status="cancelled").body["status"] == "cancelled"

    timeline = api.get(f"/api/v1/cases/{case_id}", admin).body["timeline"]
    kinds = [e["kind"] for e in timeline]
    assert kinds.count(Event.REFERRAL_CREATED) == 3
    updates = [e["detail"]["status"] for e in timeline if e["kind"] == Event.REFERRAL_UPDATED]
    assert updates == ["accepted", "booked", "completed", "completed", "cancelled"]

    db = hub_db(hub)
    try:
        with db.reader() as session:
            reads = session.execute(
                select(AuditEntry.resource_type, AuditEntry.resource_id, AuditEntry.detail).where(
                    AuditEntry.action == "read", AuditEntry.resource_type.in_(("referral", "case"))
                )
            ).all()
    finally:
        db.dispose()
    assert ("referral", str(up["id"])) in {(r[0], r[1]) for r in reads}
    assert any(r[0] == "case" and r[2].get("via_referral") == up["id"] for r in reads)


# ----- consortium figures ------------------------------------------------------------------------
def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_consortium_figures(hub: Hub, tmp_path: Path) -> None:
    api = hub.api
    admin, clinic = api.login("admin"), api.login("clinic")
    t1 = send_studies(hub, tmp_path, "CLINIC1", ["FIG-A1", "FIG-A2", "FIG-D1"])
    t2 = send_studies(hub, tmp_path, "CLINIC2", ["FIG-B1", "FIG-B2"])
    ch = send_studies(hub, tmp_path, "COUNTYHOSP", ["FIG-C1"])
    a1, a2, d1, b1, b2, c1 = routed_cases(api, admin, t1 + t2 + ch)
    files = {n: (ECG_DATA / n).read_bytes() for n in ("100.hea", "100.dat")}
    ecg = upload(api, clinic, files)
    assert ecg.status == 201, ecg.body
    e1 = ecg.body["case_id"]

    up = refer(api, clinic, a1, direction="up", to_facility="CH", reason="转诊 refer")
    assert up.status == 201, up.body
    dropped = refer(api, api.login("clinic2"), b1, direction="up", to_facility="CH", reason="x")
    assert move(api, api.login("clinic2"), dropped.body["id"], status="cancelled").status == 200
    down = refer(api, api.login("expert"), c1, direction="down", to_facility="T1", reason="康复")
    assert down.status == 201, down.body  # the county's own patient, read at the province
    assert move(api, clinic, down.body["id"], status="accepted").status == 200
    assert move(api, clinic, down.body["id"], status="completed").status == 200

    arrivals = {
        a1: "2004-01-10T03:00",
        a2: "2004-01-11T03:00",
        b1: "2004-01-12T03:00",
        e1: "2004-01-13T03:00",
        b2: "2004-01-31T20:00",  # 2004-02-01 04:00 in Shanghai
        c1: "2004-02-05T03:00",
        d1: "2004-04-10T03:00",
    }
    db = hub_db(hub)
    try:
        with db.session() as session:
            for case_id, when in arrivals.items():
                session.get_one(Case, case_id).arrived_at = at(when)
            t2_id = session.scalar(select(Facility.id).where(Facility.code == "T2"))
            consult = Case(
                origin_facility_id=t2_id,
                kind="consultation",
                status="routed",
                arrived_at=at("2004-02-06T03:00"),
            )
            session.add(consult)
            session.flush()
            for case_id, kind, when in [
                (a2, Event.CONSULT_STARTED, "2004-01-11T05:00"),
                (consult.id, Event.CONSULT_STARTED, "2004-02-06T05:00"),
                (c1, Event.ESCALATED, "2004-02-05T06:00"),
                (d1, Event.SECOND_OPINION, "2004-04-10T06:00"),
            ]:
                session.add(CaseEvent(case_id=case_id, kind=kind, at=at(when), detail={}))
            for referral_id, when in [
                (up.body["id"], "2004-01-15T03:00"),
                (dropped.body["id"], "2004-01-20T03:00"),
                (down.body["id"], "2004-02-10T03:00"),
            ]:
                session.get_one(Referral, referral_id).created_at = at(when)
    finally:
        db.dispose()

    base = "/api/v1/analytics/figures?from=2004-01-01&to=2004-04-30"
    months = api.get(base + "&period=month", admin)
    assert months.status == 200, months.body
    jan, feb, mar, apr = months.body["periods"]
    assert [p["period"] for p in (jan, feb, mar, apr)] == [
        "2004-01",
        "2004-02",
        "2004-03",
        "2004-04",
    ]
    assert jan["remote_diagnoses"] == 5
    assert jan["by_kind"] == {"imaging": 4, "ecg": 1, "consultation": 0}
    assert (jan["interactive"], jan["non_interactive"]) == (1, 4)
    assert jan["by_origin_tier"]["township"] == 5
    assert jan["referrals"] == {"up": 1, "down": 0, "up_completed": 0, "down_completed": 0}
    assert feb["remote_diagnoses"] == 2
    assert feb["by_kind"] == {"imaging": 1, "ecg": 0, "consultation": 1}
    assert feb["by_origin_tier"] == {"village": 0, "township": 1, "county": 1, "tertiary": 0}
    assert feb["upward"] == {"escalations": 1, "referrals": 0, "total": 1}
    assert feb["downward"] == {"referrals": 1, "total": 1}
    assert feb["referrals"]["down_completed"] == 1
    assert mar["remote_diagnoses"] == 0 and mar["upward"]["total"] == 0
    assert apr["upward"] == {"escalations": 1, "referrals": 0, "total": 1}
    total = months.body["total"]
    assert total["remote_diagnoses"] == 8
    assert total["by_kind"] == {"imaging": 6, "ecg": 1, "consultation": 1}
    assert (total["interactive"], total["non_interactive"]) == (2, 6)
    assert total["upward"]["total"] == 3 and total["downward"]["total"] == 1
    assert total["up_down_ratio"] == 1.0

    shanghai = api.get(base + "&period=month&tz=Asia/Shanghai", admin).body
    assert [p["remote_diagnoses"] for p in shanghai["periods"]] == [4, 3, 0, 1]
    assert shanghai["periods"][0]["start"] == "2003-12-31T16:00:00+00:00"
    quarters = api.get(base + "&period=quarter", admin).body["periods"]
    assert [(q["period"], q["remote_diagnoses"]) for q in quarters] == [
        ("2004-Q1", 7),
        ("2004-Q2", 1),
    ]
    year = api.get(base + "&period=year", admin).body["periods"]
    assert [(y["period"], y["remote_diagnoses"]) for y in year] == [("2004", 8)]

    # a clinic's figures are its own: T1 sent a1, a2, d1 and the ECG; it received the down referral
    own = api.get(base + "&period=year", clinic).body["total"]
    assert own["remote_diagnoses"] == 4
    assert own["referrals"]["up"] == 1 and own["referrals"]["down"] == 1
    # the county imaging centre's reader: the township studies it reads, not the ECG, not c1
    county = api.get(base + "&period=year", api.login("reader")).body["total"]
    assert county["by_kind"] == {"imaging": 5, "ecg": 0, "consultation": 0}
    assert county["upward"]["escalations"] == 1  # d1's second opinion


# ----- PostgreSQL --------------------------------------------------------------------------------
def test_referrals_on_postgresql(postgres_url: str) -> None:
    """The same service on PostgreSQL (row locks, the figures' grouped counts)."""
    db = Database(postgres_url)
    try:
        upgrade(db)
        seed_demo(db)
        with db.session() as session:
            fac = {f.code: f.id for f in session.scalars(select(Facility))}
            row = Case(origin_facility_id=fac["T2"], kind="ecg", status="routed")
            session.add(row)
            session.flush()
            case_id = row.id
        who = {}
        with db.reader() as session:
            for user in session.scalars(select(User)):
                who[user.username] = Principal(
                    user.id, user.username, user.role, user.facility_id, user.centre_id
                )
        booking = referrals.parse_booking({"kind": "appointment", "at": "2031-02-03T10:00:00"})
        up = referrals.create(
            db, who["clinic2"], case_id, "up", "PH", "急性心梗 STEMI", booking, "test"
        )
        assert (up["status"], up["from"]["code"], up["to"]["code"]) == ("booked", "T2", "PH")
        assert up["booking"]["at"] == "2031-02-03T10:00:00+00:00"
        with pytest.raises(Conflict):
            referrals.create(db, who["clinic2"], case_id, "up", "CH", "again", None, "test")
        with pytest.raises(Forbidden):
            referrals.update(db, who["clinic2"], up["id"], "completed", None, "", "test")
        with pytest.raises(NotFound):
            referrals.get(db, who["clinic"], up["id"], "test")
        done = referrals.update(db, who["ecgexpert"], up["id"], "completed", None, "", "test")
        assert done["status"] == "completed"
        down = referrals.create(db, who["ecgexpert"], case_id, "down", "T2", "康复", None, "test")
        assert (down["from"]["code"], down["to"]["code"]) == ("PH", "T2")
        listed = referrals.list_referrals(db, who["clinic2"], "test", box="incoming")
        assert [r["id"] for r in listed] == [down["id"]]
        window = parse_window({}, default_days=1)
        total = figures.figures(db, who["admin"], window, "year", "test")["total"]
        assert total["referrals"] == {"up": 1, "down": 1, "up_completed": 1, "down_completed": 0}
        assert total["by_kind"]["ecg"] == 1 and total["by_origin_tier"]["township"] == 1
    finally:
        db.dispose()
