"""Worklists, claims, push assignment and leases over real HTTP on real hubs: order and every
filter, the qualification rule, unclaim, admin reassignment, push by workload with caps that STAT
bypasses, 20 readers racing for one case on PostgreSQL, and a lapsed lease going back to the
worklist (the old holder then gets 409)."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import func, select, update

from dicom.send import send_paths
from telehub import assignment, outbox, timeline
from telehub.db import Database
from telehub.db.models import (
    PRIORITY_RANK,
    ApiToken,
    Case,
    CaseEvent,
    Facility,
    OutboxMessage,
    Patient,
    Priority,
    ReadingCentre,
    Study,
    User,
)
from telehub.db.types import utcnow
from tests.helpers import Api, Hub, fresh_copy, start_hub

# ----- helpers -------------------------------------------------------------------------------
_TOKENS: dict[tuple[str, str], str] = {}


def login(api: Api, username: str) -> str:
    """A real login, once per hub and user (argon2 is slow on purpose)."""
    key = (api.base_url, username)
    if key not in _TOKENS:
        _TOKENS[key] = api.login(username)
    return _TOKENS[key]


def sqlite_db(hub: Hub) -> Database:
    return Database(f"sqlite:///{hub.data / 'telehub.sqlite3'}")


def _ids(db: Database, model: Any, key: Any) -> dict[str, int]:
    with db.reader() as session:
        return {k: i for i, k in session.execute(select(model.id, key)).all()}


def make_case(
    db: Database,
    *,
    origin: str = "T1",
    centre: str = "CH-IMAGING",
    priority: str = "routine",
    deadline: timedelta | None = timedelta(hours=24),
    modality: str = "CT",
    patient_name: str = "",
    patient_id: str = "",
    accession: str = "",
    question: str = "",
    arrived_at: datetime | None = None,
    subspecialty: str = "",
) -> int:
    """A routed case as routing leaves it (the rows, and ROUTED in the timeline)."""
    now = utcnow()
    with db.session() as session:
        origin_id = session.scalar(select(Facility.id).where(Facility.code == origin))
        centre_id = session.scalar(select(ReadingCentre.id).where(ReadingCentre.code == centre))
        patient = Patient(
            issuer=origin,
            patient_id=patient_id or uuid.uuid4().hex[:12],
            name=patient_name,
        )
        session.add(patient)
        session.flush()
        case = Case(
            origin_facility_id=origin_id,
            patient_id=patient.id,
            kind="imaging",
            priority=priority,
            priority_rank=PRIORITY_RANK[Priority(priority)],
            status="routed",
            centre_id=centre_id,
            clinical_question=question,
            subspecialty=subspecialty,
            arrived_at=arrived_at or now,
            sla_deadline=now + deadline if deadline is not None else None,
        )
        session.add(case)
        session.flush()
        session.add(
            Study(
                study_uid=generate_uid(),
                case_id=case.id,
                patient_id=patient.id,
                accession_number=accession,
                modalities=modality,
                instance_count=1,
                completed_at=now,
            )
        )
        timeline.record(session, case.id, timeline.Event.ROUTED, centre_id=centre_id, rule="test")
        return case.id


def events(db: Database, case_id: int, kind: str) -> list[CaseEvent]:
    with db.reader() as session:
        return list(
            session.scalars(
                select(CaseEvent)
                .where(CaseEvent.case_id == case_id, CaseEvent.kind == kind)
                .order_by(CaseEvent.id)
            )
        )


def case_row(db: Database, case_id: int) -> Case:
    with db.reader() as session:
        return session.get_one(Case, case_id)


def ids_in(body: dict[str, Any], mine: list[int] | set[int]) -> list[int]:
    return [c["id"] for c in body["cases"] if c["id"] in set(mine)]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    hub = start_hub(tmp_path_factory.mktemp("worklist"), name="worklist")
    yield hub
    hub.proc.stop()


@pytest.fixture(scope="module")
def db(hub: Hub) -> Iterator[Database]:
    database = sqlite_db(hub)
    yield database
    database.dispose()


# ----- worklists -----------------------------------------------------------------------------
def test_worklist_order_and_every_filter(hub: Hub, db: Database) -> None:
    api = hub.api
    reader, admin = login(api, "reader"), login(api, "admin")
    tag = uuid.uuid4().hex[:8]
    day = datetime(2021, 3, 4, 8, 0, tzinfo=UTC)
    c_routine_late = make_case(db, deadline=timedelta(hours=2), patient_name=f"Wang^Wu{tag}")
    c_stat_open = make_case(db, priority="stat", deadline=None, accession=f"ACC{tag}")
    c_urgent_late = make_case(db, priority="urgent", deadline=timedelta(hours=1), modality="MR")
    c_stat = make_case(db, priority="stat", deadline=timedelta(minutes=30), arrived_at=day)
    c_routine = make_case(
        db, origin="T2", deadline=timedelta(hours=1), question=f"胸痛 chest PAIN {tag}"
    )
    c_urgent = make_case(
        db, priority="urgent", deadline=timedelta(minutes=20), arrived_at=day + timedelta(days=1)
    )
    mine = [c_routine_late, c_stat_open, c_urgent_late, c_stat, c_routine, c_urgent]

    body = api.get("/api/v1/worklist?limit=500", reader).body
    # priority, then SLA deadline with cases without one last, then id
    assert ids_in(body, mine) == [
        c_stat,
        c_stat_open,
        c_urgent,
        c_urgent_late,
        c_routine,
        c_routine_late,
    ]
    row = next(c for c in body["cases"] if c["id"] == c_stat)
    assert row["sla_deadline"] and 0 < row["seconds_left"] <= 30 * 60
    assert row["claim"] is None and row["reader"] is None
    assert row["escalations"] == 0 and row["second_opinion"] is False
    assert row["centre"]["code"] == "CH-IMAGING" and row["critical_findings"] == []
    assert next(c for c in body["cases"] if c["id"] == c_stat_open)["seconds_left"] is None

    def only(query: str, token: str = reader) -> list[int]:
        resp = api.get(f"/api/v1/worklist?limit=500&{query}", token)
        assert resp.status == 200, resp.body
        return sorted(ids_in(resp.body, mine))

    t2 = _ids(db, Facility, Facility.code)["T2"]
    assert only("modality=MR") == [c_urgent_late]
    assert only("modality=ct") == sorted(set(mine) - {c_urgent_late})
    assert only("priority=urgent") == sorted([c_urgent, c_urgent_late])
    assert only("status=routed") == sorted(mine)
    assert only("status=claimed") == []
    assert only("origin=T2") == [c_routine]
    assert only(f"origin={t2}") == [c_routine]
    assert only("from=2021-03-04&to=2021-03-04") == [c_stat]  # a bare date: the whole day
    assert only("from=2021-03-04T09:00:00Z&to=2021-03-05") == [c_urgent]
    assert only("to=2021-03-05") == sorted([c_stat, c_urgent])
    assert only("from=2021-03-06") == sorted(set(mine) - {c_stat, c_urgent})
    assert only(f"q=wang^wu{tag}") == [c_routine_late]  # patient name, any case
    assert only(f"q=wang%20wu{tag}") == [c_routine_late]  # "Wang Wu" finds Wang^Wu
    assert only(f"q=acc{tag}") == [c_stat_open]  # accession number
    assert only(f"q=CHEST%20pain%20{tag}") == [c_routine]  # clinical question
    assert only("q=%25") == []  # LIKE wildcards are taken literally

    first = api.get("/api/v1/worklist?priority=stat&limit=1&count=1", reader).body
    second = api.get("/api/v1/worklist?priority=stat&limit=1&offset=1", reader).body
    assert len(first["cases"]) == 1 and first["total"] >= 2 and "total" not in second
    assert first["cases"][0]["id"] != second["cases"][0]["id"]

    for bad in ("status=lost", "priority=asap", "from=yesterday", "origin=NOWHERE", "scope=x"):
        resp = api.get(f"/api/v1/worklist?{bad}", reader)
        assert resp.status == 400 and resp.body["error"] == "bad_parameter", (bad, resp.body)

    # Admins pick a centre by id or code; readers see only their own; clinics none.
    centres = _ids(db, ReadingCentre, ReadingCentre.code)
    assert only("centre=CH-IMAGING", admin) == sorted(mine)
    assert only(f"centre={centres['CH-IMAGING']}", admin) == sorted(mine)
    assert only("centre=PH-IMAGING", admin) == []
    assert api.get("/api/v1/worklist?centre=NOPE", admin).status == 404
    assert api.get("/api/v1/worklist?centre=PH-IMAGING", reader).status == 403
    assert api.get("/api/v1/worklist", login(api, "clinic")).status == 403
    assert only("", login(api, "expert")) == []  # the provincial centre's worklist


def test_centre_worklist_and_scopes(hub: Hub, db: Database) -> None:
    api = hub.api
    reader, reader2 = login(api, "reader"), login(api, "reader2")
    held, waiting = make_case(db), make_case(db)
    assert api.post(f"/api/v1/cases/{held}/claim", token=reader2).status == 200
    centre = _ids(db, ReadingCentre, ReadingCentre.code)["CH-IMAGING"]

    def scope(query: str, token: str = reader) -> list[int]:
        resp = api.get(f"/api/v1/worklist?limit=500&{query}", token)
        assert resp.status == 200, resp.body
        return sorted(ids_in(resp.body, [held, waiting]))

    assert scope("") == [waiting]  # someone else's claim leaves my worklist
    assert scope("", reader2) == [held, waiting]  # unclaimed plus mine
    assert scope("scope=mine", reader2) == [held]
    assert scope("scope=centre") == [held, waiting]
    assert scope("scope=all") == [held, waiting]
    assert api.get("/api/v1/worklist?scope=mine", login(api, "admin")).status == 400

    body = api.get(f"/api/v1/centres/{centre}/worklist?limit=500", reader).body
    assert sorted(ids_in(body, [held, waiting])) == [held, waiting]
    row = next(c for c in body["cases"] if c["id"] == held)
    assert row["status"] == "claimed" and row["claim"]["claim_kind"] == "claim"
    assert row["claim"]["reader"]["username"] == "reader2" and row["claim"]["lease_expires_at"]
    admin_view = api.get(
        f"/api/v1/centres/{centre}/worklist?limit=500&count=1", login(api, "admin")
    )
    assert admin_view.status == 200 and admin_view.body["total"] >= 2
    assert api.get(f"/api/v1/centres/{centre}/worklist", login(api, "expert")).status == 403
    assert api.get(f"/api/v1/centres/{centre}/worklist", login(api, "clinic")).status == 403
    assert api.get("/api/v1/centres/999999/worklist", reader).status == 404


# ----- claim, unclaim, lease heartbeat, admin reassignment ------------------------------------
def test_claim_qualification_unclaim_heartbeat_and_reassign(hub: Hub, db: Database) -> None:
    api = hub.api
    reader, reader2 = login(api, "reader"), login(api, "reader2")
    resident, admin = login(api, "resident"), login(api, "admin")
    ct, mr = make_case(db), make_case(db, modality="MR")
    neuro = make_case(db, subspecialty="neuro")

    # resident is qualified for CR, DX and CT only
    refused = api.post(f"/api/v1/cases/{mr}/claim", token=resident)
    assert refused.status == 403 and refused.body["error"] == "not_qualified"
    assert "MR" in refused.body["message"]
    assert api.post(f"/api/v1/cases/{neuro}/claim", token=resident).status == 403
    assert case_row(db, mr).reader_id is None

    claimed = api.post(f"/api/v1/cases/{ct}/claim", token=resident)
    assert claimed.status == 200, claimed.body
    assert claimed.body["status"] == "claimed"
    assert claimed.body["claim"]["claim_kind"] == "claim"
    first_lease = datetime.fromisoformat(claimed.body["claim"]["lease_expires_at"])
    assert first_lease > utcnow() + timedelta(minutes=10)  # the 15-minute default
    assert len(events(db, ct, "claimed")) == 1
    again = api.post(f"/api/v1/cases/{ct}/claim", token=resident)
    assert again.status == 200 and len(events(db, ct, "claimed")) == 1  # harmless repeat

    lost = api.post(f"/api/v1/cases/{ct}/claim", token=reader2)
    assert lost.status == 409 and lost.body["error"] == "already_claimed"
    assert "resident" in lost.body["message"]
    for path in ("unclaim", "lease"):
        resp = api.post(f"/api/v1/cases/{ct}/{path}", token=reader2)
        assert resp.status == 409 and resp.body["error"] == "claimed_by_other", resp.body
    resp = api.post(f"/api/v1/cases/{mr}/lease", token=reader)
    assert resp.status == 409 and resp.body["error"] == "not_claimed"
    assert api.post(f"/api/v1/cases/{ct}/lease", token=login(api, "clinic")).status == 403

    beat = api.post(f"/api/v1/cases/{ct}/lease", token=resident)
    assert (
        beat.status == 200 and datetime.fromisoformat(beat.body["lease_expires_at"]) > first_lease
    )

    # Opening the case: OPENED once per reader; the holder's view renews the lease.
    for _ in range(2):
        assert api.get(f"/api/v1/cases/{ct}", resident).status == 200
    assert api.get(f"/api/v1/cases/{ct}", reader).status == 200
    opened = events(db, ct, "opened")
    assert len(opened) == 2 and {e.actor_id for e in opened} == {
        _ids(db, User, User.username)[u] for u in ("resident", "reader")
    }
    assert api.get(f"/api/v1/cases/{ct}", login(api, "clinic")).status == 200
    assert len(events(db, ct, "opened")) == 2  # clinics are not readers

    back = api.post(f"/api/v1/cases/{ct}/unclaim", token=resident)
    assert back.status == 200 and back.body["status"] == "routed" and back.body["reader"] is None
    assert events(db, ct, "unclaimed")[0].detail["reader_id"] == claimed.body["reader"]["id"]
    assert ct in ids_in(api.get("/api/v1/worklist?limit=500", reader).body, [ct])
    resp = api.post(f"/api/v1/cases/{ct}/unclaim", token=resident)
    assert resp.status == 409 and resp.body["error"] == "not_claimed"

    # Admin reassignment: to a qualified reader of the case's centre only.
    assert api.post(f"/api/v1/cases/{mr}/assign", {"reader": "reader2"}, reader).status == 403
    for who, code in (
        ("resident", "not_qualified"),
        ("expert", "reader_not_in_centre"),
        ("clinic", "bad_reader"),
        ("nobody", "bad_reader"),
    ):
        resp = api.post(f"/api/v1/cases/{mr}/assign", {"reader": who}, admin)
        assert resp.status == 400 and resp.body["error"] == code, (who, resp.body)
    assert api.post("/api/v1/cases/999999/assign", {"reader": "reader2"}, admin).status == 404
    given = api.post(f"/api/v1/cases/{mr}/assign", {"reader": "reader2"}, admin)
    assert given.status == 200, given.body
    assert given.body["reader"]["username"] == "reader2"
    assert given.body["claim"]["claim_kind"] == "admin" and given.body["status"] == "claimed"
    moved = api.post(f"/api/v1/cases/{mr}/assign", {"reader": "reader"}, admin)
    assert moved.status == 200 and moved.body["reader"]["username"] == "reader"
    assigned = events(db, mr, "assigned")
    assert [e.detail["reader"] for e in assigned] == ["reader2", "reader"]
    assert assigned[1].detail["previous_reader_id"] == given.body["reader"]["id"]
    assert assigned[1].detail["claim_kind"] == "admin"
    resp = api.post(f"/api/v1/cases/{mr}/claim", token=reader2)
    assert resp.status == 409 and resp.body["error"] == "already_claimed"


# ----- push ----------------------------------------------------------------------------------
def _push(db: Database, case_id: int, timeout: float = 30) -> Case:
    """Queue telehub.assign_case as routing does, and wait for the worker to finish it."""
    with db.session() as session:
        message = outbox.enqueue(session, "telehub.assign_case", case_id=case_id)
        session.flush()
        message_id = message.id
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.reader() as session:
            if session.get_one(OutboxMessage, message_id).done_at is not None:
                return session.get_one(Case, case_id)
        time.sleep(0.1)
    raise AssertionError(f"telehub.assign_case for case {case_id} did not finish")


def _readers(db: Database, **values: dict[str, Any]) -> None:
    with db.session() as session:
        for username, columns in values.items():
            session.execute(update(User).where(User.username == username).values(**columns))


def test_push_by_workload_caps_and_stat(hub: Hub, db: Database, tmp_path: Path) -> None:
    api = hub.api
    users = _ids(db, User, User.username)
    reader = login(api, "reader")
    # Nobody on duty (the default): push is off, the case stays on the worklist.
    idle = make_case(db)
    assert _push(db, idle).reader_id is None

    # Readers holding cases from earlier tests give them back (nobody on duty: no push).
    for token in (reader, login(api, "reader2"), login(api, "resident")):
        for row in api.get("/api/v1/worklist?scope=mine&limit=500", token).body["cases"]:
            assert api.post(f"/api/v1/cases/{row['id']}/unclaim", token=token).status == 200
    _drain(db)
    _readers(
        db,
        reader={"on_duty": True, "max_open_cases": 1},
        reader2={"on_duty": True, "max_open_cases": 1},
        resident={"on_duty": False},
    )
    try:
        held = make_case(db)
        assert api.post(f"/api/v1/cases/{held}/claim", token=reader).status == 200

        first = _push(db, make_case(db))
        assert first.reader_id == users["reader2"]  # fewer open cases (0 against 1)
        assert first.status == "claimed" and first.claim_kind == "push"
        assert first.lease_expires_at is not None
        why = events(db, first.id, "assigned")[0].detail
        assert why["reader"] == "reader2" and why["claim_kind"] == "push"
        assert why["why"]["open_cases"] == 0 and why["why"]["stat_bypasses_cap"] is False
        assert {c["username"]: c["open_cases"] for c in why["why"]["candidates"]} == {
            "reader": 1,
            "reader2": 0,
        }

        capped = _push(db, make_case(db, priority="urgent"))  # both at their cap of 1
        assert capped.reader_id is None and capped.status == "routed"
        assert events(db, capped.id, "assigned") == []

        stat = _push(db, make_case(db, priority="stat"))  # STAT bypasses caps
        assert stat.reader_id == users["reader"]  # 1 each: least recently assigned wins
        assert events(db, stat.id, "assigned")[0].detail["why"]["stat_bypasses_cap"] is True

        again = _push(db, stat.id)  # idempotent: a held case is left alone
        assert again.reader_id == users["reader"] and len(events(db, stat.id, "assigned")) == 1

        # Only on-duty, qualified readers: resident (no MR) alone on duty gets no MR case.
        _readers(
            db,
            reader={"on_duty": False},
            reader2={"on_duty": False},
            resident={"on_duty": True, "max_open_cases": None},
        )
        assert _push(db, make_case(db, modality="MR")).reader_id is None
        assert _push(db, make_case(db, modality="CT")).reader_id == users["resident"]

        # End to end: a study sent by a clinic is routed, then pushed by the hub itself.
        study = generate_uid()
        path = fresh_copy("CT_small.dcm", tmp_path, study_uid=study)
        assert send_paths([path], "127.0.0.1", hub.dicom_port, "CLINIC1").sent == 1
        pushed = api.wait_for(
            "/api/v1/worklist?scope=mine&limit=500",
            login(api, "resident"),
            lambda body: [c for c in body["cases"] if study in c["study_instance_uids"]],
            timeout=60,
        )
        assert pushed[0]["claim"]["claim_kind"] == "push"
        assert pushed[0]["reader"]["username"] == "resident"
    finally:
        _readers(
            db,
            reader={"on_duty": False, "max_open_cases": None},
            reader2={"on_duty": False, "max_open_cases": None},
            resident={"on_duty": False},
        )


def _drain(db: Database, timeout: float = 30) -> None:
    """Wait until the hub finished the outbox work queued so far."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with db.reader() as session:
            pending = session.scalar(
                select(func.count())
                .select_from(OutboxMessage)
                .where(OutboxMessage.done_at.is_(None), OutboxMessage.task == "telehub.assign_case")
            )
        if not pending:
            return
        time.sleep(0.1)
    raise AssertionError("assignment work still pending")


