"""Vendor ECG XML: Philips Sierra (a real XLI-compressed export, tests/data/ecg/129DYPRG.xml) and
GE MUSE (built here from the real PhysioNet record s0010_re, encoded as MUSE does), read into the
one ECG representation, uploaded over real HTTP and with ``telehub send``; broken files refused
with a specific message and nothing stored."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wfdb

from ecg.formats import decode_upload, detect_format
from ecg.model import STANDARD_12, ECGError
from ecg.upload import split_ecg_files
from tests.helpers import ECG_DATA, Api, Hub
from tests.test_ecg_api import analysed, case_ids, upload

PHILIPS = Path(__file__).parent / "data" / "ecg" / "129DYPRG.xml"
# The middle sample (index 2750) of each lead, as sierra-ecg-tools' own test of this file expects.
PHILIPS_MIDDLE = [-9, -17, -7, 13, -1, -12, 0, -1, -3, -4, -7, -6]
MUSE_LEADS = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


# ----- a GE MUSE export built from a real record --------------------------------------------
def ptb_digits(seconds: float = 10.0) -> dict[str, np.ndarray]:
    """s0010_re's stored integers (1000 Hz, 2000 counts per mV = 0.5 uV per count)."""
    record = wfdb.rdrecord(str(ECG_DATA / "s0010_re"), physical=False)
    n = int(seconds * record.fs)
    return {
        name.upper().replace("AV", "aV"): record.d_signal[:n, k].astype(np.int64)
        for k, name in enumerate(record.sig_name)
    }


def _lead_data(
    lead: str, digits: np.ndarray, units: str = "MICROVOLTS", per_bit: str = "0.5"
) -> str:
    payload = digits.astype("<i2").tobytes()  # MUSE: little-endian signed 16-bit
    return f"""
    <LeadData>
      <LeadByteCountTotal>{len(payload)}</LeadByteCountTotal>
      <LeadTimeOffset>0</LeadTimeOffset>
      <LeadSampleCountTotal>{len(digits)}</LeadSampleCountTotal>
      <LeadAmplitudeUnitsPerBit>{per_bit}</LeadAmplitudeUnitsPerBit>
      <LeadAmplitudeUnits>{units}</LeadAmplitudeUnits>
      <LeadHighLimit>32767</LeadHighLimit>
      <LeadLowLimit>-32768</LeadLowLimit>
      <LeadID>{lead}</LeadID>
      <LeadOffsetFirstSample>0</LeadOffsetFirstSample>
      <FirstSampleBaseline>0</FirstSampleBaseline>
      <LeadSampleSize>2</LeadSampleSize>
      <LeadOff>FALSE</LeadOff>
      <BaselineSway>FALSE</BaselineSway>
      <LeadDataCRC32>{zlib.crc32(payload)}</LeadDataCRC32>
      <WaveFormData>{base64.encodebytes(payload).decode()}</WaveFormData>
    </LeadData>"""


def _waveform(kind: str, leads: dict[str, str], rate: int, declared: int | None = None) -> str:
    return f"""
  <Waveform>
    <WaveformType>{kind}</WaveformType>
    <WaveformStartTime>0</WaveformStartTime>
    <NumberofLeads>{len(leads) if declared is None else declared}</NumberofLeads>
    <SampleType>{"CONTINUOUS_SAMPLES" if kind == "Rhythm" else "MEDIAN_SAMPLES"}</SampleType>
    <SampleBase>{rate}</SampleBase>
    <SampleExponent>0</SampleExponent>
    <HighPassFilter>5</HighPassFilter>
    <LowPassFilter>150</LowPassFilter>
    <ACFilter>50</ACFilter>{"".join(leads.values())}
  </Waveform>"""


