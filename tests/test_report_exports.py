"""The three exports of a report version over real HTTP, each read back by an independent
library: the PDF's text by pypdf, the FHIR DiagnosticReport by fhir.resources' R4 models, the
DICOM SR (stored with the study by the Celery worker, fetched by WADO-RS) by pydicom."""

from __future__ import annotations

import base64
import io
import uuid
from pathlib import Path
from typing import Any

import pydicom
import pytest
import wfdb
from dicomweb_client.api import DICOMwebClient
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from pypdf import PdfReader
from sqlalchemy import select

from telehub.config import Settings
from telehub.db.models import AuditEntry, Instance, OutboxMessage
from telehub.exports import sr
from telehub.services import Services
from tests.helpers import ECG_DATA, Api, Hub
from tests.test_dicom_receiver import hub_db
from tests.test_ecg_api import upload
from tests.test_reports import COSIGNER, add_reader, claim, login, send_case, write

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
FINDINGS = "双肺纹理清晰，右肺上叶见 5 mm 磨玻璃结节。"
IMPRESSION = "右肺上叶磨玻璃结节，建议 6 个月后复查。"


@pytest.fixture(scope="module")
def hub(embedded_hub: Hub) -> Hub:
    """The shared hub, with a second tertiary reader (the demo has one) to co-sign."""
    add_reader(embedded_hub, COSIGNER, "PH", "PH-IMAGING", "刘教授 Prof Liu (provincial)")
    return embedded_hub


