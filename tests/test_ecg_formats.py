"""ECG format readers on real records: PhysioNet WFDB (MIT-BIH 100, PTB s0010_re), pydicom's
12-lead DICOM waveform, and aECG written from them; plus every broken input we refuse.

Samples are compared with what the wfdb library and the raw DICOM integers give, exactly: the
readers must be lossless, so a tolerance would hide a wrong gain or baseline.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
import wfdb
from pydicom.data import get_testdata_file

from ecg.formats import (
    MAX_UPLOAD_BYTES,
    UnrecognisedFormatError,
    UnsafeArchiveError,
    UploadTooLargeError,
    decode_upload,
    read_upload,
    unpack_zip,
)
from ecg.formats.aecg import decode_aecg, read_aecg, write_aecg
from ecg.formats.dicom_waveform import (
    decode_dicom_waveform,
    is_ecg_waveform,
    read_dicom_waveform,
)
from ecg.formats.wfdb import decode_wfdb, read_wfdb, read_wfdb_annotations
from ecg.model import ECG, STANDARD_12, ECGError, Lead
from tests.helpers import ECG_DATA

DATA = ECG_DATA
DICOM_ECG = Path(get_testdata_file("waveform_ecg.dcm", download=False))
PTB_FILES = ("s0010_re.hea", "s0010_re.dat", "s0010_re.xyz")
MIT_FILES = ("100.hea", "100.dat")
# wfdb itself trips pandas deprecation warnings on every header it reads; they are not ours.
pytestmark = pytest.mark.filterwarnings("ignore:The inplace keyword")


def files_of(*names: str, folder: Path = DATA) -> dict[str, Path]:
    return {name: folder / name for name in names}


def copy_record(tmp_path: Path, *names: str) -> dict[str, Path]:
    """Writable copies of shared records, to break in a test."""
    out = {}
    for name in names:
        out[name] = Path(shutil.copyfile(DATA / name, tmp_path / name))
        out[name].chmod(0o644)
    return out


def mit_with_header(tmp_path: Path, header: str, dat: bytes | None = None) -> dict[str, Path]:
    """Record 100's signal file (or ``dat``) under a rewritten header."""
    (tmp_path / "100.hea").write_text(header)
    if dat is None:
        shutil.copyfile(DATA / "100.dat", tmp_path / "100.dat")
    else:
        (tmp_path / "100.dat").write_bytes(dat)
    return files_of("100.hea", "100.dat", folder=tmp_path)


def mit_header(record_line: str = "100 2 360 650000", signal_lines: int = 2, **swap: str) -> str:
    lines = [
        record_line,
        "100.dat 212 200 11 1024 995 -22131 0 MLII",
        "100.dat 212 200 11 1024 1011 20052 0 V5",
    ][: 1 + signal_lines]
    text = "\n".join(lines) + "\n"
    for old, new in swap.items():
        text = text.replace(old, new)
    return text


# ----- WFDB: real records ----------------------------------------------------------------------
def test_mit_bih_100_is_wfdb_exactly() -> None:
    decoded = decode_wfdb(files_of(*MIT_FILES, "100.atr"))
    ecg = decoded.ecg
    reference = wfdb.rdrecord(str(DATA / "100"))
    assert ecg.lead_names == ("MLII", "V5")
    assert ecg.sampling_rate == 360.0 and ecg.n_samples == 650_000
    assert ecg.source_format == "wfdb" and ecg.units == "mV"
    assert reference.units == ["mV", "mV"]
    assert np.array_equal(ecg.matrix().T, reference.p_signal)  # bit for bit
    assert ecg.patient.age == "069Y" and ecg.patient.sex == "M"  # MIT-BIH "69 M ..." comment
    assert ecg.acquired_at is None  # the header has no base date


