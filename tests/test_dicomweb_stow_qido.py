"""DICOMweb STOW-RS and QIDO-RS through the running hub, driven by dicomweb-client (a real
client we did not write) and by raw HTTP for what that client cannot send: partial failures,
wrong media types, oversize bodies. Also: the stored bytes are the bytes sent, an ECG sent by
STOW is analysed, Chinese names survive, and each facility sees only its own studies."""

from __future__ import annotations

import http.client
import io
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.helpers import Api, Hub, fresh_copy, start_hub


# ----- helpers -------------------------------------------------------------------------------
def client(hub: Hub, user: str) -> DICOMwebClient:
    token = hub.api.login(user)
    return DICOMwebClient(
        f"http://127.0.0.1:{hub.http_port}/dicomweb", headers={"Authorization": f"Bearer {token}"}
    )


def encoded(ds: Dataset) -> bytes:
    """The bytes dicomweb-client sends for ``ds`` (it encodes with pydicom.dcmwrite)."""
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds)
    return buffer.getvalue()


def related(parts: list[tuple[bytes, str]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b"".join(
        f"\r\n--{boundary}\r\nContent-Type: {media}\r\n\r\n".encode() + data
        for data, media in parts
    )
    body += f"\r\n--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def stow_raw(api: Api, token: str, parts: list[tuple[bytes, str]], path: str = "") -> Any:
    body, content_type = related(parts)
    return api.request(
        "POST", f"/dicomweb/studies{path}", token, raw=body, content_type=content_type
    )


def index(hub: Hub, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the hub's SQLite index directly (read-only) to check what was stored."""
    db = sqlite3.connect(f"file:{hub.data / 'telehub.sqlite3'}?mode=ro", uri=True)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def value(result: dict[str, Any], tag: str) -> Any:
    values = result.get(tag, {}).get("Value", [])
    return values[0] if len(values) == 1 else values


def spool_is_empty(hub: Hub) -> bool:
    """No STOW body or part is left in the spool (other services keep folders there)."""
    return not list((hub.data / "spool").glob("stow-*"))


# ----- STOW + QIDO with dicomweb-client ------------------------------------------------------
@pytest.fixture(scope="module")
def stowed(embedded_hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two studies of one new patient, stored by the clinic through dicomweb-client."""
    tmp = tmp_path_factory.mktemp("stow")
    pid = f"STOW-{uuid.uuid4().hex[:8]}"
    name = f"Stowtest^{pid[5:]}"
    study_a, study_b = generate_uid(), generate_uid()
    common = {"PatientID": pid, "PatientName": name}
    files = {
        "ct": fresh_copy(
            "CT_small.dcm", tmp, study_a, StudyDate="20200315", StudyTime="101500", **common
        ),
        "mr": fresh_copy(
            "MR_small.dcm", tmp, study_a, StudyDate="20200315", StudyTime="101500", **common
        ),
        "jpeg": fresh_copy(
            "JPEG-lossy.dcm", tmp, study_b, StudyDate="20210620", StudyTime="183000", **common
        ),
        "be": fresh_copy(
            "MR_small_bigendian.dcm",
            tmp,
            study_b,
            StudyDate="20210620",
            StudyTime="183000",
            **common,
        ),
    }
    datasets = {k: pydicom.dcmread(p) for k, p in files.items()}
    response = client(embedded_hub, "clinic").store_instances(list(datasets.values()))
    return {
        "pid": pid,
        "name": name,
        "a": study_a,
        "b": study_b,
        "datasets": datasets,
        "response": response,
    }


def test_stow_response_and_stored_bytes(embedded_hub: Hub, stowed: dict[str, Any]) -> None:
    response = stowed["response"]
    assert "FailedSOPSequence" not in response
    referenced = {item.ReferencedSOPInstanceUID: item for item in response.ReferencedSOPSequence}
    datasets = stowed["datasets"]
    assert set(referenced) == {ds.SOPInstanceUID for ds in datasets.values()}
    ct = datasets["ct"]
    item = referenced[ct.SOPInstanceUID]
    assert item.ReferencedSOPClassUID == ct.SOPClassUID
    assert item.RetrieveURL.endswith(
        f"/dicomweb/studies/{stowed['a']}/series/{ct.SeriesInstanceUID}/instances/{ct.SOPInstanceUID}"
    )
    # Stored as received: the object under the index's key holds exactly the bytes sent.
    for key in ("ct", "be", "jpeg"):
        ds = datasets[key]
        [(object_key, source, ts)] = index(
            embedded_hub,
            "SELECT object_key, source, transfer_syntax_uid FROM instances WHERE sop_uid = ?",
            ds.SOPInstanceUID,
        )
        assert (embedded_hub.data / "objects" / object_key).read_bytes() == encoded(ds)
        assert source == "stow:clinic" and ts == ds.file_meta.TransferSyntaxUID
    assert spool_is_empty(embedded_hub)
    # The write is audited, per study.
    rows = index(
        embedded_hub,
        "SELECT resource_id FROM audit_log WHERE action = 'store' AND resource_type = 'study'",
    )
    assert {stowed["a"], stowed["b"]} <= {r[0] for r in rows}


def test_qido_studies_matching(embedded_hub: Hub, stowed: dict[str, Any]) -> None:
    web = client(embedded_hub, "clinic")
    pid, a, b = stowed["pid"], stowed["a"], stowed["b"]

    def studies(**filters: Any) -> set[str]:
        found = web.search_for_studies(search_filters={"PatientID": pid, **filters})
        return {value(r, "0020000D") for r in found}

    results = web.search_for_studies(search_filters={"PatientID": pid})
    assert len(results) == 2
    study_a = next(r for r in results if value(r, "0020000D") == a)
    assert value(study_a, "00100010") == {"Alphabetic": stowed["name"]}
    assert value(study_a, "00080005") == "ISO_IR 192"
    assert value(study_a, "00080020") == "20200315"
    assert sorted(value(study_a, "00080061")) == ["CT", "MR"]
    assert value(study_a, "00201206") == 2 and value(study_a, "00201208") == 2
    assert value(study_a, "00081190").endswith(f"/dicomweb/studies/{a}")

    assert studies(StudyDate="20200101-20201231") == {a}
    assert studies(StudyDate="-20201231") == {a}
    assert studies(StudyDate="20210101-") == {b}
    assert studies(StudyDate="20210620") == {b}
    assert studies(StudyTime="1800-1900") == {b}
    assert studies(StudyTime="-1015") == {a}
    assert studies(ModalitiesInStudy="MR") == {a, b}
    assert studies(ModalitiesInStudy="CT") == {a}
    assert studies(StudyInstanceUID=f"{a},{b}") == {a, b}
    assert studies(StudyInstanceUID=b) == {b}
    # Names: case-insensitive, with * and ?; a tag works like its keyword.
    lower = stowed["name"].lower()
    assert studies(PatientName=lower) == {a, b}
    assert studies(PatientName=lower[:8] + "*") == {a, b}
    assert studies(PatientName="?" + lower[1:]) == {a, b}
    assert studies(PatientName="nobody*") == set()
    found = web.search_for_studies(search_filters={"00100020": pid, "00100010": stowed["name"]})
    assert len(found) == 2
    # fuzzymatching is accepted (and ignored); limit/offset page through in a stable order.
    assert len(web.search_for_studies(fuzzymatching=True, search_filters={"PatientID": pid})) == 2
    first = web.search_for_studies(limit=1, search_filters={"PatientID": pid})
    second = web.search_for_studies(limit=1, offset=1, search_filters={"PatientID": pid})
    assert len(first) == len(second) == 1 and first != second
    # No match: an empty list.
    assert web.search_for_studies(search_filters={"PatientID": pid + "-none"}) == []


def test_qido_series_and_instances(embedded_hub: Hub, stowed: dict[str, Any]) -> None:
    web = client(embedded_hub, "clinic")
    ct, mr = stowed["datasets"]["ct"], stowed["datasets"]["mr"]
    series = web.search_for_series(stowed["a"])
    assert {value(s, "0020000E") for s in series} == {ct.SeriesInstanceUID, mr.SeriesInstanceUID}
    ct_series = next(s for s in series if value(s, "00080060") == "CT")
    assert value(ct_series, "00201209") == 1
    assert value(ct_series, "00200011") == ct.SeriesNumber
    # All series: study attributes come along; includefield adds what is not by default.
    found = web.search_for_series(
        search_filters={"Modality": "CT", "PatientID": stowed["pid"]}, fields=["StudyDescription"]
    )
    assert [value(s, "0020000E") for s in found] == [ct.SeriesInstanceUID]
    assert value(found[0], "00100010") == {"Alphabetic": stowed["name"]}
    assert value(found[0], "0020000D") == stowed["a"]

    instances = web.search_for_instances(stowed["a"], ct.SeriesInstanceUID)
    assert len(instances) == 1
    assert value(instances[0], "00080018") == ct.SOPInstanceUID
    assert value(instances[0], "00080016") == ct.SOPClassUID
    assert value(instances[0], "00200013") == int(ct.InstanceNumber)
    assert len(web.search_for_instances(stowed["a"])) == 2
    everywhere = web.search_for_instances(search_filters={"SOPInstanceUID": mr.SOPInstanceUID})
    assert [value(i, "0020000E") for i in everywhere] == [mr.SeriesInstanceUID]
    assert value(everywhere[0], "00100020") == stowed["pid"]
    assert value(everywhere[0], "00080060") == "MR"  # series attributes of an all-instances hit
    assert "00100010" not in instances[0]  # study and series fixed by the path: not repeated
    with_all = web.search_for_series(stowed["a"], fields=["all"])
    assert all("00100010" in s and "00080020" in s for s in with_all)


def test_qido_access_rules_and_audit(embedded_hub: Hub, stowed: dict[str, Any]) -> None:
    api = embedded_hub.api
    other = client(embedded_hub, "clinic2")
    assert other.search_for_studies(search_filters={"PatientID": stowed["pid"]}) == []
    clinic2 = api.login("clinic2")
    for path in (f"/studies/{stowed['a']}/series", f"/studies/{stowed['a']}/instances"):
        resp = api.get(f"/dicomweb{path}", clinic2)
        assert resp.status == 404 and resp.body["error"] == "not_found"
    # The county imaging reader sees the studies once routed there; the provincial one never.
    reader = api.login("reader")
    api.wait_for(
        f"/dicomweb/studies?StudyInstanceUID={stowed['a']}", reader, lambda found: found, timeout=30
    )
    expert = api.login("expert")
    assert api.get(f"/dicomweb/studies?StudyInstanceUID={stowed['a']}", expert).body == []
    # Each query is audited with who asked, what, and how many results.
    rows = index(
        embedded_hub,
        "SELECT detail FROM audit_log a JOIN users u ON u.id = a.user_id "
        "WHERE a.action = 'search' AND u.username = 'clinic2' AND a.resource_type = 'study'",
    )
    assert any(stowed["pid"] in detail and '"results": 0' in detail for (detail,) in rows)


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("NotAnAttribute=1", "unknown_attribute"),
        ("StudyDate=2020-2021", "bad_parameter"),
        ("StudyDate=20201301", "bad_parameter"),
        ("StudyDate=20211231-20200101", "bad_parameter"),
        ("StudyTime=2500", "bad_parameter"),
        ("limit=ten", "bad_parameter"),
        ("offset=-1", "bad_parameter"),
        ("includefield=NoSuchThing", "unknown_attribute"),
    ],
)
def test_qido_bad_parameters(embedded_hub: Hub, query: str, code: str) -> None:
    api = embedded_hub.api
    resp = api.get(f"/dicomweb/studies?{query}", api.login("clinic"))
    assert resp.status == 400 and resp.body["error"] == code, resp.body


def test_qido_unsupported_attribute_is_ignored_with_a_warning(embedded_hub: Hub) -> None:
    token = embedded_hub.api.login("clinic")
    response = requests.get(
        f"http://127.0.0.1:{embedded_hub.http_port}/dicomweb/studies",
        params={"ReferringPhysicianName": "Nobody", "limit": "1"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/dicom+json"
    assert response.headers["Warning"].startswith("299 ")
    assert "ReferringPhysicianName" in response.headers["Warning"]
    spec = embedded_hub.api.get("/api/v1/openapi.json", token).body
    assert {"get", "post"} <= set(spec["paths"]["/dicomweb/studies"])
    assert "get" in spec["paths"]["/dicomweb/studies/{study}/series/{series}/instances"]


# ----- STOW failures -------------------------------------------------------------------------
def test_stow_partial_failure_stores_the_good_parts(embedded_hub: Hub, tmp_path: Path) -> None:
    api = embedded_hub.api
    clinic = api.login("clinic")
    study = generate_uid()
    good = fresh_copy("CT_small.dcm", tmp_path, study).read_bytes()
    truncated_path = fresh_copy("MR_small.dcm", tmp_path, study)
    truncated_uid = pydicom.dcmread(truncated_path).SOPInstanceUID
    truncated = truncated_path.read_bytes()[:-1000]
    resp = stow_raw(
        api,
        clinic,
        [
            (good, "application/dicom"),
            (b"not dicom at all", "application/dicom"),
            (truncated, "application/dicom"),
        ],
    )
    assert resp.status == 202, resp.body
    result = Dataset.from_json(resp.body)
    assert len(result.ReferencedSOPSequence) == 1
    failures = {f.ReferencedSOPInstanceUID: f.FailureReason for f in result.FailedSOPSequence}
    assert failures == {"": 0xC000, truncated_uid: 0xC000}
    # Nothing of the refused instance is indexed or left in the object store.
    assert index(embedded_hub, "SELECT id FROM instances WHERE sop_uid = ?", truncated_uid) == []
    assert not list((embedded_hub.data / "objects").rglob(f"{truncated_uid}*"))
    assert api.get(f"/dicomweb/instances?SOPInstanceUID={truncated_uid}", clinic).body == []
    assert spool_is_empty(embedded_hub)

    # To the study's own URI, and again (a re-sent instance is acknowledged, not copied twice).
    same_study = fresh_copy("MR_small.dcm", tmp_path, study).read_bytes()
    for _ in range(2):
        resp = stow_raw(api, clinic, [(same_study, "application/dicom")], path=f"/{study}")
        assert resp.status == 200, resp.body
        assert value(resp.body, "00081190").endswith(f"/dicomweb/studies/{study}")
    assert index(embedded_hub, "SELECT instance_count FROM studies WHERE study_uid = ?", study) == [
        (2,)
    ]

    # Nothing stored at all: 409 with the reasons; a study UID other than the target: 0xC409.
    other = fresh_copy("CT_small.dcm", tmp_path).read_bytes()
    resp = stow_raw(api, clinic, [(other, "application/dicom")], path=f"/{study}")
    assert resp.status == 409
    assert Dataset.from_json(resp.body).FailedSOPSequence[0].FailureReason == 0xC409
    resp = stow_raw(api, clinic, [(b"\x00" * 200, "application/dicom")])
    assert resp.status == 409


def test_stow_request_rules(embedded_hub: Hub, tmp_path: Path) -> None:
    api = embedded_hub.api
    clinic = api.login("clinic")
    part = fresh_copy("CT_small.dcm", tmp_path).read_bytes()
    resp = api.request(
        "POST", "/dicomweb/studies", clinic, raw=part, content_type="application/dicom"
    )
    assert resp.status == 415 and resp.body["error"] == "unsupported_media_type"
    resp = stow_raw(api, clinic, [(b"{}", "application/json")])
    assert resp.status == 415
    resp = stow_raw(api, api.login("reader"), [(part, "application/dicom")])
    assert resp.status == 403 and resp.body["error"] == "not_a_sender"
    with pytest.raises(requests.HTTPError) as raised:
        client(embedded_hub, "reader").store_instances([pydicom.dcmread(io.BytesIO(part))])
    assert raised.value.response.status_code == 403
    body, content_type = related([(part, "application/dicom")])
    resp = api.request(
        "POST", "/dicomweb/studies", clinic, raw=body[:-10], content_type=content_type
    )
    assert resp.status == 400 and resp.body["error"] == "bad_multipart"
    assert spool_is_empty(embedded_hub)


def test_ecg_sent_by_stow_is_analysed(embedded_hub: Hub, tmp_path: Path) -> None:
    api = embedded_hub.api
    path = fresh_copy("waveform_ecg.dcm", tmp_path)
    study = pydicom.dcmread(path).StudyInstanceUID
    response = client(embedded_hub, "clinic").store_instances([pydicom.dcmread(path)])
    assert len(response.ReferencedSOPSequence) == 1
    ecg_reader = api.login("ecgreader")
    item = api.wait_for(
        "/api/v1/worklist",
        ecg_reader,
        lambda body: next((c for c in body["cases"] if study in c["study_instance_uids"]), None),
    )
    assert item["kind"] == "ecg"
    detail = api.wait_for(
        f"/api/v1/cases/{item['id']}", ecg_reader, lambda body: body if body["ecgs"] else None
    )
    ecg = api.wait_for(
        f"/api/v1/ecg/{detail['ecgs'][0]['id']}",
        ecg_reader,
        lambda body: body if body.get("analysis") else None,
        timeout=60,
    )
    assert ecg["source_format"].startswith("dicom") and len(ecg["lead_names"]) == 12
    assert ecg["analysis"]["automated"] is True


def test_chinese_name_in_gb18030_comes_back_right(embedded_hub: Hub, tmp_path: Path) -> None:
    pid = f"ZH-{uuid.uuid4().hex[:8]}"
    path = fresh_copy("CT_small.dcm", tmp_path, PatientID=pid)
    ds = pydicom.dcmread(path)
    ds.SpecificCharacterSet = "GB18030"
    ds.PatientName = "张^三"
    ds.StudyDescription = "胸部 CT"
    data = encoded(ds)
    assert "张".encode("gb18030") in data and "张".encode() not in data
    web = client(embedded_hub, "clinic")
    web.store_instances([pydicom.dcmread(io.BytesIO(data))])
    for name in ("张^三", "张*", "*三"):
        [found] = web.search_for_studies(search_filters={"PatientName": name, "PatientID": pid})
        assert value(found, "00100010") == {"Alphabetic": "张^三"}
        assert value(found, "00081030") == "胸部 CT"


# ----- size limit ----------------------------------------------------------------------------
def test_oversize_body_is_refused(tmp_path: Path) -> None:
    hub = start_hub(tmp_path, {"TELEHUB_STOW_MAX_BYTES": "100000"}, name="small")
    try:
        token = hub.api.login("clinic")
        # Declared too large: refused before the body is read.
        conn = http.client.HTTPConnection("127.0.0.1", hub.http_port, timeout=10)
        conn.putrequest("POST", "/dicomweb/studies")
        conn.putheader("Authorization", f"Bearer {token}")
        conn.putheader("Content-Type", 'multipart/related; type="application/dicom"; boundary=x')
        conn.putheader("Content-Length", str(10 * 1024**3))
        conn.endheaders()
        conn.send(b"--x\r\n")
        reply = conn.getresponse()
        assert reply.status == 413 and b"too_large" in reply.read()
        conn.close()
        # Chunked, no length: refused once the stream passes the limit.
        body, content_type = related([(b"\x00" * 300_000, "application/dicom")])
        chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
        conn = http.client.HTTPConnection("127.0.0.1", hub.http_port, timeout=10)
        conn.request(
            "POST",
            "/dicomweb/studies",
            body=chunks,
            headers={"Authorization": f"Bearer {token}", "Content-Type": content_type},
            encode_chunked=True,
        )
        reply = conn.getresponse()
        assert reply.status == 413 and b"too_large" in reply.read()
        conn.close()
        assert spool_is_empty(hub)
        # Below the limit the same hub stores.
        small = fresh_copy("MR_small.dcm", tmp_path)
        assert stow_raw(hub.api, token, [(small.read_bytes(), "application/dicom")]).status == 200
    finally:
        hub.proc.stop()


# ----- PostgreSQL ----------------------------------------------------------------------------
def test_stow_and_qido_matching_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    """The same STOW and QIDO functions on PostgreSQL, where LIKE is case-sensitive and names
    are matched with ILIKE: the SQL must mean the same on both databases."""
    from multidict import MultiDict
    from sqlalchemy import select

    from dicom.web import qido
    from dicom.web.stow import stow_from_file
    from telehub.auth import Principal
    from telehub.config import Settings
    from telehub.db.migrate import upgrade
    from telehub.db.models import User
    from telehub.demo import seed_demo
    from telehub.services import Services

    services = Services.from_settings(
        Settings.load(data=tmp_path / "data", database_url=postgres_url)
    )
    try:
        upgrade(services.db)
        seed_demo(services.db)
        with services.db.reader() as session:
            users = {
                u.username: Principal(u.id, u.username, u.role, u.facility_id, u.centre_id)
                for u in session.scalars(select(User))
            }
        study = generate_uid()
        ct = fresh_copy(
            "CT_small.dcm",
            tmp_path,
            study,
            SpecificCharacterSet="ISO_IR 192",
            PatientName="Wang^Fang=王^芳",
        )
        mr = fresh_copy("MR_small.dcm", tmp_path, study, StudyDate="20200315")
        body, content_type = related(
            [(ct.read_bytes(), "application/dicom"), (mr.read_bytes(), "application/dicom")]
        )
        (tmp_path / "body").write_bytes(body)
        result = stow_from_file(services, users["clinic"], tmp_path / "body", content_type)
        assert result.http_status == 200 and len(result.accepted) == 2

        def search(user: str, level: int = qido.STUDY, **params: str) -> list[dict[str, Any]]:
            query = qido.parse_query(MultiDict(params), level)
            return qido.search(services.db, users[user], query, {}, "http://hub/dicomweb", "")

        [found] = search("clinic", StudyInstanceUID=study, PatientName="WANG^f*")
        assert value(found, "00100010") == {"Alphabetic": "Wang^Fang", "Ideographic": "王^芳"}
        assert len(search("clinic", StudyInstanceUID=study, PatientName="王^芳")) == 1
        assert len(search("clinic", StudyInstanceUID=study, ModalitiesInStudy="M?")) == 1
        assert len(search("clinic", StudyInstanceUID=study, StudyDate="-20040120")) == 1
        assert len(search("clinic", qido.SERIES, StudyInstanceUID=study, Modality="C*")) == 1
        assert search("clinic2", StudyInstanceUID=study) == []
    finally:
        services.close()
