"""Priors (mutual recognition of results, 检查结果互认): two township clinics send studies of
patients with the same and with different IDs; matching by ID alone (TELEHUB_PATIENT_MATCH=id,
over real HTTP) finds the other clinic's study too, newest first, with its final report;
matching by issuer (the default, on PostgreSQL) finds only the same clinic's patient. Only those
who may see the case see its priors, and the read is audited."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from telehub import priors
from telehub.auth import Principal
from telehub.db import Database
from telehub.db.migrate import upgrade
from telehub.db.models import AuditEntry, Case, Facility, Patient, Report, Study, User
from telehub.demo import seed_demo
from telehub.errors import NotFound
from tests.helpers import start_hub
from tests.test_tat_analytics import hub_db, read_case, routed_cases, send_studies


def test_priors_over_http_matching_by_id(tmp_path: Path) -> None:
    """The hub's setting reaches the handler: by ID alone, the other clinic's P-100 is found."""
    match = "id"
    hub = start_hub(tmp_path, {"TELEHUB_PATIENT_MATCH": match})
    try:
        api = hub.api
        admin, clinic, reader = api.login("admin"), api.login("clinic"), api.login("reader")
        t1 = send_studies(hub, tmp_path, "CLINIC1", ["P-100", "P-100", "P-200"])
        t2 = send_studies(hub, tmp_path, "CLINIC2", ["P-100"])
        older, current, other_patient, elsewhere = routed_cases(api, admin, t1 + t2)
        read_case(api, reader, older, prelim=False, final=True)
        read_case(api, reader, elsewhere, prelim=False, final=False)
        db = hub_db(hub)
        try:
            with db.session() as session:
                for case_id, when in [(older, "2005-01-10"), (elsewhere, "2005-02-10")]:
                    case = session.get_one(Case, case_id)
                    case.arrived_at = datetime.fromisoformat(when).replace(tzinfo=UTC)
        finally:
            db.dispose()

        resp = api.get(f"/api/v1/cases/{current}/priors", clinic)
        assert resp.status == 200, resp.body
        body = resp.body
        assert body["match"] == match
        assert body["patient"] == {"patient_id": "P-100", "issuer": "T1"}
        ids = [p["case_id"] for p in body["priors"]]
        # newest first; the other clinic's P-100 is the same person only when IDs are shared
        assert ids == ([elsewhere, older] if match == "id" else [older])
        assert other_patient not in ids
        first = body["priors"][-1]
        assert first["facility"]["code"] == "T1"
        assert first["kind"] == "imaging" and first["modalities"] == ["CT"]
        assert first["date"] == "2004-01-19"  # the study's date, not its arrival
        assert first["study_instance_uids"] == [t1[0]]
        assert "No acute abnormality" in first["final_report"]["text"]
        if match == "id":
            other = body["priors"][0]
            assert other["facility"]["code"] == "T2"
            assert other["patient"] == {"patient_id": "P-100", "issuer": "T2"}
            assert other["final_report"] is None and other["status"] == "claimed"
            assert other["study_instance_uids"] == [t2[0]]
            # and the other way round: T2's case sees T1's two studies
            theirs = api.get(f"/api/v1/cases/{elsewhere}/priors", api.login("clinic2")).body
            assert [p["case_id"] for p in theirs["priors"]] == [current, older]

        # who may see the case sees its priors; nobody else learns the case exists
        assert api.get(f"/api/v1/cases/{current}/priors", reader).status == 200
        for outsider in ("clinic2", "expert", "ecgreader"):
            assert api.get(f"/api/v1/cases/{current}/priors", api.login(outsider)).status == 404
        assert api.get("/api/v1/cases/99999999/priors", admin).status == 404

        db = hub_db(hub)
        try:
            with db.reader() as session:
                audited = session.execute(
                    select(AuditEntry.detail).where(
                        AuditEntry.resource_type == "priors",
                        AuditEntry.resource_id == str(current),
                    )
                ).scalars()
                assert ids in [d["prior_case_ids"] for d in audited]
        finally:
            db.dispose()
    finally:
        hub.proc.stop()


def test_priors_on_postgresql_issuer_vs_id(postgres_url: str) -> None:
    db = Database(postgres_url)
    try:
        upgrade(db)
        seed_demo(db)
        with db.session() as session:
            fac = {f.code: f.id for f in session.scalars(select(Facility))}
            reader = session.scalars(select(User).where(User.username == "reader")).one()

            def case(code: str, pid: str, day: str, report: str | None = None) -> int:
                issuer = code  # no IssuerOfPatientID: the sending facility
                patient = session.scalar(
                    select(Patient).where(Patient.issuer == issuer, Patient.patient_id == pid)
                ) or Patient(issuer=issuer, patient_id=pid, name="王^芳")
                session.add(patient)
                session.flush()
                row = Case(
                    origin_facility_id=fac[code],
                    patient_id=patient.id,
                    kind="imaging",
                    status="final" if report else "routed",
                    arrived_at=datetime.fromisoformat(day).replace(tzinfo=UTC),
                )
                session.add(row)
                session.flush()
                session.add(
                    Study(
                        study_uid=generate_uid(),
                        case_id=row.id,
                        patient_id=patient.id,
                        study_date=day.replace("-", ""),
                        modalities="DX",
                    )
                )
                if report:
                    session.add(
                        Report(
                            case_id=row.id,
                            version=1,
                            status="final",
                            text=report,
                            author_id=reader.id,
                        )
                    )
                return row.id

            first = case("T1", "P-9", "2006-01-01", "胸片未见异常 Chest clear.")
            other_issuer = case("T2", "P-9", "2006-03-01", "右下肺炎 RLL pneumonia.")
            unrelated = case("T1", "P-8", "2006-04-01")
            current = case("T1", "P-9", "2006-05-01")
        with db.reader() as session:
            u = session.scalars(select(User).where(User.username == "clinic")).one()
            clinic = Principal(u.id, u.username, u.role, u.facility_id, u.centre_id)
            u = session.scalars(select(User).where(User.username == "clinic2")).one()
            clinic2 = Principal(u.id, u.username, u.role, u.facility_id, u.centre_id)

        by_issuer = priors.priors(db, clinic, current, "issuer", "test")
        assert [p["case_id"] for p in by_issuer["priors"]] == [first]
        assert by_issuer["priors"][0]["final_report"]["text"] == "胸片未见异常 Chest clear."
        assert by_issuer["priors"][0]["date"] == "2006-01-01"
        by_id = priors.priors(db, clinic, current, "id", "test")
        assert [p["case_id"] for p in by_id["priors"]] == [other_issuer, first]
        assert by_id["priors"][0]["facility"]["code"] == "T2"
        assert by_id["priors"][0]["modalities"] == ["DX"]
        assert unrelated not in [p["case_id"] for p in by_id["priors"]]
        with pytest.raises(NotFound):
            priors.priors(db, clinic2, current, "id", "test")
    finally:
        db.dispose()
