"""Reports over real HTTP against a real hub: templates, preliminary -> final -> addendum with
every version kept unchanged, the holder and signing rules, co-signature by a tertiary reader,
and what the origin clinic (and no other) sees."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pydicom
import pytest
from sqlalchemy import select

from dicom.send import send_paths
from telehub.assignment import is_qualified as qualified
from telehub.auth import hash_password
from telehub.db.models import (
    Case,
    Facility,
    ReadingCentre,
    Report,
    ReportCosignature,
    Study,
    User,
)
from telehub.demo import DEMO_PASSWORD
from tests.helpers import Api, Hub, fresh_copy
from tests.test_dicom_receiver import hub_db

#: A provincial radiologist the tests add beside the demo's "expert".
COSIGNER = "report-cosigner"


@pytest.fixture(scope="module")
def hub(embedded_hub: Hub) -> Hub:
    """The shared hub, with a second tertiary reader (the demo has one) to co-sign."""
    add_reader(embedded_hub, COSIGNER, "PH", "PH-IMAGING", "刘教授 Prof Liu (provincial)")
    return embedded_hub


# ----- helpers shared with test_report_exports ----------------------------------------------
def add_reader(hub: Hub, username: str, facility: str, centre: str, name: str) -> None:
    """A reader the demo consortium lacks, added the way an admin's tool would (a row)."""
    db = hub_db(hub)
    with db.session() as session:
        if session.scalar(select(User.id).where(User.username == username)) is not None:
            return  # added by the other report test module in this session
        fac = session.scalar(select(Facility).where(Facility.code == facility))
        cen = session.scalar(select(ReadingCentre).where(ReadingCentre.code == centre))
        assert fac is not None and cen is not None
        session.add(
            User(
                username=username,
                display_name=name,
                password_hash=hash_password(DEMO_PASSWORD),
                role="reader",
                facility_id=fac.id,
                centre_id=cen.id,
                qualifications=[],
                may_sign_final=True,
            )
        )
    db.dispose()


def send_case(hub: Hub, folder: Path, aet: str = "CLINIC1", **changes: Any) -> tuple[int, str]:
    """C-STORE a fresh CT as ``aet``'s modality; (case id, study UID) once it is routed."""
    changes.setdefault("PatientID", f"RPT-{uuid.uuid4().hex[:10]}")
    path = fresh_copy("CT_small.dcm", folder, **changes)
    study_uid = pydicom.dcmread(path).StudyInstanceUID
    assert send_paths([path], "127.0.0.1", hub.dicom_port, aet).sent == 1
    api = hub.api
    admin = login(api, "admin")
    case_id = api.wait_for(
        "/api/v1/cases?limit=500",
        admin,
        lambda body: next(
            (
                c["id"]
                for c in body["cases"]
                if study_uid in c["study_instance_uids"] and c["status"] == "routed"
            ),
            None,
        ),
    )
    return case_id, study_uid


_tokens: dict[tuple[str, str], str] = {}


def login(api: Api, username: str) -> str:
    """A token per hub and user, kept for the session (each login is an argon2 check)."""
    key = (api.base_url, username)
    if key not in _tokens:
        _tokens[key] = api.login(username)
    return _tokens[key]


def claim(api: Api, token: str, case_id: int) -> None:
    resp = api.post(f"/api/v1/cases/{case_id}/claim", token=token)
    assert resp.status == 200, resp.body


def write(api: Api, token: str, case_id: int, status: str, **body: Any) -> Any:
    return api.post(f"/api/v1/cases/{case_id}/reports", {"status": status, **body}, token)


def versions(api: Api, token: str, case_id: int) -> dict[int, Any]:
    reports = api.get(f"/api/v1/cases/{case_id}/reports", token).body["reports"]
    return {r["version"]: r for r in reports}


def timeline_kinds(api: Api, token: str, case_id: int) -> list[str]:
    return [e["kind"] for e in api.get(f"/api/v1/cases/{case_id}", token).body["timeline"]]


