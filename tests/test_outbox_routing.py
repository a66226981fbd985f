"""Routing leaves the ingest transaction through the outbox: a broker outage delays it, a
repeated task changes nothing. Run on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pydicom
from kombu import Connection
from sqlalchemy import select

from dicom.meta import read_instance_meta
from telehub import ingest, routing
from telehub.config import Settings
from telehub.db import Database
from telehub.db.models import Case, CaseEvent, CaseStatus, Facility, OutboxMessage
from telehub.outbox import OutboxRelay
from telehub.store import FilesystemStore
from tests.helpers import free_port, fresh_copy


def _complete_case(db: Database, tmp_path: Path) -> int:
    path = fresh_copy("CT_small.dcm", tmp_path / "in")
    ds = pydicom.dcmread(path)
    with db.reader() as session:
        t1 = session.scalar(select(Facility.id).where(Facility.code == "T1"))
    meta = read_instance_meta(path, ds.SOPClassUID, ds.SOPInstanceUID)
    store = FilesystemStore(tmp_path / "objects")
    outcome = ingest.store_instance(db, store, t1, meta, path, "dimse:CLINIC1")
    assert ingest.complete_studies(db, [meta.study_uid], "test") == [outcome.case_id]
    return outcome.case_id


def test_routing_twice_changes_nothing(db: Database, tmp_path: Path) -> None:
    case_id = _complete_case(db, tmp_path)
    with db.reader() as session:
        outbox_id = session.scalar(select(OutboxMessage.id))
    first = routing.route_case(db, case_id, outbox_id)
    second = routing.route_case(db, case_id, outbox_id)
    assert first.changed and first.centre_id is not None
    assert not second.changed and second.centre_id == first.centre_id
    with db.reader() as session:
        case = session.get_one(Case, case_id)
        assert case.status == CaseStatus.ROUTED.value
        routed = session.scalars(
            select(CaseEvent).where(CaseEvent.case_id == case_id, CaseEvent.kind == "routed")
        ).all()
        assert len(routed) == 1 and "default" in routed[0].detail["rule"]
        assert session.get_one(OutboxMessage, outbox_id).done_at is not None


def test_broker_outage_delays_but_loses_nothing(
    db: Database, tmp_path: Path, redis_url: str
) -> None:
    from workers.app import configure, publish

    case_id = _complete_case(db, tmp_path)
    dead = Settings.load(data=tmp_path, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    configure(dead)
    relay = OutboxRelay(db, publish, redeliver_seconds=60)
    assert relay.run_once() == 0  # the broker is down: nothing published ...
    with db.reader() as session:
        row = session.scalar(select(OutboxMessage))
        assert row.done_at is None and row.attempts == 1  # ... and nothing lost
    with db.session() as session:  # skip the back-off wait
        session.get_one(OutboxMessage, row.id).due_at = row.created_at

    configure(Settings.load(data=tmp_path, broker_url=redis_url))
    with Connection(redis_url) as conn:
        conn.default_channel.queue_purge("telehub")
        assert relay.run_once() == 1
        message = conn.SimpleQueue("telehub").get(timeout=5)
        body = message.payload if isinstance(message.payload, dict) else json.loads(message.body)
        message.ack()
    kwargs = body[1] if isinstance(body, list) else body["kwargs"]
    assert kwargs == {"case_id": case_id, "outbox_id": row.id}
    # Published, not yet done: after the redelivery interval it would go out again.
    with db.reader() as session:
        row = session.get_one(OutboxMessage, row.id)
        assert row.done_at is None and row.attempts == 2 and row.due_at > row.created_at
