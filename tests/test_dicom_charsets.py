"""Chinese text as Chinese equipment sends it, over C-STORE, shown right by the HTTP API.

Each encoding a Chinese modality uses (GB18030, GBK, ISO 2022 IR 58 with and without its
escape sequences, UTF-8) is written byte for byte here (pydicom 3.0 cannot write ISO 2022 IR 58
correctly), sent by DCMTK's storescu and by our SCU, and read back as the clinic and the
reader see it. The helpers (:func:`chinese_file`, :func:`case_for_study`) are meant for other
protocols' tests too (STOW-RS, QIDO-RS, reports).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import PersonName

from dicom.send import send_paths
from telehub.config import ConfigError, Settings
from tests.helpers import DCMTK_ENV, Api, Hub, dataset_bytes, dcmtk_tool, dicom_file, start_hub
from tests.test_dicom_conformance import stored_instance

NAME = "Zhang^San=张^三"
STUDY = "胸部CT平扫"
SERIES = "肺窗 1.25mm 轴位"

#: encoding id -> (Specific Character Set as written, or None for "not written")
ENCODINGS: dict[str, str | list[str] | None] = {
    "gb18030": "GB18030",
    "gbk": "GBK",
    "iso2022-ir58": ["ISO 2022 IR 6", "ISO 2022 IR 58"],
    "iso2022-ir58-no-escapes": ["ISO 2022 IR 6", "ISO 2022 IR 58"],
    "utf8": "ISO_IR 192",
}


def encode(text: str, encoding: str) -> bytes:
    """``text`` as the equipment would write it in ``encoding`` (an id of ENCODINGS, or
    ``gb18030-undeclared``)."""
    if encoding == "iso2022-ir58":
        # PS3.5 Annex K: each run of Chinese characters designates GB2312 into G1 first.
        out, run = b"", ""
        for char in text + "\0":
            if ord(char) > 127:
                run += char
                continue
            if run:
                out += b"\x1b$)A" + run.encode("gb2312")
                run = ""
            if char != "\0":
                out += char.encode("ascii")
        return out
    codec = {
        "gb18030": "gb18030",
        "gb18030-undeclared": "gb18030",
        "gbk": "gbk",
        "iso2022-ir58-no-escapes": "gb2312",
        "utf8": "utf-8",
    }[encoding]
    return text.encode(codec)


def chinese_file(
    folder: Path,
    encoding: str,
    patient_id: str | None = None,
    name: str = NAME,
    study: str = STUDY,
    series: str = SERIES,
) -> Path:
    """A CT instance (new UIDs) whose patient name and descriptions are ``encoding``'s bytes;
    ``gb18030-undeclared`` writes GB18030 bytes with no Specific Character Set at all."""
    ds = pydicom.dcmread(dicom_file("CT_small.dcm"))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PatientID = patient_id or f"CN-{generate_uid()[-12:]}"
    ds.pop("OtherPatientIDs", None)
    ds.pop("DataSetTrailingPadding", None)  # DCMTK drops it when sending
    charset = ENCODINGS.get(encoding)
    if charset is None:
        ds.pop("SpecificCharacterSet", None)
    else:
        ds.SpecificCharacterSet = charset
    ds.PatientName = PersonName(encode(name, encoding))
    ds["StudyDescription"] = DataElement(0x00081030, "LO", encode(study, encoding))
    ds["SeriesDescription"] = DataElement(0x0008103E, "LO", encode(series, encoding))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def case_for_study(api: Api, token: str, study_uid: str, timeout: float = 30) -> dict[str, Any]:
    """The case detail (GET /api/v1/cases/{id}) of the case holding ``study_uid``."""
    found = api.wait_for(
        "/api/v1/cases?limit=500",
        token,
        lambda body: next(
            (c for c in body["cases"] if study_uid in c["study_instance_uids"]), None
        ),
        timeout,
    )
    detail = api.get(f"/api/v1/cases/{found['id']}", token)
    assert detail.status == 200, detail.body
    return detail.body


def send(hub: Hub, path: Path, sender: str) -> None:
    if sender == "storescu":
        run = subprocess.run(
            [dcmtk_tool("storescu"), "-R", "-xe", "-aet", "CLINIC1", "-aec", "TELEHUB"]
            + ["127.0.0.1", str(hub.dicom_port), str(path)],
            env=DCMTK_ENV,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, run.stdout + run.stderr
    else:
        result = send_paths([path], "127.0.0.1", hub.dicom_port, "CLINIC1")
        assert result.sent == 1, result.refused


def assert_shown_right(case: dict[str, Any], name: str = NAME) -> None:
    assert case["patient"]["name"] == name
    (study,) = case["studies"]
    assert study["description"] == STUDY
    assert [s["description"] for s in study["series"]] == [SERIES]


# ----- tests ---------------------------------------------------------------------------------
@pytest.mark.parametrize("sender", ["storescu", "telehub-scu"])
@pytest.mark.parametrize("encoding", list(ENCODINGS))
def test_chinese_text_is_indexed_and_shown_as_written(
    embedded_hub: Hub, dcmtk: None, tmp_path: Path, encoding: str, sender: str
) -> None:
    path = chinese_file(tmp_path, encoding)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    send(embedded_hub, path, sender)

    api = embedded_hub.api
    case = case_for_study(api, api.login("clinic"), ds.StudyInstanceUID)
    assert_shown_right(case)
    # the object is kept exactly as received: nothing was re-encoded on the way in
    _, stored = stored_instance(embedded_hub, ds.SOPInstanceUID)
    assert stored is not None and dataset_bytes(stored) == dataset_bytes(path.read_bytes())


def test_reader_worklist_shows_the_chinese_name(embedded_hub: Hub, tmp_path: Path) -> None:
    path = chinese_file(tmp_path, "iso2022-ir58")
    study_uid = pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID
    send(embedded_hub, path, "telehub-scu")
    api = embedded_hub.api
    item = api.wait_for(
        "/api/v1/worklist?limit=500",
        api.login("reader"),
        lambda body: next(
            (c for c in body["cases"] if study_uid in c["study_instance_uids"]), None
        ),
    )
    assert item["patient"]["name"] == NAME


def test_undeclared_gb18030_needs_the_default_charset(
    embedded_hub: Hub, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Old Chinese equipment writes GB18030 without Specific Character Set. By the standard
    that is ISO-IR 6, and so the default hub reads it; a consortium sets GB18030."""
    plain = chinese_file(tmp_path / "plain", "gb18030-undeclared")
    send(embedded_hub, plain, "telehub-scu")
    api = embedded_hub.api
    study_uid = pydicom.dcmread(plain, stop_before_pixels=True).StudyInstanceUID
    case = case_for_study(api, api.login("clinic"), study_uid)
    assert case["patient"]["name"] != NAME  # not guessed: the standard's default applies

    hub = start_hub(
        tmp_path_factory.mktemp("gb18030"),
        {"TELEHUB_DICOM_DEFAULT_CHARSET": "GB18030"},
        name="gb18030-hub",
    )
    try:
        path = chinese_file(tmp_path / "configured", "gb18030-undeclared")
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        assert "SpecificCharacterSet" not in ds
        send(hub, path, "telehub-scu")
        case = case_for_study(hub.api, hub.api.login("clinic"), ds.StudyInstanceUID)
        assert_shown_right(case)
        _, stored = stored_instance(hub, ds.SOPInstanceUID)
        assert stored is not None and dataset_bytes(stored) == dataset_bytes(path.read_bytes())
        # a declared character set still wins over the default
        utf8 = chinese_file(tmp_path / "utf8", "utf8")
        send(hub, utf8, "telehub-scu")
        study_uid = pydicom.dcmread(utf8, stop_before_pixels=True).StudyInstanceUID
        assert_shown_right(case_for_study(hub.api, hub.api.login("clinic"), study_uid))
    finally:
        hub.proc.stop()


def test_unknown_default_charset_is_a_configuration_error() -> None:
    assert Settings.load(dicom_default_charset="GB18030").dicom_default_charset == "GB18030"
    with pytest.raises(ConfigError, match="dicom_default_charset"):
        Settings.load(dicom_default_charset="GB2312")
