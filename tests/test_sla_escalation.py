"""SLA warnings, breaches and escalation: the sweep against SQLite and PostgreSQL (once only,
even with two sweeps at once), reader escalation and second opinion, priority changes; then end
to end over HTTP with a real hub whose Celery beat escalates an unclaimed STAT case."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from dicom.send import send_paths
from telehub import escalation, sla_sweep, timeline
from telehub.access import visible_to
from telehub.auth import Principal
from telehub.db import Database
from telehub.db.models import Case, CaseStatus, Report, User
from telehub.errors import Conflict, Forbidden, Invalid, NotFound
from tests.helpers import Api, Hub, fresh_copy, start_hub
from tests.test_routing_rules import SETTINGS, events, make_case, route, routed_to

STAT = timedelta(seconds=SETTINGS.sla_stat_seconds)


def who(db: Database, username: str) -> Principal:
    with db.reader() as session:
        user = session.scalars(select(User).where(User.username == username)).one()
        return Principal(user.id, user.username, user.role, user.facility_id, user.centre_id)


def routed_stat_case(db: Database) -> tuple[int, Case]:
    case_id = make_case(db, priority="stat")
    route(db, case_id)
    with db.reader() as session:
        return case_id, session.get_one(Case, case_id)


def counts(db: Database, case_id: int) -> tuple[int, int, int]:
    return (
        len(events(db, case_id, timeline.Event.SLA_WARNING)),
        len(events(db, case_id, timeline.Event.SLA_BREACHED)),
        len(events(db, case_id, timeline.Event.ESCALATED)),
    )


def test_sweep_escalates_warns_and_breaches_once(db: Database) -> None:
    case_id, case = routed_stat_case(db)
    start = events(db, case_id, timeline.Event.STUDY_COMPLETE)[0].at
    assert case.escalate_at == start + STAT * SETTINGS.sla_escalate_fraction

    assert sla_sweep.sweep(db, SETTINGS, start + STAT * 0.4) == sla_sweep.SweepResult(0, 0, 0)
    after_escalate = case.escalate_at + timedelta(seconds=1)
    assert sla_sweep.sweep(db, SETTINGS, after_escalate).escalated == 1
    assert sla_sweep.sweep(db, SETTINGS, after_escalate).escalated == 0
    assert routed_to(db, case_id) == ("PH-IMAGING", "routed")
    (up,) = events(db, case_id, timeline.Event.ESCALATED)
    waited = SETTINGS.sla_stat_seconds * SETTINGS.sla_escalate_fraction
    assert up.detail["rule"] == f"sla: unclaimed after {waited:g} s"
    assert (up.detail["from"], up.detail["to"], up.detail["by"]) == (
        "CH-IMAGING",
        "PH-IMAGING",
        "sla",
    )
    with db.reader() as session:
        moved = session.get_one(Case, case_id)
        assert moved.escalations == 1 and moved.escalate_at is None  # nothing above PH

    warn_point = start + STAT * SETTINGS.sla_warn_fraction + timedelta(seconds=1)
    assert sla_sweep.sweep(db, SETTINGS, warn_point).warned == 1
    assert sla_sweep.sweep(db, SETTINGS, warn_point).warned == 0
    after_deadline = start + STAT + timedelta(seconds=1)
    assert sla_sweep.sweep(db, SETTINGS, after_deadline) == sla_sweep.SweepResult(0, 1, 0)
    assert sla_sweep.sweep(db, SETTINGS, after_deadline) == sla_sweep.SweepResult(0, 0, 0)
    assert counts(db, case_id) == (1, 1, 1)


def test_two_sweeps_at_once_never_double_an_event(db: Database) -> None:
    ids = [routed_stat_case(db)[0] for _ in range(12)]
    later = events(db, ids[-1], timeline.Event.STUDY_COMPLETE)[0].at + STAT * 2
    other = Database(db.url)  # as a second beat in another process would have
    barrier = threading.Barrier(2)
    results: list[sla_sweep.SweepResult] = []
    errors: list[BaseException] = []

    def run(database: Database) -> None:
        try:
            barrier.wait(timeout=10)
            results.append(sla_sweep.sweep(database, SETTINGS, later))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(d,)) for d in (db, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    other.dispose()
    assert not errors, errors
    assert sum(r.warned for r in results) == 12
    assert sum(r.breached for r in results) == 12
    assert sum(r.escalated for r in results) == 12
    for case_id in ids:
        assert counts(db, case_id) == (1, 1, 1)


def test_held_cases_are_not_escalated_and_final_ones_are_left_alone(db: Database) -> None:
    held, _ = routed_stat_case(db)
    final, _ = routed_stat_case(db)
    reader = who(db, "reader")
    with db.session() as session:
        session.get_one(Case, held).reader_id = reader.user_id
        session.get_one(Case, held).status = CaseStatus.CLAIMED.value
        session.get_one(Case, final).status = CaseStatus.FINAL.value
    later = events(db, final, timeline.Event.STUDY_COMPLETE)[0].at + STAT * 2
    sla_sweep.sweep(db, SETTINGS, later)
    assert counts(db, held) == (1, 1, 0)
    assert routed_to(db, held) == ("CH-IMAGING", "claimed")
    assert counts(db, final) == (0, 0, 0)


def test_second_opinion_keeps_reports_and_the_sender_still_sees_the_case(db: Database) -> None:
    case_id = make_case(db)
    route(db, case_id)
    reader, reader2 = who(db, "reader"), who(db, "reader2")
    with db.session() as session:
        case = session.get_one(Case, case_id)
        case.reader_id, case.status = reader.user_id, CaseStatus.PRELIMINARY.value
        session.add(
            Report(
                case_id=case_id,
                version=1,
                status="preliminary",
                text="小结节 small nodule?",
                author_id=reader.user_id,
            )
        )
    with pytest.raises(Forbidden):  # held by another reader
        escalation.escalate(db, SETTINGS, reader2, case_id, "why", second_opinion=True)
    with pytest.raises(Invalid):
        escalation.escalate(db, SETTINGS, reader, case_id, "  ", second_opinion=True)
    data = escalation.escalate(db, SETTINGS, reader, case_id, "请会诊 nodule", second_opinion=True)
    assert data["centre"]["code"] == "PH-IMAGING" and data["status"] == "routed"
    assert data["reader"] is None and data["second_opinion"] is True
    (event,) = events(db, case_id, timeline.Event.SECOND_OPINION)
    assert event.detail["reason"] == "请会诊 nodule" and event.detail["by"] == "reader"
    assert event.actor_id == reader.user_id
    with db.reader() as session:
        case = session.get_one(Case, case_id)
        assert [r.status for r in case.reports] == ["preliminary"]
        assert case.escalations == 1 and case.lease_expires_at is None

        def sees(principal: Principal) -> bool:
            query = select(Case.id).where(Case.id == case_id, visible_to(principal))
            return session.scalar(query) is not None

        assert sees(reader) and sees(reader2) and sees(who(db, "expert"))
        assert not sees(who(db, "ecgreader")) and not sees(who(db, "clinic2"))
    with pytest.raises(Conflict) as top:
        escalation.escalate(db, SETTINGS, who(db, "expert"), case_id, "higher?")
    assert top.value.code == "top_tier"


def test_priority_change_recomputes_the_deadline_from_the_same_start(db: Database) -> None:
    case_id = make_case(db, completed_ago=300)
    route(db, case_id)
    start = events(db, case_id, timeline.Event.STUDY_COMPLETE)[0].at
    with pytest.raises(NotFound):
        escalation.change_priority(db, SETTINGS, who(db, "clinic2"), case_id, "stat")
    with pytest.raises(Invalid):
        escalation.change_priority(db, SETTINGS, who(db, "clinic"), case_id, "asap")
    data = escalation.change_priority(db, SETTINGS, who(db, "clinic"), case_id, "stat")
    assert data["priority"] == "stat"
    with db.reader() as session:
        case = session.get_one(Case, case_id)
        assert case.priority_rank == 0 and case.sla_deadline == start + STAT
        assert case.escalate_at == start + STAT * SETTINGS.sla_escalate_fraction
    (event,) = events(db, case_id, timeline.Event.PRIORITY_CHANGED)
    assert (event.detail["from"], event.detail["to"], event.detail["by"]) == (
        "routine",
        "stat",
        "clinic",
    )
    escalation.change_priority(db, SETTINGS, who(db, "clinic"), case_id, "stat")  # no change
    assert len(events(db, case_id, timeline.Event.PRIORITY_CHANGED)) == 1


# ----- end to end: HTTP, the outbox, the Celery worker and its beat --------------------------
@pytest.fixture(scope="module")
def sla_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    hub = start_hub(
        tmp_path_factory.mktemp("sla"),
        {
            "TELEHUB_SLA_STAT_SECONDS": "4",
            "TELEHUB_SLA_CHECK_SECONDS": "0.5",
            "TELEHUB_STUDY_QUIET_SECONDS": "600",  # complete only when the clinic says so
        },
        "sla",
    )
    # Nobody on duty: the hub pushes nothing, so cases wait unclaimed on the worklists.
    with sqlite3.connect(hub.data / "telehub.sqlite3", timeout=30) as conn:
        conn.execute("UPDATE users SET on_duty = 0 WHERE role = 'reader'")
    yield hub
    hub.proc.stop()


def _new_case(hub: Hub, tmp_path: Path, clinic: str) -> int:
    path = fresh_copy("CT_small.dcm", tmp_path)
    study = pydicom.dcmread(path).StudyInstanceUID
    assert send_paths([path], "127.0.0.1", hub.dicom_port, "CLINIC1").sent == 1
    found = hub.api.wait_for(
        "/api/v1/cases?limit=500",
        clinic,
        lambda body: [c["id"] for c in body["cases"] if study in c["study_instance_uids"]],
    )
    return found[0]


def _timeline(api: Api, token: str, case_id: int, kind: str) -> list[dict]:
    body = api.get(f"/api/v1/cases/{case_id}", token).body
    return [e for e in body["timeline"] if e["kind"] == kind]


def _routed(api: Api, token: str, case_id: int) -> dict:
    return api.wait_for(
        f"/api/v1/cases/{case_id}",
        token,
        lambda body: body if body["status"] == "routed" else None,
    )


def test_unclaimed_stat_case_goes_up_by_sla(sla_hub: Hub, tmp_path: Path) -> None:
    api = sla_hub.api
    clinic, admin = api.login("clinic"), api.login("admin")
    case_id = _new_case(sla_hub, tmp_path, clinic)
    assert api.post(f"/api/v1/cases/{case_id}/priority", {"priority": "now"}, clinic).status == 400
    raised = api.post(f"/api/v1/cases/{case_id}/priority", {"priority": "stat"}, clinic)
    assert raised.status == 200, raised.body
    assert raised.body["priority"] == "stat"
    assert api.post(f"/api/v1/cases/{case_id}/complete", {}, clinic).status == 200

    escalated = api.wait_for(
        f"/api/v1/cases/{case_id}",
        admin,
        lambda body: [e for e in body["timeline"] if e["kind"] == "escalated"] or None,
    )
    assert escalated[0]["detail"]["rule"] == "sla: unclaimed after 2 s"
    assert (escalated[0]["detail"]["from"], escalated[0]["detail"]["to"]) == (
        "CH-IMAGING",
        "PH-IMAGING",
    )
    (routed,) = _timeline(api, admin, case_id, "routed")
    assert routed["detail"]["centre"] == "CH-IMAGING"
    assert routed["detail"]["rule"].startswith("default")
    for kind in ("sla_warning", "sla_breached"):
        api.wait_for(
            f"/api/v1/cases/{case_id}",
            admin,
            lambda body, kind=kind: [e for e in body["timeline"] if e["kind"] == kind] or None,
        )
    time.sleep(2)  # several more beat ticks: nothing may be recorded twice
    for kind in ("escalated", "sla_warning", "sla_breached", "priority_changed"):
        assert len(_timeline(api, admin, case_id, kind)) == 1, kind
    case = api.get(f"/api/v1/cases/{case_id}", api.login("expert")).body
    assert case["centre"]["code"] == "PH-IMAGING" and case["escalations"] == 1


def test_reader_escalation_and_second_opinion_over_http(sla_hub: Hub, tmp_path: Path) -> None:
    api = sla_hub.api
    clinic, reader, reader2 = api.login("clinic"), api.login("reader"), api.login("reader2")
    expert, ecgreader, admin = api.login("expert"), api.login("ecgreader"), api.login("admin")
    up = _new_case(sla_hub, tmp_path / "up", clinic)
    assert api.post(f"/api/v1/cases/{up}/complete", {}, clinic).status == 200
    assert _routed(api, reader, up)["centre"]["code"] == "CH-IMAGING"

    path = f"/api/v1/cases/{up}/escalate"
    missing = api.post(path, {}, reader)
    assert missing.status == 400 and missing.body["error"] == "reason_required"
    assert api.post(path, {"reason": "  "}, reader).status == 400
    assert api.post(path, {"reason": "x"}, clinic).status == 403
    assert api.post(path, {"reason": "x"}, ecgreader).status == 404  # not its case to see
    done = api.post(path, {"reason": "复杂病例 complex case"}, reader)
    assert done.status == 200, done.body
    assert done.body["centre"]["code"] == "PH-IMAGING" and done.body["status"] == "routed"
    (event,) = _timeline(api, admin, up, "escalated")
    assert event["detail"]["reason"] == "复杂病例 complex case"
    assert (event["detail"]["from"], event["detail"]["to"], event["detail"]["by"]) == (
        "CH-IMAGING",
        "PH-IMAGING",
        "reader",
    )
    assert api.get(f"/api/v1/cases/{up}", reader).status == 200  # the sender still sees it
    top = api.post(path, {"reason": "even higher"}, expert)
    assert top.status == 409 and top.body["error"] == "top_tier"

    second = _new_case(sla_hub, tmp_path / "second", clinic)
    assert api.post(f"/api/v1/cases/{second}/complete", {}, clinic).status == 200
    _routed(api, reader, second)
    claimed = api.post(f"/api/v1/cases/{second}/claim", {}, reader)
    assert claimed.status == 200, claimed.body
    path = f"/api/v1/cases/{second}/second-opinion"
    assert api.post(path, {"reason": "mine?"}, reader2).status == 403  # held by another
    assert api.post(path, {}, reader).status == 400
    asked = api.post(path, {"reason": "请上级医院复核 please review"}, reader)
    assert asked.status == 200, asked.body
    assert asked.body["second_opinion"] is True and asked.body["reader"] is None
    assert asked.body["centre"]["code"] == "PH-IMAGING"
    (event,) = _timeline(api, admin, second, "second_opinion_requested")
    assert event["detail"]["to"] == "PH-IMAGING"

    # An admin routes a case by hand, and previews where a rule-less MR case would go.
    manual = api.post(f"/api/v1/cases/{second}/route", {"centre_code": "CH-IMAGING"}, admin)
    assert manual.status == 200, manual.body
    assert manual.body["centre"]["code"] == "CH-IMAGING"
    assert _timeline(api, admin, second, "routed")[-1]["detail"]["rule"] == "manual by admin"
    assert api.post(f"/api/v1/cases/{second}/route", {"centre_code": "X"}, admin).status == 400
    assert (
        api.post(f"/api/v1/cases/{second}/route", {"centre_code": "CH-IMAGING"}, reader).status
        == 403
    )
    preview = api.post("/api/v1/routing/preview", {"origin": "T1", "modality": "MR"}, admin)
    assert preview.status == 200 and preview.body["centre"]["code"] == "CH-IMAGING"
    assert api.post("/api/v1/routing/preview", {"origin": "T1"}, clinic).status == 403
