"""Routing decisions against a real database (SQLite and PostgreSQL): rules by modality, body
part, subspecialty, priority, origin and tier; the default county centre; up the grid when the
county cannot read a case; UNROUTABLE with its reason; the SLA clock; idempotency."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom.meta import read_instance_meta
from telehub import ingest, routing, service_hours, timeline
from telehub.auth import Principal
from telehub.config import Settings
from telehub.db import Database
from telehub.db.models import (
    PRIORITY_RANK,
    Case,
    CaseEvent,
    Facility,
    OutboxMessage,
    Priority,
    ReadingCentre,
    RoutingRule,
    Series,
    Study,
    Tier,
    User,
)
from telehub.db.types import utcnow
from telehub.errors import Forbidden, Invalid
from telehub.store import FilesystemStore
from tests.helpers import fresh_copy

SETTINGS = Settings()


def make_case(
    db: Database,
    *,
    origin: str = "T1",
    kind: str = "imaging",
    modalities: tuple[str, ...] = ("CT",),
    body_part: str = "",
    subspecialty: str = "",
    priority: str = "routine",
    completed_ago: float = 0.0,
) -> int:
    """A COMPLETE case as ingest leaves it: study, series, a STUDY_COMPLETE event."""
    with db.session() as session:
        facility = session.scalars(select(Facility).where(Facility.code == origin)).one()
        case = Case(
            origin_facility_id=facility.id,
            kind=kind,
            priority=priority,
            priority_rank=PRIORITY_RANK[Priority(priority)],
            status="complete",
            subspecialty=subspecialty,
        )
        session.add(case)
        session.flush()
        done_at = utcnow() - timedelta(seconds=completed_ago)
        if kind == "imaging":
            study = Study(
                study_uid=generate_uid(),
                case_id=case.id,
                modalities="\\".join(modalities),
                completed_at=done_at,
            )
            session.add(study)
            session.flush()
            for index, modality in enumerate(modalities):
                session.add(
                    Series(
                        series_uid=generate_uid(),
                        study_id=study.id,
                        modality=modality,
                        body_part="" if index == 0 else body_part,  # first non-empty wins
                    )
                )
        timeline.record(session, case.id, timeline.Event.STUDY_COMPLETE, at=done_at, reason="t")
        return case.id


def centre(db: Database, code: str) -> int:
    with db.reader() as session:
        return session.scalars(select(ReadingCentre.id).where(ReadingCentre.code == code)).one()


def facility(db: Database, code: str) -> int:
    with db.reader() as session:
        return session.scalars(select(Facility.id).where(Facility.code == code)).one()


def add_rule(db: Database, name: str, centre_code: str, **match: Any) -> None:
    with db.session() as session:
        session.add(RoutingRule(name=name, centre_id=centre(db, centre_code), **match))


def set_centre(db: Database, code: str, **values: Any) -> None:
    with db.session() as session:
        row = session.scalars(select(ReadingCentre).where(ReadingCentre.code == code)).one()
        for key, value in values.items():
            setattr(row, key, value)


def events(db: Database, case_id: int, kind: str) -> list[CaseEvent]:
    with db.reader() as session:
        return list(
            session.scalars(
                select(CaseEvent)
                .where(CaseEvent.case_id == case_id, CaseEvent.kind == kind)
                .order_by(CaseEvent.id)
            )
        )


def route(db: Database, case_id: int) -> routing.RoutingDecision:
    return routing.route_case(db, case_id, None, settings=SETTINGS)


def routed_to(db: Database, case_id: int) -> tuple[str | None, str]:
    with db.reader() as session:
        case = session.get_one(Case, case_id)
        return (case.centre.code if case.centre else None), case.status


def test_default_is_the_origins_county_centre_with_sla_and_assignment(db: Database) -> None:
    case_id = make_case(db, modalities=("CT", "CT"), body_part="CHEST", completed_ago=600)
    decision = route(db, case_id)
    assert decision.changed
    assert routed_to(db, case_id) == ("CH-IMAGING", "routed")
    (event,) = events(db, case_id, timeline.Event.ROUTED)
    assert event.detail["rule"].startswith("default: origin's imaging reading centre")
    assert event.detail["centre"] == "CH-IMAGING"
    (complete,) = events(db, case_id, timeline.Event.STUDY_COMPLETE)
    with db.reader() as session:
        case = session.get_one(Case, case_id)
        assert case.body_part == "CHEST"
        target = timedelta(seconds=SETTINGS.sla_routine_seconds)
        assert case.sla_deadline == complete.at + target  # counted from completion, not now
        assert case.escalate_at == complete.at + target * SETTINGS.sla_escalate_fraction
        jobs = session.scalars(
            select(OutboxMessage).where(OutboxMessage.task == "telehub.assign_case")
        ).all()
        assert [j.args for j in jobs] == [{"case_id": case_id}]


def test_ecg_case_goes_to_the_ecg_centre_and_its_clock_starts_at_upload(db: Database) -> None:
    case_id = make_case(db, kind="ecg", priority="stat", completed_ago=60)
    route(db, case_id)
    assert routed_to(db, case_id) == ("CH-ECG", "routed")
    (complete,) = events(db, case_id, timeline.Event.STUDY_COMPLETE)
    with db.reader() as session:
        deadline = session.get_one(Case, case_id).sla_deadline
    assert deadline == complete.at + timedelta(seconds=SETTINGS.sla_stat_seconds)


# (rule criteria, case that matches, case that does not)
RULE_CASES = [
    ({"modalities": ["MR"]}, {"modalities": ("MR",)}, {"modalities": ("CT",)}),
    ({"body_parts": ["head"]}, {"body_part": "HEAD", "modalities": ("CT", "CT")}, {}),
    ({"subspecialties": ["neuro"]}, {"subspecialty": "neuro"}, {"subspecialty": ""}),
    ({"priorities": ["stat"]}, {"priority": "stat"}, {"priority": "urgent"}),
    ({"origin_tiers": [Tier.TOWNSHIP.value]}, {"origin": "T2"}, {"origin": "CH"}),
]


@pytest.mark.parametrize(("criteria", "hit", "miss"), RULE_CASES)
def test_rule_criteria(db: Database, criteria: dict, hit: dict, miss: dict) -> None:
    add_rule(db, "to-province", "PH-IMAGING", **criteria)
    matched, other = make_case(db, **hit), make_case(db, **miss)
    route(db, matched)
    route(db, other)
    assert routed_to(db, matched) == ("PH-IMAGING", "routed")
    (event,) = events(db, matched, timeline.Event.ROUTED)
    assert event.detail["rule"].startswith("rule to-province: ")
    assert event.detail["rule_id"] is not None
    # The other case falls through to the default: T1/T2 -> CH, and CH itself -> PH.
    expected = "PH-IMAGING" if miss.get("origin") == "CH" else "CH-IMAGING"
    assert routed_to(db, other)[0] == expected
    assert events(db, other, timeline.Event.ROUTED)[0].detail["rule"].startswith("default")


def test_rule_by_origin_facility_order_and_disabled_rules(db: Database) -> None:
    t2 = facility(db, "T2")
    add_rule(db, "off", "PH-IMAGING", position=1, enabled=False)
    add_rule(db, "second", "CH-IMAGING", position=20, origin_facility_ids=[t2])
    add_rule(db, "first", "PH-IMAGING", position=10, origin_facility_ids=[t2])
    from_t2, from_t1 = make_case(db, origin="T2"), make_case(db, origin="T1")
    route(db, from_t2)
    route(db, from_t1)
    assert routed_to(db, from_t2)[0] == "PH-IMAGING"
    assert events(db, from_t2, timeline.Event.ROUTED)[0].detail["rule"].startswith("rule first")
    assert events(db, from_t1, timeline.Event.ROUTED)[0].detail["rule"].startswith("default")


def test_rule_whose_centre_cannot_read_the_case_is_skipped(db: Database) -> None:
    add_rule(db, "wrong-service", "PH-ECG", modalities=["CT"])
    case_id = make_case(db)
    route(db, case_id)
    assert routed_to(db, case_id)[0] == "CH-IMAGING"
    rule = events(db, case_id, timeline.Event.ROUTED)[0].detail["rule"]
    assert "rule wrong-service skipped: PH-ECG reads ecg, not imaging" in rule


def test_up_the_grid_when_the_county_centre_does_not_read_the_modality(db: Database) -> None:
    set_centre(db, "CH-IMAGING", modalities=["CR", "CT"])
    mr, ct = make_case(db, modalities=("MR",)), make_case(db, modalities=("CT", "SR"))
    route(db, mr)
    route(db, ct)
    assert routed_to(db, mr) == ("PH-IMAGING", "routed")
    rule = events(db, mr, timeline.Event.ROUTED)[0].detail["rule"]
    assert rule.startswith("default: up the grid to tertiary centre")
    assert "CH-IMAGING reads only CR, CT (not MR)" in rule
    assert routed_to(db, ct)[0] == "CH-IMAGING"  # a dose report (SR) limits nothing


def test_subspecialty_goes_where_it_is_offered_or_nowhere(db: Database) -> None:
    neuro = make_case(db, subspecialty="neuro")
    cardiac = make_case(db, subspecialty="cardiac")
    route(db, neuro)
    decision = route(db, cardiac)
    assert routed_to(db, neuro)[0] == "PH-IMAGING"  # PH offers neuro, CH nothing
    assert routed_to(db, cardiac) == (None, "unroutable")
    assert decision.centre_id is None
    (event,) = events(db, cardiac, timeline.Event.UNROUTABLE)
    assert "CH-IMAGING offers no cardiac subspecialty" in event.detail["reason"]
    assert "PH-IMAGING offers no cardiac subspecialty" in event.detail["reason"]
    assert events(db, cardiac, timeline.Event.ROUTED) == []


def test_unroutable_when_nothing_is_linked_or_above(db: Database) -> None:
    with db.session() as session:
        session.add(Facility(code="LONE", name="Island clinic", tier=Tier.TOWNSHIP.value))
    case_id = make_case(db, origin="LONE")
    route(db, case_id)
    assert routed_to(db, case_id) == (None, "unroutable")
    (event,) = events(db, case_id, timeline.Event.UNROUTABLE)
    assert event.detail["rule"] == (
        "no imaging reading centre is linked to the origin facility or up its grid"
    )
    with db.reader() as session:
        jobs = session.scalars(
            select(OutboxMessage.id).where(OutboxMessage.task == "telehub.assign_case")
        ).all()
        assert jobs == []
        assert session.get_one(Case, case_id).sla_deadline is not None  # the clock still runs


def test_routing_twice_through_ingest_changes_nothing(db: Database, tmp_path: Path) -> None:
    path = fresh_copy("CT_small.dcm", tmp_path / "in", BodyPartExamined="ABDOMEN")
    ds = pydicom.dcmread(path)
    meta = read_instance_meta(path, ds.SOPClassUID, ds.SOPInstanceUID)
    store = FilesystemStore(tmp_path / "objects")
    outcome = ingest.store_instance(db, store, facility(db, "T1"), meta, path, "dimse:CLINIC1")
    assert ingest.complete_studies(db, [meta.study_uid], "test") == [outcome.case_id]
    with db.reader() as session:
        outbox_id = session.scalars(
            select(OutboxMessage.id).where(OutboxMessage.task == "telehub.route_case")
        ).one()
    first = routing.route_case(db, outcome.case_id, outbox_id, settings=SETTINGS)
    second = routing.route_case(db, outcome.case_id, outbox_id, settings=SETTINGS)
    assert first.changed and not second.changed
    assert second.centre_id == first.centre_id == centre(db, "CH-IMAGING")
    assert len(events(db, outcome.case_id, timeline.Event.ROUTED)) == 1
    with db.reader() as session:
        assert session.get_one(Case, outcome.case_id).body_part == "ABDOMEN"
        assert session.get_one(OutboxMessage, outbox_id).done_at is not None
        assigns = session.scalars(
            select(OutboxMessage.id).where(OutboxMessage.task == "telehub.assign_case")
        ).all()
        assert len(assigns) == 1


def test_preview_and_manual_routing(db: Database) -> None:
    add_rule(db, "mr-up", "PH-IMAGING", modalities=["MR"])
    with db.reader() as session:
        admin = session.scalars(select(User).where(User.username == "admin")).one()
        clinic = session.scalars(select(User).where(User.username == "clinic")).one()
    who = Principal(admin.id, "admin", "admin", admin.facility_id, None)
    mr = routing.preview(db, who, {"origin": "T1", "modality": "MR"})
    assert mr["routable"] and mr["centre"]["code"] == "PH-IMAGING"
    assert mr["rule"].startswith("rule mr-up")
    ecg = routing.preview(db, who, {"origin": "T2", "kind": "ecg", "priority": "stat"})
    assert ecg["centre"]["code"] == "CH-ECG" and ecg["rule"].startswith("default")
    nowhere = routing.preview(db, who, {"origin": "T1", "subspecialty": "cardiac"})
    assert not nowhere["routable"] and "offers no cardiac" in nowhere["rule"]
    with pytest.raises(Invalid):
        routing.preview(db, who, {"origin": "NOPE"})
    with pytest.raises(Forbidden):
        routing.preview(
            db, Principal(clinic.id, "clinic", "clinic", clinic.facility_id, None), {"origin": "T1"}
        )

    case_id = make_case(db, subspecialty="cardiac")
    route(db, case_id)
    assert routed_to(db, case_id)[1] == "unroutable"
    with pytest.raises(Invalid):  # an ECG centre cannot take an imaging case
        routing.manual_route(db, SETTINGS, who, case_id, "CH-ECG")
    routing.manual_route(db, SETTINGS, who, case_id, "PH-IMAGING")
    assert routed_to(db, case_id) == ("PH-IMAGING", "routed")
    (event,) = events(db, case_id, timeline.Event.ROUTED)
    assert event.detail["rule"] == "manual by admin"


def _closed_now() -> str:
    """Service hours that are certainly not now: a minute three days from today."""
    today = datetime.now(ZoneInfo("Asia/Shanghai")).weekday()
    return f"{service_hours.DAYS[(today + 3) % 7]} 12:00-12:01"


def test_stat_skips_a_closed_centre_for_an_open_one_up_the_grid(db: Database) -> None:
    set_centre(db, "CH-IMAGING", service_hours=_closed_now())
    stat, routine = make_case(db, priority="stat"), make_case(db, priority="routine")
    route(db, stat)
    route(db, routine)
    assert routed_to(db, stat)[0] == "PH-IMAGING"
    rule = events(db, stat, timeline.Event.ROUTED)[0].detail["rule"]
    assert rule.startswith("default: up the grid") and "CH-IMAGING is closed now" in rule
    assert routed_to(db, routine)[0] == "CH-IMAGING"  # routine waits for opening hours

    set_centre(db, "PH-IMAGING", service_hours=_closed_now())
    nothing_open = make_case(db, priority="stat")
    route(db, nothing_open)
    assert routed_to(db, nothing_open) == ("CH-IMAGING", "routed")  # closed beats nowhere
    rule = events(db, nothing_open, timeline.Event.ROUTED)[0].detail["rule"]
    assert rule.endswith("(closed now)")