def test_reader_goes_on_and_off_duty(hub: Hub, db: Database) -> None:
    api = hub.api
    ecg = login(api, "ecgreader")
    resp = api.post("/api/v1/readers/me/duty", {"on_duty": True}, ecg)
    assert resp.status == 200 and resp.body["on_duty"] is True
    with db.reader() as session:
        assert session.scalar(select(User.on_duty).where(User.username == "ecgreader")) is True
    assert api.post("/api/v1/readers/me/duty", {"on_duty": False}, ecg).body["on_duty"] is False
    assert api.post("/api/v1/readers/me/duty", {"on_duty": "yes"}, ecg).status == 400
    assert (
        api.post("/api/v1/readers/me/duty", {"on_duty": True}, login(api, "clinic")).status == 403
    )


# ----- PostgreSQL: the claim race, lease expiry by the beat, two sweeps at once ----------------
@pytest.fixture
def pg_hub(tmp_path: Path, postgres_url: str) -> Iterator[tuple[Hub, Database]]:
    hub = start_hub(
        tmp_path,
        {
            "TELEHUB_DATABASE_URL": postgres_url,
            "TELEHUB_CLAIM_LEASE_SECONDS": "2",
            "TELEHUB_SLA_CHECK_SECONDS": "0.5",
        },
        name="pg",
    )
    database = Database(postgres_url)
    try:
        yield hub, database
    finally:
        hub.proc.stop()
        database.dispose()