# ----- templates ----------------------------------------------------------------------------
def test_default_templates_and_admin_edits(hub: Hub) -> None:
    api = hub.api
    reader, admin, clinic = login(api, "reader"), login(api, "admin"), login(api, "clinic")

    ct = api.get("/api/v1/report-templates?kind=imaging&modality=CT", reader)
    assert ct.status == 200, ct.body
    found = {t["code"]: t["modality"] for t in ct.body["templates"]}
    assert {"ct", "imaging"} <= set(found) and "mr" not in found  # its own and the generic
    assert set(found.values()) <= {"CT", None}
    ct_template = next(t for t in ct.body["templates"] if t["code"] == "ct")
    assert [s["key"] for s in ct_template["sections"]][1:3] == ["findings", "impression"]
    assert ct_template["sections"][1]["title"] == "检查所见 Findings"
    every = {t["code"] for t in api.get("/api/v1/report-templates", reader).body["templates"]}
    assert {"ct", "mr", "cr", "dx", "us", "ecg"} <= every
    ecg = api.get("/api/v1/report-templates?kind=ecg", reader).body["templates"]
    assert [s["key"] for s in ecg[0]["sections"]] == [
        "rhythm",
        "rate",
        "intervals",
        "axis",
        "conclusion",
    ]
    assert api.get("/api/v1/report-templates", clinic).status == 403
    assert api.get("/api/v1/report-templates?kind=lab", reader).status == 400

    new = {
        "code": f"ct-head-{uuid.uuid4().hex[:6]}",
        "name": "头颅 CT 报告 Head CT report",
        "kind": "imaging",
        "modality": "CT",
        "sections": [
            {"key": "findings", "title": "检查所见 Findings"},
            {"key": "impression", "title": "诊断意见 Impression", "text": "未见异常"},
        ],
    }
    assert api.post("/api/v1/report-templates", new, reader).status == 403
    created = api.post("/api/v1/report-templates", new, admin)
    assert created.status == 201, created.body
    again = api.post("/api/v1/report-templates", new, admin)
    assert again.status == 409 and again.body["error"] == "template_exists"
    bad = api.post(
        "/api/v1/report-templates",
        {**new, "code": "dup-keys", "sections": [{"key": "a", "title": "A"}] * 2},
        admin,
    )
    assert bad.status == 400 and bad.body["error"] == "bad_template"

    tid = created.body["id"]
    changed = api.request("PATCH", f"/api/v1/report-templates/{tid}", admin, body={"active": False})
    assert changed.status == 200 and changed.body["active"] is False
    listed = api.get("/api/v1/report-templates?modality=CT", reader).body["templates"]
    assert new["code"] not in {t["code"] for t in listed}  # readers see active ones only
    refused = api.request("PATCH", f"/api/v1/report-templates/{tid}", reader, body={})
    assert refused.status == 403


