"""Who may do what over HTTP: tokens, facility boundaries, roles, and clear JSON errors."""

from __future__ import annotations

import uuid
from pathlib import Path

import pydicom
import pytest
from sqlalchemy import select

from dicom.send import send_paths
from telehub.db.models import AuditEntry, User
from tests.helpers import Hub, fresh_copy
from tests.test_dicom_receiver import hub_db

PROTECTED = [
    ("GET", "/api/v1/worklist"),
    ("GET", "/api/v1/cases"),
    ("GET", "/api/v1/cases/1"),
    ("POST", "/api/v1/cases/1/claim"),
    ("POST", "/api/v1/cases/1/reports"),
    ("POST", "/api/v1/auth/logout"),
    ("GET", "/api/v1/openapi.json"),
]


@pytest.fixture(scope="module")
def clinic_case(embedded_hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> int:
    """A case sent by township centre 1, routed to the county imaging centre."""
    path = fresh_copy(
        "CT_small.dcm",
        tmp_path_factory.mktemp("access"),
        PatientName="张^三",
        PatientID=f"ACCESS-{uuid.uuid4().hex[:8]}",  # not a patient other tests already sent
        SpecificCharacterSet="ISO_IR 192",
    )
    study_uid = pydicom.dcmread(path).StudyInstanceUID
    assert send_paths([path], "127.0.0.1", embedded_hub.dicom_port, "CLINIC1").sent == 1
    api = embedded_hub.api
    reader = api.login("reader")
    return api.wait_for(
        "/api/v1/worklist",
        reader,
        lambda body: next(
            (c["id"] for c in body["cases"] if study_uid in c["study_instance_uids"]), None
        ),
    )


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_no_token_gives_401(embedded_hub: Hub, method: str, path: str) -> None:
    resp = embedded_hub.api.request(method, path, body={} if method == "POST" else None)
    assert resp.status == 401
    assert resp.body["error"] == "no_token"


def test_bad_token_and_wrong_password_give_401(embedded_hub: Hub) -> None:
    api = embedded_hub.api
    assert api.get("/api/v1/cases", token="not-a-token").status == 401
    resp = api.post("/api/v1/auth/login", {"username": "clinic", "password": "wrong"})
    assert resp.status == 401
    assert resp.body == {"error": "invalid_credentials", "message": "wrong username or password"}
    resp = api.post("/api/v1/auth/login", {"username": "nobody", "password": "demo"})
    assert resp.status == 401
    assert api.request("POST", "/api/v1/auth/login", raw=b"{not json").status == 400


def test_health_is_public(embedded_hub: Hub) -> None:
    resp = embedded_hub.api.get("/healthz")
    assert resp.status == 200 and resp.body["database"] is True


def test_logout_revokes_the_token(embedded_hub: Hub) -> None:
    api = embedded_hub.api
    token = api.login("clinic")
    assert api.get("/api/v1/cases", token).status == 200
    assert api.post("/api/v1/auth/logout", token=token).status == 200
    assert api.get("/api/v1/cases", token).status == 401


def test_clinic_sees_only_its_own_facility(embedded_hub: Hub, clinic_case: int) -> None:
    api = embedded_hub.api
    own = api.login("clinic")
    other = api.login("clinic2")
    resp = api.get(f"/api/v1/cases/{clinic_case}", own)
    assert resp.status == 200
    assert resp.body["patient"]["name"] == "张^三"
    assert api.get(f"/api/v1/cases/{clinic_case}", other).status == 404
    assert clinic_case not in [c["id"] for c in api.get("/api/v1/cases", other).body["cases"]]
    # A reader of another centre (the provincial one) does not see the county's case either.
    expert = api.login("expert")
    assert api.get(f"/api/v1/cases/{clinic_case}", expert).status == 404
    assert api.post(f"/api/v1/cases/{clinic_case}/claim", token=expert).status == 404


def test_roles_and_state_rules(embedded_hub: Hub, clinic_case: int) -> None:
    api = embedded_hub.api
    clinic = api.login("clinic")
    reader = api.login("reader")
    assert api.get("/api/v1/worklist", clinic).status == 403
    assert api.post(f"/api/v1/cases/{clinic_case}/claim", token=clinic).status == 403
    resp = api.post(
        f"/api/v1/cases/{clinic_case}/reports", {"text": "too early", "status": "final"}, reader
    )
    assert resp.status == 409 and resp.body["error"] == "not_claimed"
    resp = api.post(
        f"/api/v1/cases/{clinic_case}/reports", {"text": "x", "status": "draft"}, reader
    )
    assert resp.status == 400 and resp.body["error"] == "invalid_status"
    assert api.get("/api/v1/cases/abc", reader).status == 400
    assert api.get("/api/v1/cases/999999", reader).status == 404


def test_reads_of_patient_data_are_audited(embedded_hub: Hub, clinic_case: int) -> None:
    api = embedded_hub.api
    assert api.get(f"/api/v1/cases/{clinic_case}", api.login("clinic")).status == 200
    db = hub_db(embedded_hub)
    with db.reader() as session:
        clinic_id = session.scalar(select(User.id).where(User.username == "clinic"))
        entries = session.scalars(
            select(AuditEntry).where(
                AuditEntry.user_id == clinic_id,
                AuditEntry.resource_type == "case",
                AuditEntry.resource_id == str(clinic_case),
                AuditEntry.action == "read",
            )
        ).all()
    db.dispose()
    assert entries and entries[-1].remote == "127.0.0.1"


def test_openapi_document_lists_the_routes(embedded_hub: Hub, tmp_path: Path) -> None:
    api = embedded_hub.api
    spec = api.get("/api/v1/openapi.json", api.login("reader")).body
    assert spec["openapi"].startswith("3.")
    for path in (
        "/api/v1/auth/login",
        "/api/v1/worklist",
        "/api/v1/cases/{id}/claim",
        "/api/v1/cases/{id}/reports",
    ):
        assert path in spec["paths"]


def test_front_end_is_served_by_the_hub(embedded_hub: Hub) -> None:
    """The page and its assets come from the hub itself (no CDN) and hold no patient data."""
    api = embedded_hub.api
    page = api.get("/")
    assert page.status == 200 and b"/static/js/main.js" in page.body
    for asset in ("js/main.js", "js/i18n.js", "js/app.js", "style.css"):
        assert api.get(f"/static/{asset}").status == 200
    assert api.get("/static/../telehub/config.py").status in (401, 403, 404)
    assert b"http" not in page.body.replace(b"http-equiv", b"")  # nothing fetched from outside