def _add_readers(db: Database, count: int) -> list[str]:
    """More readers of the county imaging centre, with a bearer token each (made as login
    makes them; twenty argon2 logins would only measure argon2)."""
    tokens = [secrets.token_urlsafe(32) for _ in range(count)]
    with db.session() as session:
        model = session.scalar(select(User).where(User.username == "reader"))
        for i, token in enumerate(tokens):
            user = User(
                username=f"racer{i:02d}",
                display_name=f"racer {i}",
                password_hash=model.password_hash,
                role="reader",
                facility_id=model.facility_id,
                centre_id=model.centre_id,
            )
            session.add(user)
            session.flush()
            session.add(
                ApiToken(
                    token_hash=hashlib.sha256(token.encode()).hexdigest(),
                    user_id=user.id,
                    expires_at=utcnow() + timedelta(hours=1),
                )
            )
    return tokens


def _race(api: Api, tokens: list[str], case_id: int) -> list[Any]:
    """Every reader claims the case at the same moment, each on its own connection."""
    barrier = threading.Barrier(len(tokens))
    answers: list[Any] = [None] * len(tokens)

    def claim(i: int) -> None:
        client = Api(api.base_url)
        barrier.wait()
        answers[i] = client.post(f"/api/v1/cases/{case_id}/claim", token=tokens[i])

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(tokens))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return answers