def get_raw(api: Api, path: str, token: str) -> tuple[int, str, bytes]:
    import urllib.error
    import urllib.request

    req = urllib.request.Request(api.base_url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def pdf_text(data: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)


def sr_event(api: Api, token: str, case_id: int, version: int) -> dict[str, Any]:
    """The SR_STORED event of a version, once the worker has stored it."""
    return api.wait_for(
        f"/api/v1/cases/{case_id}",
        token,
        lambda body: next(
            (
                e["detail"]
                for e in body["timeline"]
                if e["kind"] == "sr_stored" and e["detail"]["version"] == version
            ),
            None,
        ),
        timeout=90,
    )


def text_items(ds: pydicom.Dataset) -> dict[str, list[str]]:
    """{heading meaning: [TEXT values]} of an SR's content tree."""
    out: dict[str, list[str]] = {}
    for heading in ds.ContentSequence:
        if heading.ValueType == "CONTAINER":
            meaning = heading.ConceptNameCodeSequence[0].CodeMeaning
            out[meaning] = [i.TextValue for i in heading.ContentSequence if i.ValueType == "TEXT"]
    return out


def test_pdf_fhir_and_sr_of_a_county_report(hub: Hub, tmp_path: Path) -> None:
    api = hub.api
    patient_id = f"EXP-{uuid.uuid4().hex[:8]}"
    case_id, study_uid = send_case(
        hub,
        tmp_path,
        PatientID=patient_id,
        PatientName="张^三",
        PatientSex="M",
        PatientBirthDate="19800101",
        AccessionNumber="A2024-001",
        StudyDescription="胸部 CT Chest",
        SpecificCharacterSet="ISO_IR 192",
    )
    reader, clinic, clinic2 = login(api, "reader"), login(api, "clinic"), login(api, "clinic2")
    claim(api, reader, case_id)
    assert write(api, reader, case_id, "preliminary", text="初步意见").status == 201
    final = write(
        api,
        reader,
        case_id,
        "final",
        template="ct",
        sections={"findings": FINDINGS, "impression": IMPRESSION},
    )
    assert final.status == 201, final.body
    base = f"/api/v1/cases/{case_id}/reports"

    # PDF: reading facility header, origin, patient, study, text, reader, version.
    status, ctype, data = get_raw(api, f"{base}/2.pdf", clinic)
    assert status == 200 and ctype == "application/pdf" and data.startswith(b"%PDF")
    text = pdf_text(data)
    for expected in (
        "县人民医院",  # the reading facility's name, in Chinese
        "城关镇卫生院",  # origin
        "李医生",  # reader
        "张 三",
        patient_id,
        "1980-01-01",
        "A2024-001",
        "胸部 CT Chest",
        FINDINGS,
        IMPRESSION,
        "正式报告 Final",
        "第 2 版",
    ):
        assert expected in text, (expected, text)
    assert get_raw(api, f"{base}/2/pdf", clinic)[0] == 200
    for fmt in (".pdf", "/fhir", "/sr"):
        assert get_raw(api, f"{base}/2{fmt}", clinic2)[0] == 404  # another facility's case
        assert get_raw(api, f"{base}/1{fmt}", clinic)[0] == 404  # a preliminary, for the clinic
    prelim_pdf = pdf_text(get_raw(api, f"{base}/1.pdf", reader)[2])
    assert "初步报告 Preliminary" in prelim_pdf and "初步意见" in prelim_pdf

    # FHIR R4 DiagnosticReport.
    status, ctype, data = get_raw(api, f"{base}/2/fhir", clinic)
    assert status == 200 and ctype.startswith("application/fhir+json")
    report = DiagnosticReport.model_validate_json(data)
    assert report.status == "final"
    assert report.code.coding[0].system == "http://loinc.org"
    assert report.code.coding[0].code == "18748-4"
    assert report.subject.identifier.value == patient_id
    assert report.imagingStudy[0].identifier.system == "urn:dicom:uid"
    assert report.imagingStudy[0].identifier.value == f"urn:oid:{study_uid}"
    assert "李医生" in report.resultsInterpreter[0].display
    assert "县人民医院" in report.performer[0].display
    assert FINDINGS in report.conclusion and IMPRESSION in report.conclusion
    assert report.issued is not None
    form = report.presentedForm[0]
    assert form.contentType == "application/pdf"
    raw = report.model_dump(mode="json")["presentedForm"][0]["data"]  # base64 on the wire
    assert FINDINGS in pdf_text(base64.b64decode(raw)) and form.data.startswith(b"%PDF")

    # SR: stored with the study by the worker, served by WADO-RS like any instance.
    stored = sr_event(api, reader, case_id, 2)
    assert stored["study_uid"] == study_uid
    web = DICOMwebClient(
        f"http://127.0.0.1:{hub.http_port}/dicomweb", headers={"Authorization": f"Bearer {clinic}"}
    )
    ds = web.retrieve_instance(study_uid, stored["series_uid"], stored["sop_instance_uid"])
    assert ds.SOPClassUID == BASIC_TEXT_SR and ds.Modality == "SR"
    assert ds.StudyInstanceUID == study_uid and ds.SeriesInstanceUID != ""
    assert str(ds.PatientName) == "张^三" and ds.PatientID == patient_id
    assert ds.AccessionNumber == "A2024-001"
    assert ds.CompletionFlag == "COMPLETE" and ds.VerificationFlag == "VERIFIED"
    assert "李医生" in str(ds.VerifyingObserverSequence[0].VerifyingObserverName)
    assert text_items(ds) == {"Findings": [FINDINGS], "Impressions": [IMPRESSION]}
    status, ctype, data = get_raw(api, f"{base}/2/sr", clinic)
    assert status == 200 and ctype == "application/dicom"
    exported = pydicom.dcmread(io.BytesIO(data))
    assert exported.SOPInstanceUID == ds.SOPInstanceUID
    assert text_items(exported) == text_items(ds)

    # Storing it again (a redelivered task) changes nothing.
    settings = Settings.load(data=hub.data)
    services = Services.from_settings(settings)
    try:
        assert sr.store_report_sr(services, case_id, 2, None) is True
        with services.db.reader() as session:
            count = session.scalars(
                select(Instance).where(Instance.sop_uid == stored["sop_instance_uid"])
            ).all()
            assert len(count) == 1
    finally:
        services.close()
    events = api.get(f"/api/v1/cases/{case_id}", reader).body["timeline"]
    assert [e["detail"]["version"] for e in events if e["kind"] == "sr_stored"] == [2]

    # An addendum: its own SR after the final's, and "appended" in FHIR.
    added = write(api, reader, case_id, "addendum", text="补充：纵隔淋巴结不大。")
    assert added.status == 201, added.body
    second = sr_event(api, reader, case_id, 3)
    ds3 = web.retrieve_instance(study_uid, second["series_uid"], second["sop_instance_uid"])
    assert second["series_uid"] == stored["series_uid"]
    assert (
        ds3.PredecessorDocumentsSequence[0]
        .ReferencedSeriesSequence[0]
        .ReferencedSOPSequence[0]
        .ReferencedSOPInstanceUID
        == stored["sop_instance_uid"]
    )
    assert text_items(ds3)["Addendum"] == ["补充：纵隔淋巴结不大。"]
    assert text_items(ds3)["Findings"] == [FINDINGS]
    fhir3 = DiagnosticReport.model_validate_json(get_raw(api, f"{base}/3/fhir", clinic)[2])
    assert fhir3.status == "appended" and "纵隔淋巴结不大" in fhir3.conclusion
    pdf3 = pdf_text(get_raw(api, f"{base}/3.pdf", clinic)[2])
    assert "补充报告 Addendum" in pdf3 and "纵隔淋巴结不大" in pdf3 and FINDINGS in pdf3

    db = hub_db(hub)
    with db.reader() as session:
        formats = {
            e.detail.get("format")
            for e in session.scalars(
                select(AuditEntry).where(
                    AuditEntry.action == "export", AuditEntry.resource_id == str(case_id)
                )
            )
        }
    db.dispose()
    assert formats == {"pdf", "fhir", "sr"}


def test_tertiary_report_pdf_shows_the_cosignature(hub: Hub, tmp_path: Path) -> None:
    api = hub.api
    case_id, _ = send_case(hub, tmp_path, aet="COUNTYHOSP")
    expert, expert2 = login(api, "expert"), login(api, COSIGNER)
    claim(api, expert, case_id)
    assert write(api, expert, case_id, "final", text="左侧基底节区腔隙性梗塞。").status == 201
    cosigned = api.post(f"/api/v1/cases/{case_id}/reports/1/cosign", {"comment": "同意"}, expert2)
    assert cosigned.status == 201, cosigned.body
    status, _, data = get_raw(api, f"/api/v1/cases/{case_id}/reports/1.pdf", expert)
    assert status == 200
    text = pdf_text(data)
    for expected in (
        "省人民医院",
        "陈教授",
        "刘教授",
        "会签",
        "左侧基底节区腔隙性梗塞",
        "县人民医院",
    ):
        assert expected in text, (expected, text)


def short_ecg(folder: Path) -> dict[str, bytes]:
    """The first 10 s of MIT-BIH record 100, as a WFDB upload (quick to analyse)."""
    rec = wfdb.rdrecord(str(ECG_DATA / "100"), sampto=3600)
    wfdb.wrsamp(
        "short",
        fs=rec.fs,
        units=rec.units,
        sig_name=rec.sig_name,
        p_signal=rec.p_signal,
        fmt=["16"] * rec.n_sig,
        write_dir=str(folder),
    )
    return {n: (folder / n).read_bytes() for n in ("short.hea", "short.dat")}


def test_ecg_report_exports_without_an_sr(hub: Hub, tmp_path: Path) -> None:
    api = hub.api
    clinic, ecg_reader = login(api, "clinic"), login(api, "ecgreader")
    resp = upload(api, clinic, short_ecg(tmp_path))
    assert resp.status == 201, resp.body
    case_id = resp.body["case_id"]
    api.wait_for(
        f"/api/v1/cases/{case_id}",
        ecg_reader,
        lambda body: body["status"] == "routed",
        timeout=60,
    )
    claim(api, ecg_reader, case_id)
    final = write(
        api,
        ecg_reader,
        case_id,
        "final",
        sections={"rhythm": "窦性心律", "rate": "78 次/分", "conclusion": "正常心电图"},
    )
    assert final.status == 201 and final.body["template"] == "ecg", final.body
    status, _, data = get_raw(api, f"/api/v1/cases/{case_id}/reports/1/fhir", clinic)
    assert status == 200
    report = DiagnosticReport.model_validate_json(data)
    assert report.code.coding[0].code == "11524-6"
    assert report.category[0].coding[0].code == "EC"
    assert "正常心电图" in report.conclusion and report.imagingStudy is None
    assert "心电图诊断 Conclusion" in pdf_text(
        get_raw(api, f"/api/v1/cases/{case_id}/reports/1.pdf", clinic)[2]
    )
    sr_resp = get_raw(api, f"/api/v1/cases/{case_id}/reports/1/sr", clinic)
    assert sr_resp[0] == 404
    db = hub_db(hub)
    with db.reader() as session:
        tasks = session.scalars(
            select(OutboxMessage.args).where(OutboxMessage.task == "telehub.store_report_sr")
        ).all()
    db.dispose()
    assert case_id not in [a["case_id"] for a in tasks]  # no DICOM study: no SR task at all


def test_an_installed_cjk_font_is_embedded_else_the_cid_font() -> None:
    """With Debian's fonts-wqy-zenhei installed (this suite installs it, as it does DCMTK) the
    PDF carries its own glyphs; the module falls back to STSong-Light without it."""
    import subprocess
    import sys

    from telehub.exports import pdf
    from tests.helpers import need_service

    font = pdf.EMBEDDABLE_FONTS[0]
    if not Path(font).exists():
        done = subprocess.run(
            ["apt-get", "install", "-y", "-q", "fonts-wqy-zenhei"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if done.returncode != 0 or not Path(font).exists():
            need_service("fonts-wqy-zenhei", done.stderr[-300:])
    probe = (
        "import sys, telehub.exports.pdf as p; p.ensure_font(); "
        "from reportlab.pdfgen.canvas import Canvas; import io; b = io.BytesIO(); "
        "c = Canvas(b); c.setFont(p.FONT, 12); c.drawString(72, 700, '县人民医院'); c.save(); "
        "sys.stdout.write(p.FONT + ' ' + str(b'/FontFile2' in b.getvalue()))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout == "TelehubCJK True", out.stderr
    fallback = probe.replace(
        "import sys, telehub", "import sys, os; os.path.exists = lambda _p: False; import telehub"
    )
    out = subprocess.run(
        [sys.executable, "-c", fallback], capture_output=True, text=True, check=True
    )
    assert out.stdout == "STSong-Light False", out.stderr