def test_ptb_s0010_re_fifteen_leads_exactly() -> None:
    decoded = decode_wfdb(files_of(*PTB_FILES))
    ecg = decoded.ecg
    physical = wfdb.rdrecord(str(DATA / "s0010_re"))
    digital = wfdb.rdrecord(str(DATA / "s0010_re"), physical=False)
    assert ecg.lead_names == (*STANDARD_12, "X", "Y", "Z")
    assert ecg.is_12_lead and ecg.sampling_rate == 1000.0 and ecg.n_samples == 38_400
    assert np.array_equal(ecg.matrix().T, physical.p_signal)
    # the stored integers and the header's calibration are kept, and reproduce the samples
    assert np.array_equal(np.stack([c.digits for c in decoded.channels], 1), digital.d_signal)
    assert [c.gain for c in decoded.channels] == digital.adc_gain
    assert [c.source_name for c in decoded.channels][-3:] == ["vx", "vy", "vz"]
    for channel, lead in zip(decoded.channels, ecg.leads, strict=True):
        assert np.array_equal(channel.to_mv(), lead.samples)
    assert ecg.patient.sex == "F" and ecg.patient.age == "081Y"


def test_annotations_and_upload_dispatch() -> None:
    annotations = read_wfdb_annotations(files_of(*MIT_FILES, "100.atr"))
    reference = wfdb.rdann(str(DATA / "100"), "atr")
    assert list(annotations) == ["atr"]
    assert np.array_equal(annotations["atr"].sample, reference.sample)
    ecg = read_upload(files_of(*MIT_FILES, "100.atr"))
    assert ecg.lead_names == ("MLII", "V5") and ecg.source_format == "wfdb"


def test_wfdb_units_date_and_missing_length(tmp_path: Path) -> None:
    """uV signals become mV; base date/time is the acquisition time; sig_len may be omitted."""
    header = mit_header("100 2 360 650000 12:30:05 25/01/2013", **{"200 11": "200/uV 11"})
    files = mit_with_header(tmp_path, header)
    ecg = read_wfdb(files)
    reference = wfdb.rdrecord(str(tmp_path / "100"))
    assert reference.units == ["uV", "uV"]
    assert np.array_equal(ecg.matrix().T, reference.p_signal * 1e-3)
    assert ecg.acquired_at == datetime(2013, 1, 25, 12, 30, 5, tzinfo=UTC)

    files = mit_with_header(tmp_path, mit_header("100 2 360"))
    assert read_wfdb(files).n_samples == 650_000


def test_non_voltage_signals_are_skipped(tmp_path: Path) -> None:
    header = mit_header(**{"200 11 1024 1011": "200/mmHg 11 1024 1011"})
    decoded = decode_wfdb(mit_with_header(tmp_path, header))
    assert decoded.ecg.lead_names == ("MLII",) and decoded.skipped == ("V5 (mmHg)",)


# ----- WFDB: broken uploads ----------------------------------------------------------------------
def test_wfdb_without_header() -> None:
    with pytest.raises(ECGError, match=r"needs a \.hea header"):
        read_wfdb(files_of("100.dat"))
    with pytest.raises(ECGError, match=r"needs a \.hea header"):
        read_upload(files_of("100.dat", "100.atr"))


def test_wfdb_several_headers() -> None:
    with pytest.raises(ECGError, match="several headers"):
        read_wfdb(files_of(*MIT_FILES, *PTB_FILES))


def test_wfdb_header_names_missing_file() -> None:
    with pytest.raises(ECGError, match=r"not uploaded: \['s0010_re.xyz'\]"):
        read_wfdb(files_of("s0010_re.hea", "s0010_re.dat"))


def test_wfdb_truncated_signal_file(tmp_path: Path) -> None:
    header = (DATA / "100.hea").read_text()
    files = mit_with_header(tmp_path, header, (DATA / "100.dat").read_bytes()[:-3000])
    with pytest.raises(ECGError, match=r"100.dat is truncated: it has 1947000 bytes .* 1950000"):
        read_wfdb(files)


def test_wfdb_signal_file_longer_than_header(tmp_path: Path) -> None:
    files = copy_record(tmp_path, *PTB_FILES)
    with files["s0010_re.xyz"].open("ab") as handle:
        handle.write(b"\0" * 6)
    with pytest.raises(ECGError, match=r"s0010_re.xyz has 230406 bytes, more than the 230400"):
        read_wfdb(files)


