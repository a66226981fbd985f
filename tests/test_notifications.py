"""Who hears of what: the event table on SQLite and PostgreSQL (recipients, once per event for
webhooks, in the event's transaction), and the in-app list over HTTP after a real final report."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from telehub import timeline
from telehub.db import Database
from telehub.db.models import (
    Case,
    Facility,
    Notification,
    OutboxMessage,
    Patient,
    ReadingCentre,
    Referral,
    User,
    Webhook,
    WebhookDelivery,
)
from telehub.timeline import Event
from tests.helpers import Hub, start_hub
from tests.test_webhooks import send_case


# ----- the event table, in-process on both databases -------------------------------------------
@pytest.fixture
def db(db: Database) -> Iterator[Database]:
    """The demo consortium on each database, with one catch-all webhook."""
    with db.session() as session:
        session.add(
            Webhook(name="all", kind="json", url="http://127.0.0.1:9/hook", events=[], secret="")
        )
    yield db


def ids(db: Database) -> dict[str, int]:
    """Demo users and facilities by name, centres as 'CH-IMAGING' etc."""
    with db.reader() as session:
        out = {u.username: u.id for u in session.scalars(select(User))}
        out |= {f.code: f.id for f in session.scalars(select(Facility))}
        out |= {c.code: c.id for c in session.scalars(select(ReadingCentre))}
        return out


def new_case(db: Database, priority: str = "routine", **values: Any) -> int:
    n = ids(db)
    with db.session() as session:
        patient = Patient(issuer="T1", patient_id=f"P-{uuid.uuid4().hex[:8]}", name="Wang^Wu")
        session.add(patient)
        session.flush()
        case = Case(
            **{
                "origin_facility_id": n["T1"],
                "kind": "imaging",
                "priority": priority,
                "status": "routed",
                "centre_id": n["CH-IMAGING"],
                "patient_id": patient.id,
                **values,
            }
        )
        session.add(case)
        session.flush()
        return case.id


def fire(db: Database, case_id: int, kind: str, actor: int | None = None, **detail: Any) -> set:
    """Record one event; returns the usernames notified by it."""
    with db.session() as session:
        before = session.scalar(select(func.max(Notification.id))) or 0
        timeline.record(session, case_id, kind, actor_id=actor, **detail)
        session.flush()
        rows = session.execute(
            select(User.username, Notification.kind, Notification.title)
            .join(User, User.id == Notification.user_id)
            .where(Notification.id > before)
        ).all()
    return {r.username for r in rows}


def test_who_hears_of_what(db: Database) -> None:
    n = ids(db)
    county_imaging = {"reader", "reader2", "resident"}

    routine = new_case(db)
    assert fire(db, routine, Event.ROUTED, centre_id=n["CH-IMAGING"]) == set()
    assert fire(db, routine, Event.CLAIMED, actor=n["reader"]) == set()  # not in the table
    assert fire(db, routine, Event.PRIORITY_CHANGED, to="urgent") == set()
    assert fire(db, routine, Event.PRIORITY_CHANGED, to="stat") == county_imaging

    # Raised to STAT before routing: nobody yet (ROUTED of the STAT case will tell them).
    waiting = new_case(db, status="complete", centre_id=None)
    assert fire(db, waiting, Event.PRIORITY_RAISED, priority="stat") == set()
    with db.reader() as session:
        assert (
            session.scalars(select(WebhookDelivery).where(WebhookDelivery.case_id == waiting)).all()
            == []
        )

    stat = new_case(db, "stat")
    assert fire(db, stat, Event.ROUTED, centre_id=n["CH-IMAGING"]) == county_imaging
    assert fire(db, stat, Event.ASSIGNED, actor=n["admin"], reader_id=n["reader2"]) == {"reader2"}
    # Unclaimed: the centre's readers; held: the holder (and at breach its centre's admins).
    assert fire(db, stat, Event.SLA_WARNING) == county_imaging
    with db.session() as session:
        session.get_one(Case, stat).reader_id = n["reader"]
    assert fire(db, stat, Event.SLA_WARNING) == {"reader"}
    assert fire(db, stat, Event.SLA_BREACHED) == {"reader", "admin"}
    # Up a tier: the readers of the new (provincial) centre.
    assert fire(db, stat, Event.ESCALATED, actor=n["reader"], to_centre_id=n["PH-IMAGING"]) == {
        "expert"
    }
    assert fire(db, stat, Event.SECOND_OPINION, to={"id": n["PH-IMAGING"]}) == {"expert"}
    # Signed: the sending clinic, once (at REPORT_FINAL, not again at DELIVERED).
    assert fire(db, stat, Event.REPORT_FINAL, actor=n["reader"], version=1) == {"clinic"}
    assert fire(db, stat, Event.DELIVERED, actor=n["reader"], version=1) == set()


def test_referrals_inactive_users_and_titles(db: Database) -> None:
    n = ids(db)
    case_id = new_case(db)
    with db.session() as session:
        referral = Referral(
            case_id=case_id,
            direction="up",
            from_facility_id=n["T1"],
            to_facility_id=n["PH"],
            reason="needs neurosurgery",
            created_by=n["clinic"],
        )
        session.add(referral)
        session.flush()
        referral_id = referral.id
        session.get_one(User, n["ecgexpert"]).active = False
    created = fire(db, case_id, Event.REFERRAL_CREATED, actor=n["clinic"], referral_id=referral_id)
    assert created == {"expert"}  # the receiving facility's active users
    updated = fire(db, case_id, Event.REFERRAL_UPDATED, actor=n["expert"], referral_id=referral_id)
    assert updated == {"clinic"}  # both ends, less whoever made the change
    with db.reader() as session:
        row = session.scalars(select(Notification).where(Notification.case_id == case_id)).first()
        assert row is not None and row.title == "转诊 Referral"
        assert "上转 up" in row.body and "Provincial" in row.body
        assert "Wang" not in row.body  # no patient name in notification texts


def test_webhook_delivery_once_per_event_in_the_same_transaction(db: Database) -> None:
    n = ids(db)
    case_id = new_case(db, "stat")
    assert len(fire(db, case_id, Event.ROUTED, centre_id=n["CH-IMAGING"])) == 3
    with db.reader() as session:
        rows = session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.case_id == case_id)
        ).all()
        assert len(rows) == 1  # one per event and webhook, not per recipient
        assert rows[0].status == "pending" and rows[0].payload["event"] == "stat_case"
        assert "patient_name" not in rows[0].payload
        tasks = session.scalars(
            select(OutboxMessage).where(OutboxMessage.task == "telehub.deliver_webhook")
        ).all()
        assert [t.args for t in tasks] == [{"delivery_id": rows[0].id}]
    # The event's transaction fails: no notification, delivery or outbox row is left behind.
    with pytest.raises(RuntimeError), db.session() as session:
        timeline.record(session, case_id, Event.SLA_BREACHED)
        session.flush()
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 2
        raise RuntimeError("the service failed after recording")
    with db.reader() as session:
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 1
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 1
        kinds = set(session.scalars(select(Notification.kind)))
        assert kinds == {"stat_case"}


# ----- in-app over HTTP, after a real final report ---------------------------------------------
@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    hub = start_hub(tmp_path_factory.mktemp("notifications"))
    yield hub
    hub.proc.stop()


def test_clinic_sees_report_signed_and_marks_it_read(hub: Hub, tmp_path: Path) -> None:
    api = hub.api
    clinic, clinic2, reader = api.login("clinic"), api.login("clinic2"), api.login("reader")
    case_id = send_case(hub, tmp_path, PatientName="Hidden^Patient")
    assert api.post(f"/api/v1/cases/{case_id}/claim", {}, reader).status == 200
    signed = api.post(
        f"/api/v1/cases/{case_id}/reports",
        {"text": "No acute findings.", "status": "final"},
        reader,
    )
    assert signed.status == 201, signed.body

    unread = api.get("/api/v1/notifications?unread=1", clinic)
    assert unread.status == 200
    mine = [x for x in unread.body["notifications"] if x["case_id"] == case_id]
    assert len(mine) == 1, unread.body  # once, though the report was signed and delivered
    note = mine[0]
    assert note["kind"] == "report_signed" and note["title"] == "报告已签发 Report signed"
    assert note["read_at"] is None and unread.body["unread"] >= 1
    assert f"#{case_id}" in note["body"] and "Hidden" not in note["body"]
    # Nobody else heard of it: not the other clinic, not the reader who signed.
    for other in (clinic2, reader):
        listed = api.get("/api/v1/notifications", other).body["notifications"]
        assert all(x["case_id"] != case_id or x["kind"] != "report_signed" for x in listed)
        # and another user's notification cannot be touched (404, as a missing one)
        assert api.post(f"/api/v1/notifications/{note['id']}/read", {}, other).status == 404

    read = api.post(f"/api/v1/notifications/{note['id']}/read", {}, clinic)
    assert read.status == 200 and read.body["read_at"]
    again = api.get("/api/v1/notifications?unread=1", clinic).body["notifications"]
    assert note["id"] not in {x["id"] for x in again}
    assert note["id"] in {
        x["id"] for x in api.get("/api/v1/notifications", clinic).body["notifications"]
    }

    everything = api.post("/api/v1/notifications/read-all", {}, clinic)
    assert everything.status == 200 and isinstance(everything.body["marked"], int)
    assert api.get("/api/v1/notifications?unread=1", clinic).body == {
        "notifications": [],
        "unread": 0,
    }
    assert api.get("/api/v1/notifications?unread=maybe", clinic).status == 400
    assert api.get("/api/v1/notifications").status == 401
    assert api.post("/api/v1/notifications/999999/read", {}, clinic).status == 404