def muse_xml(
    digits: dict[str, np.ndarray],
    *,
    rhythm: bool = True,
    declared: int | None = None,
    lead_xml: dict[str, str] | None = None,
) -> bytes:
    """A MUSE RestingECG export: a Median waveform first, then the Rhythm one (I, II, V1-V6)."""
    rhythm_leads = {lead: _lead_data(lead, digits[lead]) for lead in MUSE_LEADS}
    rhythm_leads["V5"] = _lead_data("V5", digits["V5"], "MILLIVOLTS", "0.0005")  # units per lead
    rhythm_leads.update(lead_xml or {})
    median = {lead: _lead_data(lead, digits[lead][2000:2600] // 2) for lead in MUSE_LEADS}
    waveforms = _waveform("Median", median, 500)
    if rhythm:
        waveforms += _waveform("Rhythm", rhythm_leads, 1000, declared)
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE RestingECG SYSTEM "restecg.dtd">
<RestingECG>
  <MuseInfo><MuseVersion>8.0.2.10132</MuseVersion></MuseInfo>
  <PatientDemographics>
    <PatientID>MUSE-0042</PatientID>
    <PatientAge>81</PatientAge>
    <AgeUnits>YEARS</AgeUnits>
    <DateofBirth>03-14-1909</DateofBirth>
    <Gender>FEMALE</Gender>
    <PatientLastName>王</PatientLastName>
    <PatientFirstName>秀英</PatientFirstName>
  </PatientDemographics>
  <TestDemographics>
    <DataType>RESTING</DataType>
    <Site>1</Site>
    <SiteName>乡镇卫生院 Township centre</SiteName>
    <AcquisitionDevice>MAC2000</AcquisitionDevice>
    <Status>UNCONFIRMED</Status>
    <AcquisitionTime>09:41:07</AcquisitionTime>
    <AcquisitionDate>01-10-1990</AcquisitionDate>
  </TestDemographics>{waveforms}
</RestingECG>
""".encode()


# ----- the readers -------------------------------------------------------------------------
def test_philips_xli_file_decodes_exactly(tmp_path: Path) -> None:
    # Detection by content: the name says nothing about the format.
    named = tmp_path / "EXPORT.001"
    shutil.copy(PHILIPS, named)
    assert detect_format(named) == "philips-xml"
    decoded = decode_upload({named.name: named})
    ecg = decoded.ecg
    assert ecg.lead_names == STANDARD_12 and ecg.source_format == "philips-sierra-xml"
    assert ecg.sampling_rate == 500 and ecg.n_samples == 5500 and ecg.duration == 11.0
    assert ecg.acquired_at == datetime(2011, 12, 1, 7, 27, 34, tzinfo=UTC)
    assert ecg.patient.patient_id == "1112010721168bdc"
    assert (ecg.patient.sex, ecg.patient.age) == ("M", "050Y")
    # XLI decompression and the residual limb leads give the device's integers.
    assert [int(ch.digits[2750]) for ch in decoded.channels] == PHILIPS_MIDDLE
    assert {ch.unit for ch in decoded.channels} == {"uV"} and decoded.channels[0].scale == 5.0
    lead_i, lead_ii, lead_iii = (decoded.channels[k].digits[:5300] for k in range(3))
    assert np.abs(lead_iii - (lead_ii - lead_i)).max() <= 2  # Einthoven, to rounding
    for ch, lead in zip(decoded.channels, ecg.leads, strict=True):
        assert np.array_equal(lead.samples, ch.to_mv())
        np.testing.assert_allclose(lead.samples, ch.digits * 0.005, rtol=0, atol=1e-12)
    # Each lead ends with the cart's 1 mV calibration pulse (200 counts of 5 uV).
    assert all(np.all(ch.digits[5360:5440] == 200) for ch in decoded.channels[:2])
    assert decoded.details["compression"] == "XLI"
    assert "residuals" in decoded.details["limb_leads"]


def test_calibration_pulse_is_not_a_beat() -> None:
    """The Philips rhythm data ends with a flat line and a 1 mV pulse in every lead; the
    analysis stops before it, so the rate is the device's (41/min by its own interpretation)."""
    from ecg.analysis import analyse, signal_end

    ecg = decode_upload({PHILIPS.name: PHILIPS}).ecg
    end = signal_end(ecg)
    assert ecg.n_samples - end == pytest.approx(0.47 * ecg.sampling_rate, abs=20)
    assert (ecg.matrix()[:, end:] == ecg.matrix()[0, end:]).all()  # identical in every lead
    result = analyse(ecg)
    assert result.heart_rate_bpm == pytest.approx(41, abs=1.5)
    assert result.duration_s == pytest.approx(end / ecg.sampling_rate)


def test_uncompressed_philips_gives_the_same_ecg(tmp_path: Path) -> None:
    xli = decode_upload({"a.xml": PHILIPS})
    stored = np.stack([ch.digits for ch in xli.channels]).astype("<i2").tobytes()
    text = PHILIPS.read_text()
    text = text.replace('compressflag="True" compressmethod="XLI"', 'compressflag="False"')
    text = re.sub(
        r"(<parsedwaveforms[^>]*>)[^<]*",
        lambda m: m.group(1) + base64.encodebytes(stored).decode(),
        text,
    )
    path = tmp_path / "plain.xml"
    path.write_text(text)
    plain = decode_upload({path.name: path})
    assert plain.details["compression"] == "none" and "limb_leads" not in plain.details
    for a, b in zip(xli.channels, plain.channels, strict=True):
        assert a.lead == b.lead and np.array_equal(a.digits, b.digits)


def test_muse_round_trip_is_lossless(tmp_path: Path) -> None:
    digits = ptb_digits()
    path = tmp_path / "MUSE_19900110_094107.ecg"
    path.write_bytes(muse_xml(digits))
    assert detect_format(path) == "muse-xml"
    decoded = decode_upload({path.name: path})
    ecg = decoded.ecg
    assert ecg.lead_names == STANDARD_12 and ecg.source_format == "ge-muse-xml"
    # The Rhythm waveform (10 s at 1000 Hz), not the 600-sample Median beat before it.
    assert ecg.sampling_rate == 1000 and ecg.n_samples == 10_000 and ecg.duration == 10.0
    assert ecg.acquired_at == datetime(1990, 1, 10, 9, 41, 7, tzinfo=UTC)
    patient = ecg.patient
    assert (patient.patient_id, patient.name) == ("MUSE-0042", "王^秀英")
    assert (patient.sex, patient.birth_date, patient.age) == ("F", "19090314", "081Y")
    channels = {ch.lead: ch for ch in decoded.channels}
    for lead in MUSE_LEADS:  # the same integers as the PhysioNet record
        assert np.array_equal(channels[lead].digits, digits[lead]), lead
        np.testing.assert_allclose(ecg.lead(lead).samples, digits[lead] / 2000, rtol=0, atol=1e-12)
    assert channels["V5"].unit == "mV"  # amplitude units are per lead
    # III, aVR, aVL, aVF computed exactly from I and II; PTB recorded them, to rounding.
    assert np.array_equal(channels["III"].digits, digits["II"] - digits["I"])
    for lead in ("III", "aVR", "aVL", "aVF"):
        assert np.abs(ecg.lead(lead).samples * 2000 - digits[lead]).max() <= 2.5, lead
    np.testing.assert_allclose(
        ecg.lead("aVR").samples, -(digits["I"] + digits["II"]) / 4000, rtol=0, atol=1e-12
    )
    assert decoded.details["stored_leads"] == ", ".join(MUSE_LEADS)
    assert decoded.details["derived_leads"].startswith("III, aVR, aVL, aVF computed")


def _bad_base64(digits: dict[str, np.ndarray]) -> bytes:
    good = _lead_data("V2", digits["V2"])
    return muse_xml(digits, lead_xml={"V2": good.replace("<WaveFormData>", "<WaveFormData>%%")})


def _bad_crc(digits: dict[str, np.ndarray]) -> bytes:
    changed = digits["V3"].copy()
    changed[500] += 1  # one sample changed in transfer, its CRC-32 still the old one
    good, bad = _lead_data("V3", digits["V3"]), _lead_data("V3", changed)
    crc = re.search(r"<LeadDataCRC32>\d+</LeadDataCRC32>", good)
    assert crc is not None
    bad = re.sub(r"<LeadDataCRC32>\d+</LeadDataCRC32>", crc.group(0), bad)
    return muse_xml(digits, lead_xml={"V3": bad})


def _short_lead(digits: dict[str, np.ndarray]) -> bytes:
    tag = "<LeadSampleCountTotal>"
    short = _lead_data("V4", digits["V4"]).replace(f"{tag}10000", f"{tag}9000")
    return muse_xml(digits, lead_xml={"V4": short})


def _philips(edit: Any) -> bytes:
    return edit(PHILIPS.read_text()).encode()


def _philips_truncated(text: str) -> str:
    start = text.index('nbitspersample="16">') + len('nbitspersample="16">')
    return text[: start + 9000] + text[text.index("</parsedwaveforms>") :]


def _philips_without_waveforms(text: str) -> str:
    return re.sub(r"<waveforms>.*</waveforms>", "", text, flags=re.S)


def _philips_eleven_leads(text: str) -> str:
    """Only the first 11 XLI chunks (the 12th lead and the unused channels cut off)."""
    match = re.search(r'(nbitspersample="16">)([^<]*)', text)
    assert match is not None
    data = base64.b64decode("".join(match.group(2).split()))
    offset = 0
    for _ in range(11):
        offset += 8 + int.from_bytes(data[offset : offset + 4], "little")
    shorter = base64.encodebytes(data[:offset]).decode()
    return text[: match.start(2)] + shorter + text[match.end(2) :]


BROKEN: dict[str, tuple[Any, str]] = {
    "muse-bad-base64": (_bad_base64, "Invalid Base64 in lead V2"),
    "muse-crc-mismatch": (_bad_crc, "do not match their stored CRC-32"),
    "muse-no-rhythm": (lambda d: muse_xml(d, rhythm=False), "no Rhythm waveform"),
    "muse-wrong-lead-count": (
        lambda d: muse_xml(d, declared=12),
        "declares NumberofLeads 12 but holds 8 leads",
    ),
    "muse-sample-count": (_short_lead, "LeadSampleCountTotal 9000 but 10000 samples"),
    "philips-truncated": (lambda d: _philips(_philips_truncated), "XLI chunk"),
    "philips-no-waveform": (
        lambda d: _philips(_philips_without_waveforms),
        "required element <parsedwaveforms> is missing",
    ),
    "philips-wrong-lead-count": (
        lambda d: _philips(_philips_eleven_leads),
        "XLI data holds 11 leads, 12 expected",
    ),
}


@pytest.fixture(scope="module")
def digits() -> dict[str, np.ndarray]:
    return ptb_digits()


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_vendor_xml_is_refused_with_a_specific_message(
    case: str, digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    build, fragment = BROKEN[case]
    path = tmp_path / "ecg.xml"
    path.write_bytes(build(digits))
    with pytest.raises(ECGError, match=re.escape(fragment)):
        decode_upload({path.name: path})


def test_send_picks_xml_ecgs_by_content(tmp_path: Path) -> None:
    plain = tmp_path / "ECG0001"
    shutil.copy(PHILIPS, plain)
    image = tmp_path / "IM0001"
    image.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    dicom, ecgs = split_ecg_files([plain, image])
    assert dicom == [image] and ecgs == [[plain]]


# ----- over real HTTP ----------------------------------------------------------------------
def _record(hub: Hub, ecg_id: int) -> tuple[list[str], str]:
    with sqlite3.connect(hub.data / "telehub.sqlite3") as conn:
        keys, fmt = conn.execute(
            "SELECT original_keys, source_format FROM ecg_records WHERE id = ?", (ecg_id,)
        ).fetchone()
    return json.loads(keys), fmt


def _ecg_objects(hub: Hub) -> set[Path]:
    return set((hub.data / "objects" / "ecg").rglob("*"))


def _check_upload(api: Api, hub: Hub, name: str, data: bytes) -> tuple[dict[str, Any], dict]:
    clinic, ecg_reader = api.login("clinic"), api.login("ecgreader")
    resp = upload(api, clinic, {name: data})
    assert resp.status == 201, resp.body
    case_id, ecg_id = resp.body["case_id"], resp.body["ecg_id"]
    item = api.wait_for(
        "/api/v1/worklist",
        ecg_reader,
        lambda body: next((c for c in body["cases"] if c["id"] == case_id), None),
    )
    assert item["kind"] == "ecg" and "ECG" in item["centre"]["name"]
    result = analysed(api, clinic, ecg_id)
    assert result["analysis"]["automated"] is True and result["analysis"]["confirmed"] is False
    critical = [f["code"] for f in result["analysis"]["findings"] if f["critical"]]
    assert result["critical"] is bool(critical)
    detail = api.wait_for(
        f"/api/v1/cases/{case_id}",
        clinic,
        lambda body: body if (body["priority"] == "stat") is bool(critical) else None,
    )
    assert detail["kind"] == "ecg" and detail["ecgs"][0]["id"] == ecg_id
    # The original file is kept unchanged beside the normalised waveform.
    keys, _ = _record(hub, ecg_id)
    assert len(keys) == 1 and (hub.data / "objects" / keys[0]).read_bytes() == data
    return result, detail


def test_philips_upload_over_http(embedded_hub: Hub) -> None:
    result, detail = _check_upload(
        embedded_hub.api, embedded_hub, "129DYPRG.ecg", PHILIPS.read_bytes()
    )
    assert result["source_format"] == "philips-sierra-xml"
    assert result["lead_names"] == list(STANDARD_12)
    assert result["sampling_rate"] == 500 and result["duration_s"] == 11.0
    assert result["acquired_at"].startswith("2011-12-01T07:27:34")
    analysis = result["analysis"]
    assert 38 <= analysis["heart_rate_bpm"] <= 48  # the cart said 41/min
    # The cart's own statement: acute inferior infarct, ST > 0.10 mV in II, III, aVF.
    stemi = next(f for f in analysis["findings"] if f["code"] == "st_elevation")
    assert {"II", "III", "aVF"} <= set(stemi["details"]["leads"]) and stemi["critical"]
    assert detail["priority"] == "stat"


def test_muse_upload_over_http(embedded_hub: Hub, digits: dict[str, np.ndarray]) -> None:
    api = embedded_hub.api
    data = muse_xml(digits)
    result, _ = _check_upload(api, embedded_hub, "muse.xml", data)
    assert result["source_format"] == "ge-muse-xml"
    assert result["lead_names"] == list(STANDARD_12)
    assert result["sampling_rate"] == 1000 and result["duration_s"] == 10.0
    assert 75 <= result["analysis"]["heart_rate_bpm"] <= 90
    wave = api.get(f"/api/v1/ecg/{result['id']}/waveform?leads=III", api.login("clinic"))
    assert wave.status == 200, wave.body
    assert "III" in json.dumps(wave.body)


@pytest.mark.parametrize("case", ["muse-bad-base64", "philips-truncated"])
def test_broken_vendor_xml_over_http_stores_nothing(
    embedded_hub: Hub, digits: dict[str, np.ndarray], case: str
) -> None:
    api = embedded_hub.api
    clinic = api.login("clinic")
    before, stored = case_ids(api, clinic), _ecg_objects(embedded_hub)
    build, fragment = BROKEN[case]
    resp = upload(api, clinic, {"ecg.xml": build(digits)})
    assert resp.status == 400, resp.body
    assert resp.body["error"] == "bad_ecg" and fragment in resp.body["message"]
    assert case_ids(api, clinic) == before
    assert _ecg_objects(embedded_hub) == stored


def test_telehub_send_uploads_vendor_xml(
    embedded_hub: Hub, digits: dict[str, np.ndarray], tmp_path: Path
) -> None:
    folder = tmp_path / "export"
    folder.mkdir()
    shutil.copy(PHILIPS, folder / "ECG0001")  # no file ending: found by its content
    (folder / "muse.xml").write_bytes(muse_xml(digits))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "telehub",
            "send",
            "--quiet",
            "--http",
            f"http://127.0.0.1:{embedded_hub.http_port}",
            "--user",
            "clinic",
            str(folder),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "TELEHUB_PASSWORD": "demo"},
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    cases = dict(re.findall(r"uploaded (\S+): case (\d+)", done.stdout))
    assert set(cases) == {"ECG0001", "muse.xml"}, done.stdout
    api = embedded_hub.api
    clinic = api.login("clinic")
    formats = set()
    for case_id in cases.values():
        detail = api.get(f"/api/v1/cases/{case_id}", clinic).body
        assert detail["kind"] == "ecg"
        formats.add(_record(embedded_hub, detail["ecgs"][0]["id"])[1])
    assert formats == {"philips-sierra-xml", "ge-muse-xml"}