def test_wfdb_unsupported_format_code(tmp_path: Path) -> None:
    files = mit_with_header(
        tmp_path, mit_header(**{"100.dat 212 200 11 1024 995": "100.dat 999 200 11 1024 995"})
    )
    with pytest.raises(ECGError, match=r"signal 1: WFDB signal format 999 is not supported"):
        read_wfdb(files)
    files = mit_with_header(tmp_path, mit_header().replace(" 212 ", " 0 "))
    with pytest.raises(ECGError, match="format 0 is a null signal"):
        read_wfdb(files)


@pytest.mark.parametrize("fmt", ["16", "80", "212", "24", "32", "516"])
@pytest.mark.parametrize("n_samples", [1000, 1001])
def test_wfdb_formats_written_by_wfdb(tmp_path: Path, fmt: str, n_samples: int) -> None:
    """Each format (odd lengths pack a half group in 212), mixed mV/uV units, exactly."""
    source = wfdb.rdrecord(str(DATA / "s0010_re"), physical=False, sampto=n_samples)
    digits = source.d_signal[:, :3] // (256 if fmt == "80" else 1)
    wfdb.wrsamp(
        "rec",
        fs=1000,
        units=["mV", "uV", "mV"],
        sig_name=["i", "ii", "v1"],
        d_signal=digits,
        fmt=[fmt] * 3,
        adc_gain=[2000.0, 2.0, 2000.0],
        baseline=[0, 10, -5],
        write_dir=str(tmp_path),
    )
    files = files_of("rec.hea", "rec.dat", folder=tmp_path)
    decoded = decode_wfdb(files)
    assert np.array_equal(np.stack([c.digits for c in decoded.channels], 1), digits)
    physical = wfdb.rdrecord(str(tmp_path / "rec")).p_signal
    assert np.array_equal(decoded.ecg.matrix().T, physical * [1.0, 1e-3, 1.0])
    assert decoded.ecg.lead_names == ("I", "II", "V1")
    if fmt == "516":  # compressed: the stream, not the byte count, must match the header
        data = files["rec.dat"].read_bytes()
        files["rec.dat"].write_bytes(data[: len(data) // 2])
        with pytest.raises(ECGError, match="(not a readable FLAC|could not read the record)"):
            read_wfdb(files)
        header = files["rec.hea"].read_text()
        files["rec.hea"].write_text(header.replace(f"rec 3 1000 {n_samples}", "rec 3 1000 999"))
        files["rec.dat"].write_bytes(data)
        with pytest.raises(ECGError, match=f"holds {n_samples} samples .* header says 999"):
            read_wfdb(files)


def test_wfdb_zero_samples(tmp_path: Path) -> None:
    files = mit_with_header(tmp_path, mit_header("100 2 360 0"), dat=b"")
    with pytest.raises(ECGError, match="zero samples"):
        read_wfdb(files)


@pytest.mark.parametrize("rate", ["0", "1e7", "10"])
def test_wfdb_absurd_sampling_rate(tmp_path: Path, rate: str) -> None:
    files = mit_with_header(tmp_path, mit_header(f"100 2 {rate} 650000"))
    expected = re.escape(f"sampling rate {float(rate):g} Hz is outside the 50-20000 Hz")
    with pytest.raises(ECGError, match=expected):
        read_wfdb(files)


def test_wfdb_lead_count_mismatch(tmp_path: Path) -> None:
    files = mit_with_header(tmp_path, mit_header("100 3 360 650000"))
    with pytest.raises(ECGError, match="declares 3 signals but lists 2 signal lines"):
        read_wfdb(files)
    files = mit_with_header(tmp_path, mit_header("100 2 360 650000", signal_lines=1))
    with pytest.raises(ECGError, match="declares 2 signals but lists 1 signal lines"):
        read_wfdb(files)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("this is not a header\n", "does not parse: bad record line"),
        ("# only comments\n", "does not parse: it has no record line"),
        ("100/2 2 360 650000\n", "multi-segment"),
        ("100 2\n100.dat 212 200\n100.dat 212 200\n", "does not state the sampling frequency"),
        (mit_header(**{"212 200 11 1024 995": "212 0 11 1024 995"}), "uncalibrated"),
        (mit_header(**{"212 200 11 1024 995": "212 abc 11 1024 995"}), "gain field 'abc'"),
        (mit_header(**{"100.dat 212 200 11 1024 995": "../100.dat 212 200 11 1024 995"}), "plain"),
        (mit_header(**{"212 200 11 1024 995": "212x2 200 11 1024 995"}), "samples per frame"),
    ],
)
def test_wfdb_header_does_not_parse(tmp_path: Path, header: str, message: str) -> None:
    with pytest.raises(ECGError, match=message):
        read_wfdb(mit_with_header(tmp_path, header))