# ----- the report path ----------------------------------------------------------------------
def test_preliminary_final_addendum_every_version_kept(hub: Hub, tmp_path: Path) -> None:
    api = hub.api
    case_id, _ = send_case(hub, tmp_path)
    reader, reader2 = login(api, "reader"), login(api, "reader2")
    resident, clinic, clinic2 = login(api, "resident"), login(api, "clinic"), login(api, "clinic2")

    # Nobody holds the case yet: no report, nothing written.
    early = write(api, reader, case_id, "preliminary", text="太早 too early")
    assert early.status == 409 and early.body["error"] == "not_claimed", early.body
    claim(api, reader, case_id)
    other = write(api, reader2, case_id, "preliminary", text="not mine")
    assert other.status == 409 and other.body["error"] == "claimed_by_other"

    prelim = write(
        api,
        reader,
        case_id,
        "preliminary",
        template="ct",
        sections={"findings": "右肺上叶小结节，约 5 mm。", "impression": "考虑良性结节。"},
    )
    assert prelim.status == 201, prelim.body
    assert prelim.body["version"] == 1 and prelim.body["template"] == "ct"
    assert prelim.body["text"] == (
        "检查所见 Findings：\n右肺上叶小结节，约 5 mm。\n\n诊断意见 Impression：\n考虑良性结节。"
    )
    typo = write(api, reader, case_id, "preliminary", sections={"finding": "x"})
    assert typo.status == 400 and typo.body["error"] == "unknown_section"
    both = write(api, reader, case_id, "preliminary", text="x", sections={"findings": "x"})
    assert both.status == 400 and both.body["error"] == "text_or_sections"
    # A preliminary is the reader's working copy: the clinic does not see it yet.
    assert api.get(f"/api/v1/cases/{case_id}", clinic).body["reports"] == []
    not_yet = write(api, reader, case_id, "addendum", text="补充")
    assert not_yet.status == 409 and not_yet.body["error"] == "not_final"

    final_text = "右肺上叶小结节（5 mm），考虑良性，建议 12 个月后复查。"
    final = write(api, reader, case_id, "final", text=final_text)
    assert final.status == 201, final.body
    assert final.body["version"] == 2 and final.body["status"] == "final"
    detail = api.get(f"/api/v1/cases/{case_id}", reader).body
    assert detail["status"] == "final"
    kinds = [e["kind"] for e in detail["timeline"]]
    assert kinds.index("report_final") < kinds.index("delivered")
    assert "report_preliminary" in kinds
    snapshot = {
        r["version"]: r for r in api.get(f"/api/v1/cases/{case_id}/reports", reader).body["reports"]
    }

    # The final report reached the origin clinic at once, and only that clinic.
    seen = api.get(f"/api/v1/cases/{case_id}", clinic).body["reports"]
    assert [(r["version"], r["status"], r["text"]) for r in seen] == [(2, "final", final_text)]
    assert api.get(f"/api/v1/cases/{case_id}", clinic2).status == 404
    assert api.get(f"/api/v1/cases/{case_id}/reports", clinic2).status == 404
    assert api.get(f"/api/v1/cases/{case_id}/reports/1", clinic).status == 404  # preliminary

    again = write(api, reader, case_id, "final", text="second final")
    assert again.status == 409 and again.body["error"] == "already_final"
    late = write(api, reader, case_id, "preliminary", text="late")
    assert late.status == 409 and late.body["error"] == "already_final"
    assert write(api, clinic, case_id, "addendum", text="x").status == 403

    # Addenda: by the signer, by another signing reader of the centre; not by a resident.
    add1 = write(api, reader, case_id, "addendum", text="补充：与 2023 年片比较无变化。")
    assert add1.status == 201 and add1.body["version"] == 3, add1.body
    add2 = write(api, reader2, case_id, "addendum", text="Addendum: agree. 同意。")
    assert add2.status == 201 and add2.body["version"] == 4, add2.body
    res = write(api, resident, case_id, "addendum", text="x")
    assert res.status == 403 and res.body["error"] == "not_qualified"

    after = {
        r["version"]: r for r in api.get(f"/api/v1/cases/{case_id}/reports", reader).body["reports"]
    }
    assert sorted(after) == [1, 2, 3, 4]
    for version in (1, 2):
        assert after[version] == snapshot[version]  # unchanged by the later versions
    assert after[3]["addendum"] is True and after[3]["author"]["username"] == "reader"
    assert after[4]["author"]["username"] == "reader2"
    assert api.get(f"/api/v1/cases/{case_id}", reader).body["status"] == "final"
    clinic_sees = api.get(f"/api/v1/cases/{case_id}", clinic).body["reports"]
    assert [r["version"] for r in clinic_sees] == [2, 3, 4]
    assert "report_addendum" in timeline_kinds(api, reader, case_id)

    # The rows themselves, as stored.
    db = hub_db(hub)
    with db.reader() as session:
        rows = list(
            session.scalars(select(Report).where(Report.case_id == case_id).order_by(Report.id))
        )
        assert [(r.version, r.status) for r in rows] == [
            (1, "preliminary"),
            (2, "final"),
            (3, "addendum"),
            (4, "addendum"),
        ]
        assert rows[1].text == final_text and rows[0].sections == {
            "findings": "右肺上叶小结节，约 5 mm。",
            "impression": "考虑良性结节。",
        }
        case = session.get_one(Case, case_id)
        assert case.lease_expires_at is None
    db.dispose()