def test_claim_race_lease_expiry_and_double_sweep_on_postgresql(
    pg_hub: tuple[Hub, Database],
) -> None:
    hub, db = pg_hub
    api = hub.api
    tokens = _add_readers(db, 20)

    for _ in range(2):
        case_id = make_case(db)
        answers = _race(api, tokens, case_id)
        statuses = sorted(a.status for a in answers)
        assert statuses == [200] + [409] * 19, statuses
        assert {a.body["error"] for a in answers if a.status == 409} == {"already_claimed"}
        winner = next(a.body["reader"]["username"] for a in answers if a.status == 200)
        assert len(events(db, case_id, "claimed")) == 1
        assert events(db, case_id, "claimed")[0].actor_id == _ids(db, User, User.username)[winner]

    # The last race's winner goes idle: the beat puts the case back on the worklist.
    holder = tokens[[a.status for a in answers].index(200)]
    deadline = time.monotonic() + 30
    while case_row(db, case_id).reader_id is not None:
        assert time.monotonic() < deadline, "the lease never lapsed"
        time.sleep(0.2)
    row = case_row(db, case_id)
    assert row.status == "routed" and row.lease_expires_at is None and row.claim_kind is None
    lapsed = events(db, case_id, "lease_expired")
    assert len(lapsed) == 1 and lapsed[0].detail["previous_status"] == "claimed"
    for path, body in (("lease", {}), ("reports", {"status": "preliminary", "text": "late"})):
        resp = api.post(f"/api/v1/cases/{case_id}/{path}", body, holder)
        assert resp.status == 409 and resp.body["error"] == "lease_expired", (path, resp.body)
    # ... and may claim it again, as anyone may.
    assert api.post(f"/api/v1/cases/{case_id}/claim", token=holder).status == 200

    # A heartbeat keeps the hold well past the lease time.
    kept = make_case(db)
    assert api.post(f"/api/v1/cases/{kept}/claim", token=tokens[0]).status == 200
    for _ in range(8):  # 4 s: twice the lease
        time.sleep(0.5)
        assert api.post(f"/api/v1/cases/{kept}/lease", token=tokens[0]).status == 200
    assert events(db, kept, "lease_expired") == []

    # Sweeps racing each other (and the hub's beat) release each lapsed case exactly once.
    lapsed_ids = [make_case(db) for _ in range(5)]
    reader_id = _ids(db, User, User.username)["racer05"]
    with db.session() as session:
        session.execute(
            update(Case)
            .where(Case.id.in_(lapsed_ids))
            .values(
                status="claimed",
                reader_id=reader_id,
                claim_kind="claim",
                lease_expires_at=utcnow() - timedelta(seconds=1),
            )
        )
    sweeps = [threading.Thread(target=assignment.expire_leases, args=(db,)) for _ in range(4)]
    for t in sweeps:
        t.start()
    for t in sweeps:
        t.join()
    for case_id in lapsed_ids:
        assert len(events(db, case_id, "lease_expired")) == 1
        assert case_row(db, case_id).reader_id is None