# ----- DICOM waveform ----------------------------------------------------------------------------
def raw_rhythm(ds: pydicom.Dataset) -> np.ndarray:
    """The rhythm group's stored integers, straight from the bytes: (samples, channels)."""
    group = ds.WaveformSequence[0]
    data = np.frombuffer(group.WaveformData, dtype="<i2")
    return data.reshape(group.NumberOfWaveformSamples, group.NumberOfWaveformChannels)


def test_dicom_12_lead_waveform() -> None:
    ds = pydicom.dcmread(DICOM_ECG)
    assert is_ecg_waveform(ds)
    decoded = decode_dicom_waveform(DICOM_ECG)
    ecg = decoded.ecg
    assert ecg.lead_names == STANDARD_12
    assert ecg.sampling_rate == 1000.0 and ecg.n_samples == 10_000
    assert decoded.details["multiplex_group_label"] == "RHYTHM"  # not the median beat
    channel = ds.WaveformSequence[0].ChannelDefinitionSequence[0]
    assert channel.ChannelSensitivityUnitsSequence[0].CodeValue == "uV"
    sensitivity = float(channel.ChannelSensitivity) * float(
        channel.ChannelSensitivityCorrectionFactor
    )
    assert sensitivity == 1.25
    assert np.array_equal(ecg.matrix().T, raw_rhythm(ds) * 1.25 * 1e-3)
    assert np.array_equal(ecg.matrix().T, ds.waveform_array(0) * 1e-3)  # pydicom agrees
    assert ecg.source_format == "dicom-waveform"
    assert ecg.acquired_at == datetime(2013, 1, 25, 10, 59, 19, tzinfo=UTC)
    patient = ecg.patient
    assert (patient.patient_id, patient.sex, patient.birth_date) == ("642341", "F", "19710123")
    assert read_dicom_waveform(ds).lead_names == STANDARD_12  # a dataset works as well
    assert read_upload({"ecg.dcm": DICOM_ECG}).lead_names == STANDARD_12


