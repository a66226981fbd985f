"""ECG through the running hub: upload over HTTP (WFDB, zip, DICOM waveform by C-STORE), the
case on the county ECG centre's worklist, automated analysis, critical ECGs raised to STAT,
waveform JSON and the 12-lead rendering; bad uploads refused with nothing stored."""

from __future__ import annotations

import http.client
import uuid
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wfdb

from dicom.send import send_paths
from tests.helpers import ECG_DATA, Api, Hub, dicom_file


def multipart(files: dict[str, bytes], fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for name, value in (fields or {}).items():
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    for name, data in files.items():
        chunks.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def upload(api: Api, token: str, files: dict[str, bytes], **fields: str) -> Any:
    body, content_type = multipart(files, fields)
    return api.request("POST", "/api/v1/ecg", token, raw=body, content_type=content_type)


def record_files(stem: str, *suffixes: str) -> dict[str, bytes]:
    return {f"{stem}{s}": (ECG_DATA / f"{stem}{s}").read_bytes() for s in suffixes}


def case_ids(api: Api, token: str) -> set[int]:
    return {c["id"] for c in api.get("/api/v1/cases?limit=500", token).body["cases"]}


def analysed(api: Api, token: str, ecg_id: int) -> dict[str, Any]:
    return api.wait_for(
        f"/api/v1/ecg/{ecg_id}",
        token,
        lambda body: body if body.get("analysis") else None,
        timeout=60,
    )


def test_wfdb_upload_to_ecg_worklist_with_analysis_and_rendering(embedded_hub: Hub) -> None:
    api = embedded_hub.api
    clinic, ecg_reader = api.login("clinic"), api.login("ecgreader")
    resp = upload(
        api,
        clinic,
        record_files("s0010_re", ".hea", ".dat", ".xyz"),
        clinical_question="胸痛 2 小时 chest pain for 2 h",
    )
    assert resp.status == 201, resp.body
    case_id, ecg_id = resp.body["case_id"], resp.body["ecg_id"]

    item = api.wait_for(
        "/api/v1/worklist",
        ecg_reader,
        lambda body: next((c for c in body["cases"] if c["id"] == case_id), None),
    )
    assert item["kind"] == "ecg" and "ECG" in item["centre"]["name"]
    # The imaging reader does not get ECGs.
    assert case_id not in {
        c["id"] for c in api.get("/api/v1/worklist", api.login("reader")).body["cases"]
    }

    data = analysed(api, clinic, ecg_id)
    assert data["source_format"] == "wfdb" and data["sampling_rate"] == 1000
    assert data["lead_names"][:12] == [
        "I",
        "II",
        "III",
        "aVR",
        "aVL",
        "aVF",
        "V1",
        "V2",
        "V3",
        "V4",
        "V5",
        "V6",
    ]
    analysis = data["analysis"]
    assert analysis["automated"] is True and analysis["confirmed"] is False
    assert 40 <= analysis["heart_rate_bpm"] <= 120
    detail = api.get(f"/api/v1/cases/{case_id}", clinic).body
    assert detail["ecgs"][0]["id"] == ecg_id
    assert "ecg_analysed" in [e["kind"] for e in detail["timeline"]]
    assert detail["clinical_question"].startswith("胸痛")

    wave = api.get(f"/api/v1/ecg/{ecg_id}/waveform?max_points=2000&leads=II,V5", clinic)
    assert wave.status == 200
    assert [lead["name"] for lead in wave.body["leads"]] == ["II", "V5"]
    assert all(len(lead["samples"]) <= 2000 for lead in wave.body["leads"])

    svg = api.get(f"/api/v1/ecg/{ecg_id}/ecg.svg", clinic)
    assert svg.status == 200
    root = ET.fromstring(svg.body)
    assert root.tag.endswith("svg") and root.get("viewBox")
    png = api.get(f"/api/v1/ecg/{ecg_id}/ecg.png", clinic)
    assert png.status == 200 and png.body[:8] == b"\x89PNG\r\n\x1a\n"

    # Another facility's clinic cannot reach the ECG by any route.
    other = api.login("clinic2")
    for path in ("", "/waveform", "/ecg.svg", "/ecg.png"):
        assert api.get(f"/api/v1/ecg/{ecg_id}{path}", other).status == 404


def test_zip_upload_of_a_holter_strip(embedded_hub: Hub, tmp_path: Path) -> None:
    api = embedded_hub.api
    clinic = api.login("clinic")
    archive = tmp_path / "record100.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in record_files("100", ".hea", ".dat", ".atr").items():
            zf.writestr(name, data)
    resp = upload(api, clinic, {"record100.zip": archive.read_bytes()})
    assert resp.status == 201, resp.body
    data = analysed(api, clinic, resp.body["ecg_id"])
    assert data["lead_names"] == ["MLII", "V5"] and data["duration_s"] == pytest.approx(1805.556)
    assert 60 <= data["analysis"]["heart_rate_bpm"] <= 90


def _bradycardia(tmp_path: Path) -> dict[str, bytes]:
    """Real beats from record 100, re-spaced 1.8 s apart: 33 beats/min."""
    rec = wfdb.rdrecord(str(ECG_DATA / "100"), sampto=360 * 60)
    ann = wfdb.rdann(str(ECG_DATA / "100"), "atr", sampto=360 * 60)
    beat = [s for s, sym in zip(ann.sample, ann.symbol, strict=True) if sym == "N"][5]
    template = rec.p_signal[beat - 90 : beat + 150]
    baseline = np.median(rec.p_signal[:3600], axis=0)
    signal = np.tile(baseline, (360 * 30, 1))
    for start in range(200, len(signal) - 300, int(1.8 * 360)):
        signal[start : start + len(template)] = template
    wfdb.wrsamp(
        "brady",
        fs=360,
        units=["mV", "mV"],
        sig_name=["MLII", "V5"],
        p_signal=signal,
        fmt=["16", "16"],
        write_dir=str(tmp_path),
    )
    return {n: (tmp_path / n).read_bytes() for n in ("brady.hea", "brady.dat")}


def test_critical_ecg_is_raised_to_stat(embedded_hub: Hub, tmp_path: Path) -> None:
    api = embedded_hub.api
    clinic, ecg_reader = api.login("clinic"), api.login("ecgreader")
    resp = upload(api, clinic, _bradycardia(tmp_path), priority="routine")
    assert resp.status == 201, resp.body
    data = analysed(api, clinic, resp.body["ecg_id"])
    assert data["critical"] is True
    assert data["analysis"]["heart_rate_bpm"] < 40
    case = api.wait_for(
        f"/api/v1/cases/{resp.body['case_id']}",
        ecg_reader,
        lambda body: body if body["priority"] == "stat" else None,
    )
    assert "priority_raised" in [e["kind"] for e in case["timeline"]]
    first = api.get("/api/v1/worklist", ecg_reader).body["cases"][0]
    assert first["priority"] == "stat"
    assert "bradycardia_severe" in first["critical_findings"]


def test_dicom_ecg_by_c_store_is_extracted_and_analysed(embedded_hub: Hub) -> None:
    api = embedded_hub.api
    result = send_paths(
        [dicom_file("waveform_ecg.dcm")], "127.0.0.1", embedded_hub.dicom_port, "CLINIC1"
    )
    assert result.sent == 1, result.refused
    clinic = api.login("clinic")
    case = api.wait_for(
        "/api/v1/cases?limit=500",
        clinic,
        lambda body: next(
            (c for c in body["cases"] if c["kind"] == "ecg" and c["study_instance_uids"]), None
        ),
    )
    detail = api.wait_for(
        f"/api/v1/cases/{case['id']}", clinic, lambda body: body if body["ecgs"] else None
    )
    ecg = analysed(api, clinic, detail["ecgs"][0]["id"])
    assert ecg["source_format"].startswith("dicom")
    assert len(ecg["lead_names"]) == 12


@pytest.mark.parametrize(
    ("files", "fragment"),
    [
        ({"s0010_re.hea": None}, "s0010_re.dat"),
        ({"notes.txt": b"hello"}, "format"),
        ({"x.xml": b"<?xml version='1.0'?><html><body/></html>"}, "aECG"),
    ],
)
def test_bad_uploads_are_refused_and_nothing_is_created(
    embedded_hub: Hub, files: dict[str, bytes | None], fragment: str
) -> None:
    api = embedded_hub.api
    clinic = api.login("clinic")
    before = case_ids(api, clinic)
    # None: the real file from ../shared/data/ecg (read here, not at collection time)
    files = {n: (ECG_DATA / n).read_bytes() if d is None else d for n, d in files.items()}
    resp = upload(api, clinic, files)
    assert resp.status == 400, resp.body
    assert resp.body["error"] == "bad_ecg"
    assert fragment.lower() in resp.body["message"].lower()
    assert case_ids(api, clinic) == before


def test_upload_rules(embedded_hub: Hub) -> None:
    api = embedded_hub.api
    clinic = api.login("clinic")
    assert upload(api, api.login("reader"), record_files("100", ".hea", ".dat")).status == 403
    resp = api.request("POST", "/api/v1/ecg", clinic, raw=b"{}", content_type="application/json")
    assert resp.status == 400 and resp.body["error"] == "not_multipart"
    assert upload(api, clinic, {}, priority="routine").status == 400
    resp = upload(api, clinic, record_files("100", ".hea", ".dat"), priority="yesterday")
    assert resp.status == 400 and resp.body["error"] == "bad_priority"
    # An oversize body is refused from its declared length, before it is read.
    conn = http.client.HTTPConnection("127.0.0.1", embedded_hub.http_port, timeout=10)
    conn.putrequest("POST", "/api/v1/ecg")
    conn.putheader("Authorization", f"Bearer {clinic}")
    conn.putheader("Content-Type", "multipart/form-data; boundary=x")
    conn.putheader("Content-Length", str(10 * 1024**3))
    conn.endheaders()
    conn.send(b"--x\r\n")
    reply = conn.getresponse()
    assert reply.status == 413
    conn.close()


def test_aecg_upload_built_from_a_real_record(embedded_hub: Hub, tmp_path: Path) -> None:
    from ecg.formats import read_upload
    from ecg.formats.aecg import write_aecg

    ecg = read_upload({n: ECG_DATA / n for n in ("s0010_re.hea", "s0010_re.dat", "s0010_re.xyz")})
    path = tmp_path / "s0010_re.xml"
    write_aecg(ecg, path)
    api = embedded_hub.api
    clinic = api.login("clinic")
    resp = upload(api, clinic, {"s0010_re.xml": path.read_bytes()})
    assert resp.status == 201, resp.body
    data = analysed(api, clinic, resp.body["ecg_id"])
    assert data["source_format"] == "hl7-aecg"
    assert 75 <= data["analysis"]["heart_rate_bpm"] <= 90