def test_signing_needs_may_sign_final_and_the_qualification(hub: Hub, tmp_path: Path) -> None:
    api = hub.api
    case_id, _ = send_case(hub, tmp_path)
    resident = login(api, "resident")
    claim(api, resident, case_id)
    prelim = write(api, resident, case_id, "preliminary", text="初步：未见明显异常。")
    assert prelim.status == 201, prelim.body
    refused = write(api, resident, case_id, "final", text="未见明显异常。")
    assert refused.status == 403 and refused.body["error"] == "not_qualified", refused.body
    assert "preliminary reports only" in refused.body["message"]
    detail = api.get(f"/api/v1/cases/{case_id}", resident).body
    assert detail["status"] == "preliminary"  # nothing changed
    assert [r["version"] for r in detail["reports"]] == [1]
    assert "report_final" not in [e["kind"] for e in detail["timeline"]]


def test_qualification_rule() -> None:
    """Empty qualifications: all the centre reads; else every modality (or ECG) and the
    subspecialty asked for. The hub's own SR objects are not a modality to qualify for."""
    ct_neuro = Case(kind="imaging", subspecialty="neuro")
    ct_neuro.studies = [Study(study_uid="1.2", modalities="CT\\SR")]
    ecg = Case(kind="ecg", subspecialty="")
    assert qualified(User(qualifications=[]), ct_neuro)
    assert not qualified(User(qualifications=["CT"]), ct_neuro)
    assert qualified(User(qualifications=["CT", "MR", "neuro"]), ct_neuro)
    assert not qualified(User(qualifications=["MR", "neuro"]), ct_neuro)
    assert qualified(User(qualifications=["ECG"]), ecg)
    assert not qualified(User(qualifications=["CT"]), ecg)


def test_cosignature_by_a_tertiary_reader(hub: Hub, tmp_path: Path) -> None:
    api = hub.api
    # The county hospital's own study is read by the provincial (tertiary) centre.
    case_id, _ = send_case(hub, tmp_path, aet="COUNTYHOSP")
    expert, expert2, reader2 = login(api, "expert"), login(api, COSIGNER), login(api, "reader2")
    claim(api, expert, case_id)
    assert write(api, expert, case_id, "preliminary", text="初步 draft").status == 201
    early = api.post(f"/api/v1/cases/{case_id}/reports/1/cosign", {}, expert2)
    assert early.status == 409 and early.body["error"] == "not_signed"
    final = write(api, expert, case_id, "final", text="左侧基底节区腔隙性梗塞。")
    assert final.status == 201, final.body
    before = api.get(f"/api/v1/cases/{case_id}/reports/2", expert2).body

    own = api.post(f"/api/v1/cases/{case_id}/reports/2/cosign", {}, expert)
    assert own.status == 403 and own.body["error"] == "own_report"
    assert api.post(f"/api/v1/cases/{case_id}/reports/9/cosign", {}, expert2).status == 404
    signed = api.post(
        f"/api/v1/cases/{case_id}/reports/2/cosign", {"comment": "同意 Agree"}, expert2
    )
    assert signed.status == 201, signed.body
    assert signed.body["user"]["username"] == COSIGNER and signed.body["comment"] == "同意 Agree"
    twice = api.post(f"/api/v1/cases/{case_id}/reports/2/cosign", {}, expert2)
    assert twice.status == 409 and twice.body["error"] == "already_cosigned"

    after = api.get(f"/api/v1/cases/{case_id}/reports/2", expert2).body
    assert [c["user"]["username"] for c in after["cosignatures"]] == [COSIGNER]
    after_without = {k: v for k, v in after.items() if k != "cosignatures"}
    assert after_without == {k: v for k, v in before.items() if k != "cosignatures"}
    assert "report_cosigned" in timeline_kinds(api, expert, case_id)

    # A county reader may not co-sign (on a case they see), one who cannot see it gets 404.
    county_case, _ = send_case(hub, tmp_path / "county")
    reader = login(api, "reader")
    claim(api, reader, county_case)
    assert write(api, reader, county_case, "final", text="未见异常。").status == 201
    county = api.post(f"/api/v1/cases/{county_case}/reports/1/cosign", {}, reader2)
    assert county.status == 403 and county.body["error"] == "not_tertiary"
    hidden = api.post(f"/api/v1/cases/{county_case}/reports/1/cosign", {}, expert2)
    assert hidden.status == 404

    db = hub_db(hub)
    with db.reader() as session:
        rows = session.scalars(
            select(ReportCosignature).join(Report).where(Report.case_id == case_id)
        ).all()
        assert len(rows) == 1
    db.dispose()