def test_dicom_8_bit_units_baseline_and_correction() -> None:
    ds = pydicom.dcmread(DICOM_ECG)
    raw8 = (raw_rhythm(ds) // 16).astype(np.int8)
    group = ds.WaveformSequence[0]
    group.WaveformBitsAllocated = 8
    group.WaveformSampleInterpretation = "SB"
    group.WaveformData = raw8.tobytes()
    lead_ii = group.ChannelDefinitionSequence[1]
    lead_ii.ChannelSensitivityCorrectionFactor = "2"
    lead_ii.ChannelBaseline = "5"
    lead_iii = group.ChannelDefinitionSequence[2]
    lead_iii.ChannelSensitivity = "0.02"
    lead_iii.ChannelSensitivityUnitsSequence[0].CodeValue = "mV"
    ecg = read_dicom_waveform(ds)
    digits = raw8.astype(np.int64)
    assert np.array_equal(ecg.leads[0].samples, digits[:, 0] * 1.25 * 1e-3)
    assert np.array_equal(ecg.leads[1].samples, (digits[:, 1] * 2.5 + 5.0) * 1e-3)
    assert np.array_equal(ecg.leads[2].samples, digits[:, 2] * 0.02)


def test_dicom_general_and_ambulatory_classes_and_lead_codes() -> None:
    ds = pydicom.dcmread(DICOM_ECG)
    channels = ds.WaveformSequence[0].ChannelDefinitionSequence
    channels[0].ChannelSourceSequence[0].CodingSchemeDesignator = "MDC"
    channels[0].ChannelSourceSequence[0].CodeValue = "2:1"
    channels[0].ChannelSourceSequence[0].CodeMeaning = "anything"
    channels[6].ChannelSourceSequence[0].CodingSchemeDesignator = "LOCAL"
    channels[6].ChannelSourceSequence[0].CodeValue = "x"  # falls back on "Lead V1"
    channels[11].ChannelSourceSequence[0].CodingSchemeDesignator = "LOCAL"
    channels[11].ChannelSourceSequence[0].CodeMeaning = "Respiration"
    for uid in ("1.2.840.10008.5.1.4.1.1.9.1.2", "1.2.840.10008.5.1.4.1.1.9.1.3"):
        ds.SOPClassUID = uid
        assert is_ecg_waveform(ds)
        decoded = decode_dicom_waveform(ds)
        assert decoded.ecg.lead_names == STANDARD_12[:11]
        assert decoded.skipped == ("Respiration",)
    for channel in channels:
        channel.ChannelSourceSequence[0].CodingSchemeDesignator = "LOCAL"
        channel.ChannelSourceSequence[0].CodeMeaning = "Respiration"
    for channel in ds.WaveformSequence[1].ChannelDefinitionSequence:
        channel.ChannelSourceSequence[0].CodingSchemeDesignator = "LOCAL"
        channel.ChannelSourceSequence[0].CodeMeaning = "Pressure"
    with pytest.raises(ECGError, match="no multiplex group holds ECG leads"):
        read_dicom_waveform(ds)


def test_dicom_that_is_not_an_ecg(tmp_path: Path) -> None:
    ct = Path(get_testdata_file("CT_small.dcm", download=False))
    assert not is_ecg_waveform(pydicom.dcmread(ct))
    with pytest.raises(ECGError, match=r"not an ECG waveform: SOP class is CT Image Storage"):
        read_dicom_waveform(ct)
    with pytest.raises(ECGError, match="not an ECG waveform"):
        read_upload({"ct.dcm": ct})
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    with pytest.raises(ECGError, match="not a DICOM file"):
        read_dicom_waveform(junk)


def test_dicom_truncated_waveform_data() -> None:
    ds = pydicom.dcmread(DICOM_ECG)
    ds.WaveformSequence[0].WaveformData = ds.WaveformSequence[0].WaveformData[:-100]
    with pytest.raises(ECGError, match=r"Waveform Data has 239900 bytes but .* need 240000"):
        read_dicom_waveform(ds)


# ----- HL7 aECG ----------------------------------------------------------------------------------
def test_aecg_round_trip_from_ptb_is_lossless(tmp_path: Path) -> None:
    source = decode_wfdb(files_of(*PTB_FILES))
    path = tmp_path / "s0010_re.xml"
    write_aecg(source.ecg, path)
    decoded = decode_aecg(path)
    ecg = decoded.ecg
    assert ecg.lead_names == source.ecg.lead_names and ecg.sampling_rate == 1000.0
    assert ecg.source_format == "hl7-aecg" and ecg.patient.sex == "F"
    for written, read in zip(source.channels, decoded.channels, strict=True):
        assert read.scale == 0.5 and read.unit == "uV"  # 1 / (2000 adu/mV), in uV
        assert np.array_equal(read.digits, written.digits - written.baseline)
    np.testing.assert_allclose(ecg.matrix(), source.ecg.matrix(), rtol=0, atol=1e-12)
    assert read_upload({"s0010_re.xml": path}).lead_names == source.ecg.lead_names


def test_aecg_round_trip_from_dicom_keeps_time_and_patient(tmp_path: Path) -> None:
    source = decode_dicom_waveform(DICOM_ECG)
    path = tmp_path / "ecg.xml"
    write_aecg(source.ecg, path, resolution_uv=1.25)
    decoded = decode_aecg(path)
    for written, read in zip(source.channels, decoded.channels, strict=True):
        assert np.array_equal(read.digits, written.digits)
    assert np.array_equal(decoded.ecg.matrix(), source.ecg.matrix())
    assert decoded.ecg.acquired_at == source.ecg.acquired_at
    assert decoded.ecg.patient.patient_id == "642341"
    assert decoded.ecg.patient.birth_date == "19710123"


def test_aecg_keeps_a_rate_like_360_hz(tmp_path: Path) -> None:
    ecg = read_wfdb(files_of(*MIT_FILES))
    small = ECG(tuple(Lead(lead.name, lead.samples[:3600]) for lead in ecg.leads), 360.0)
    write_aecg(small, tmp_path / "mit.xml")
    back = read_aecg(tmp_path / "mit.xml")
    assert back.sampling_rate == 360.0
    assert np.allclose(back.matrix(), small.matrix(), rtol=0, atol=1e-12)


@pytest.fixture
def small_aecg(tmp_path: Path) -> str:
    leads = (Lead("I", np.array([0.0, 0.005, -0.01])), Lead("II", np.array([0.01, 0.0, 0.005])))
    write_aecg(ECG(leads, 500.0), tmp_path / "small.xml", resolution_uv=1.0)
    return (tmp_path / "small.xml").read_text()


def aecg_error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "broken.xml"
    path.write_text(text)
    with pytest.raises(ECGError) as caught:
        read_aecg(path)
    return str(caught.value)


def test_aecg_writer_refuses_what_it_cannot_store(tmp_path: Path) -> None:
    noise = ECG((Lead("I", np.random.default_rng(1).normal(size=100)),), 500.0)
    with pytest.raises(ECGError, match="not whole numbers of one step"):
        write_aecg(noise, tmp_path / "noise.xml")
    gap = ECG((Lead("I", np.array([0.0, np.nan, 0.005])),), 500.0)
    with pytest.raises(ECGError, match=r"missing \(NaN\) samples"):
        write_aecg(gap, tmp_path / "gap.xml")


def test_aecg_small_file_reads(tmp_path: Path, small_aecg: str) -> None:
    path = tmp_path / "ok.xml"
    path.write_text(small_aecg)
    ecg = read_aecg(path)
    assert ecg.lead_names == ("I", "II") and ecg.sampling_rate == 500.0
    assert np.allclose(ecg.leads[0].samples, [0.0, 0.005, -0.01], rtol=0, atol=1e-15)


def test_aecg_broken_inputs(tmp_path: Path, small_aecg: str) -> None:
    assert "not an HL7 aECG <AnnotatedECG>" in aecg_error(tmp_path, "<catalog><book/></catalog>")
    no_ns = small_aecg.replace('xmlns="urn:hl7-org:v3"', "")
    assert "not an HL7 aECG" in aecg_error(tmp_path, no_ns)
    assert "not well-formed XML" in aecg_error(tmp_path, small_aecg[:-40])
    no_increment = small_aecg.replace('<increment value="0.002" unit="s" />', "")
    assert "no <increment>" in aecg_error(tmp_path, no_increment)
    short = small_aecg.replace("<digits>10 0 5</digits>", "<digits>10 0</digits>")
    assert "lead II has 2 samples but lead I has 3" in aecg_error(tmp_path, short)
    bad = small_aecg.replace("<digits>10 0 5</digits>", "<digits>10 x 5</digits>")
    assert "lead II: digit 2 ('x') is not an integer" in aecg_error(tmp_path, bad)
    empty = small_aecg.replace("<digits>10 0 5</digits>", "<digits> </digits>")
    assert "lead II has no digits" in aecg_error(tmp_path, empty)
    no_unit = small_aecg.replace('<scale value="1.0" unit="uV" />', '<scale value="1.0" />', 1)
    assert "lead I scale has no unit" in aecg_error(tmp_path, no_unit)
    no_scale = small_aecg.replace('<scale value="1.0" unit="uV" />', "", 1)
    assert "lead I scale is missing" in aecg_error(tmp_path, no_scale)
    volts = small_aecg.replace('<scale value="1.0" unit="uV" />', '<scale value="1" unit="mmHg" />')
    assert "unit 'mmHg' is not a voltage" in aecg_error(tmp_path, volts)
    bomb = (
        '<?xml version="1.0"?><!DOCTYPE AnnotatedECG [<!ENTITY a "aaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;">]><AnnotatedECG xmlns="urn:hl7-org:v3">&b;</AnnotatedECG>'
    )
    message = aecg_error(tmp_path, bomb)  # defusedxml, or the stdlib fallback
    assert "refused unsafe XML" in message or "entity declarations" in message


# ----- upload detection and zips -----------------------------------------------------------------
def test_unrecognised_and_vendor_formats(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(
        UnrecognisedFormatError, match=r"unrecognised ECG format .*accepted: .*WFDB"
    ):
        read_upload({"notes.txt": text})
    philips = tmp_path / "philips.xml"
    philips.write_text('<?xml version="1.0"?>\n<restingecgdata><documentinfo/></restingecgdata>')
    with pytest.raises(ECGError, match="Philips XML: required element <documentinfo>"):
        read_upload({"philips.xml": philips})
    muse = tmp_path / "muse.xml"
    muse.write_text('<?xml version="1.0"?>\n<RestingECG><Waveform/></RestingECG>')
    with pytest.raises(ECGError, match="GE MUSE XML has no Rhythm waveform"):
        read_upload({"muse.xml": muse})
    with pytest.raises(ECGError, match="one ECG at a time"):
        read_upload({"a.dcm": DICOM_ECG, "b.dcm": DICOM_ECG})


def test_upload_over_the_size_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.dat"
    with big.open("wb") as handle:
        handle.truncate(MAX_UPLOAD_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(UploadTooLargeError, match="more than the 50 MB allowed"):
        read_upload({"100.hea": DATA / "100.hea", "big.dat": big})


def test_zip_of_a_wfdb_record(tmp_path: Path) -> None:
    archive = tmp_path / "record.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in PTB_FILES:
            zf.write(DATA / name, f"export/{name}")
        zf.writestr("__MACOSX/export/._s0010_re.hea", b"junk")
    unpacked = unpack_zip(archive, tmp_path / "out")
    assert sorted(unpacked) == sorted(PTB_FILES)
    decoded = decode_upload({"record.zip": archive})
    assert decoded.ecg.lead_names == (*STANDARD_12, "X", "Y", "Z")
    assert np.array_equal(decoded.ecg.matrix(), read_wfdb(files_of(*PTB_FILES)).matrix())


@pytest.mark.parametrize("evil", ["../evil.hea", "/etc/evil.hea", "a/../../evil.hea", "C:/evil"])
def test_zip_escaping_its_folder(tmp_path: Path, evil: str) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        zf.writestr(zipfile.ZipInfo(evil), b"100 2 360 10\n")
    with pytest.raises(UnsafeArchiveError, match="points outside the archive folder"):
        unpack_zip(archive, tmp_path / "out")
    with pytest.raises(UnsafeArchiveError):
        read_upload({"evil.zip": archive})
    assert not (tmp_path / "evil.hea").exists()


def test_zip_bomb_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.zip"
    chunk = b"\0" * (1 << 20)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("100.dat", "w", force_zip64=True) as entry:
            for _ in range(MAX_UPLOAD_BYTES // len(chunk) + 1):
                entry.write(chunk)
        zf.write(DATA / "100.hea", "100.hea")
    assert archive.stat().st_size < 1 << 20  # small upload, huge content
    with pytest.raises(UploadTooLargeError, match=r"unpacks to \d+ bytes, more than the 52428800"):
        read_upload({"bomb.zip": archive})


def test_zip_limits_links_and_nesting(tmp_path: Path) -> None:
    many = tmp_path / "many.zip"
    with zipfile.ZipFile(many, "w") as zf:
        for number in range(5):
            zf.writestr(f"f{number}.txt", b"x")
    with pytest.raises(UnsafeArchiveError, match="holds 5 files; at most 4"):
        unpack_zip(many, tmp_path / "a", max_files=4)
    with pytest.raises(UploadTooLargeError, match="unpacks to 5 bytes, more than the 4"):
        unpack_zip(many, tmp_path / "b", max_total_bytes=4)

    link = tmp_path / "link.zip"
    info = zipfile.ZipInfo("100.dat")
    info.external_attr = (0o120777 << 16) | 0
    with zipfile.ZipFile(link, "w") as zf:
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        unpack_zip(link, tmp_path / "c")

    nested = tmp_path / "nested.zip"
    with zipfile.ZipFile(nested, "w") as zf:
        zf.write(many, "inner.zip")
    with pytest.raises(UnsafeArchiveError, match="holds another archive"):
        read_upload({"nested.zip": nested})

    not_zip = tmp_path / "fake.zip"
    not_zip.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(ECGError, match="not a readable zip archive"):
        read_upload({"fake.zip": not_zip})


def test_decoded_channels_reproduce_every_reader(tmp_path: Path) -> None:
    """The kept integers and calibration give the ECG's samples exactly, for every format."""
    write_aecg(read_dicom_waveform(DICOM_ECG), tmp_path / "x.xml")
    for decoded in (
        decode_upload(files_of(*MIT_FILES)),
        decode_upload({"x.dcm": DICOM_ECG}),
        decode_upload({"x.xml": tmp_path / "x.xml"}),
    ):
        for channel, lead in zip(decoded.channels, decoded.ecg.leads, strict=True):
            assert channel.lead == lead.name
            assert channel.digits.dtype == np.int64
            assert np.array_equal(channel.to_mv(), lead.samples)


def test_wfdb_header_with_bom_and_upper_case_name(tmp_path: Path) -> None:
    """Windows tools write a BOM and upper-case extensions; the record still reads exactly."""
    (tmp_path / "REC.HEA").write_bytes(b"\xef\xbb\xbf" + (DATA / "100.hea").read_bytes())
    files = {"REC.HEA": tmp_path / "REC.HEA", "100.dat": DATA / "100.dat"}
    reference = wfdb.rdrecord(str(DATA / "100"))
    assert np.array_equal(read_upload(files).matrix().T, reference.p_signal)


def test_stdlib_xml_fallback_refuses_entities(tmp_path: Path) -> None:
    """Without defusedxml the stdlib parser is used, refusing DTDs the same way."""
    from ecg.formats import _xml

    write_aecg(read_dicom_waveform(DICOM_ECG), tmp_path / "x.xml")
    data = (tmp_path / "x.xml").read_bytes()
    fallback = _xml._stdlib_fromstring(data)
    assert fallback.tag == "{urn:hl7-org:v3}AnnotatedECG"
    assert [e.tag for e in fallback.iter()] == [e.tag for e in _xml.parse_xml(data, "x").iter()]
    assert [e.attrib for e in fallback.iter()] == [
        e.attrib for e in _xml.parse_xml(data, "x").iter()
    ]
    with pytest.raises(_xml._Refused):
        _xml._stdlib_fromstring(b'<!DOCTYPE a [<!ENTITY b "c">]><a>&b;</a>')
    with pytest.raises(_xml._Refused):
        _xml._stdlib_fromstring(b'<!DOCTYPE a SYSTEM "http://example.invalid/x.dtd"><a/>')


def test_is_ecg_waveform_from_a_header_only_read() -> None:
    header = pydicom.dcmread(DICOM_ECG, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    assert is_ecg_waveform(header)
