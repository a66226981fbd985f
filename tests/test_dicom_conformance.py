"""Storage SCP conformance with a sender we did not write (DCMTK ``storescu``), and bad input.

Every storage SOP class and transfer syntax pydicom bundles a file for is sent to a real hub;
the index and the object store must hold it exactly as received: the same transfer syntax and
the same data set bytes. Bad input (truncated or malformed data sets, SOP classes that disagree
with the request, associations that end half-way) must get a failure status or leave nothing
behind, and the hub must keep serving.
"""

from __future__ import annotations

import io
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import (
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalXRayImageStorageForPresentation,
    EncapsulatedPDFStorage,
    EnhancedSRStorage,
    MRImageStorage,
    NuclearMedicineImageStorage,
    PositronEmissionTomographyImageStorage,
    Verification,
    XRayAngiographicImageStorage,
)
from sqlalchemy import select

from dicom.send import send_paths
from telehub.db import Database
from telehub.db.models import Instance
from tests.helpers import (
    DCMTK_ENV,
    Hub,
    dataset_bytes,
    dcmtk_tool,
    dicom_file,
    free_port,
    wait_port,
)

_config.STORE_SEND_CHUNKED_DATASET = True  # our raw sends stream the file's bytes as they are


# ----- helpers -------------------------------------------------------------------------------
def hub_db(hub: Hub) -> Database:
    return Database(f"sqlite:///{hub.data.resolve() / 'telehub.sqlite3'}")


def stored_instance(hub: Hub, sop_uid: str) -> tuple[Instance | None, bytes | None]:
    """The index row of an instance and the bytes of its stored object (None when absent)."""
    db = hub_db(hub)
    try:
        with db.reader() as session:
            row = session.scalar(select(Instance).where(Instance.sop_uid == sop_uid))
            if row is not None:
                session.expunge(row)
    finally:
        db.dispose()
    if row is None:
        return None, None
    path = hub.data / "objects" / row.object_key
    return row, path.read_bytes() if path.is_file() else None


def objects_named(hub: Hub, sop_uid: str) -> list[Path]:
    return list((hub.data / "objects").rglob(f"*{sop_uid}*"))


def copy_with_new_uids(source: Path, folder: Path, **changes: Any) -> Path:
    """A test file with new Study/Series/SOP Instance UIDs, re-saved by pydicom in its own
    transfer syntax (encapsulated pixel data is copied as it is); the file meta follows
    SOP class changes so every sender sees the same identity."""
    ds = pydicom.dcmread(source)
    ts = ds.file_meta.TransferSyntaxUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == ts
    return path


def encapsulated_pdf(folder: Path) -> Path:
    """An Encapsulated PDF instance (pydicom bundles none): a one-page PDF in a DICOM wrapper."""
    pdf = (
        b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
        b"2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
        b"3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 200 200]>>endobj\n"
        b"trailer<</Root 1 0 R>>\n%%EOF\n"
    )
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = EncapsulatedPDFStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "DOC"
    ds.PatientName, ds.PatientID = "Test^Pdf", "PDF-1"
    ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20240101", "120000", ""
    ds.ConversionType = "WSD"
    ds.SeriesNumber = ds.InstanceNumber = 1
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = "referral letter"
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(pdf)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@dataclass(frozen=True)
class Case:
    """One conformance case: a bundled file (or a made one), optionally relabelled."""

    source: str
    expect_ts: UID
    changes: tuple[tuple[str, Any], ...] = ()

    def make(self, folder: Path) -> Path:
        if self.source == "<pdf>":
            return encapsulated_pdf(folder)
        return copy_with_new_uids(dicom_file(self.source), folder, **dict(self.changes))


def _relabel(sop_class: UID, modality: str) -> tuple[tuple[str, Any], ...]:
    """CT_small relabelled to a SOP class pydicom bundles no file of: the SCP negotiates and
    stores by SOP class and does not validate the IOD, so this exercises acceptance of it."""
    return (("SOPClassUID", sop_class), ("Modality", modality))


CASES: dict[str, Case] = {
    # uncompressed syntaxes
    "ct-explicit-le": Case("CT_small.dcm", ExplicitVRLittleEndian),
    "mr-implicit-le": Case("MR_small_implicit.dcm", ImplicitVRLittleEndian),
    "mr-explicit-be": Case("MR_small_bigendian.dcm", ExplicitVRBigEndian),
    "us-explicit-be": Case("ExplVR_BigEnd.dcm", ExplicitVRBigEndian),
    "sc-deflated": Case("image_dfl.dcm", DeflatedExplicitVRLittleEndian),
    "cr": Case("dicomdirtests/77654033/CR1/6154", ExplicitVRLittleEndian),
    "us-palette": Case("examples_palette.dcm", ExplicitVRLittleEndian),
    "seg": Case("liver_1frame.dcm", ExplicitVRLittleEndian),
    "rtdose-multiframe": Case("rtdose.dcm", ImplicitVRLittleEndian),
    "rtplan": Case("rtplan.dcm", ImplicitVRLittleEndian),
    # compressed syntaxes
    "sc-jpeg-baseline": Case("SC_rgb_jpeg_dcmtk.dcm", JPEGBaseline8Bit),
    "us-multiframe-jpeg-baseline": Case("examples_ybr_color.dcm", JPEGBaseline8Bit),
    "nm-jpeg-extended": Case("JPGExtended.dcm", JPEGExtended12Bit),
    "sc-jpeg-lossless-sv1": Case("SC_rgb_jpeg_gdcm.dcm", JPEGLosslessSV1),
    "mr-jpeg-ls-lossless": Case("MR_small_jpeg_ls_lossless.dcm", JPEGLSLossless),
    "sc-jpeg-ls-near-lossless": Case("JPEGLSNearLossless_08.dcm", JPEGLSNearLossless),
    "mr-j2k-lossless": Case("MR_small_jp2klossless.dcm", JPEG2000Lossless),
    "us-j2k-lossless": Case("examples_jpeg2k.dcm", JPEG2000Lossless),
    "ct-j2k": Case("693_J2KI.dcm", JPEG2000),
    "mr-rle": Case("MR_small_RLE.dcm", RLELossless),
    "sc-rle-multiframe": Case("SC_rgb_rle_2frame.dcm", RLELossless),
    # structured reports, waveforms, documents
    "sr-basic-text": Case("reportsi.dcm", ExplicitVRLittleEndian),
    "sr-comprehensive": Case("test-SR.dcm", ExplicitVRLittleEndian),
    "sr-enhanced": Case(
        "reportsi.dcm", ExplicitVRLittleEndian, (("SOPClassUID", EnhancedSRStorage),)
    ),
    "ecg-12-lead": Case("waveform_ecg.dcm", ExplicitVRLittleEndian),
    "encapsulated-pdf": Case("<pdf>", ExplicitVRLittleEndian),
    # SOP classes without a bundled file (CT_small relabelled)
    "dx": Case(
        "CT_small.dcm",
        ExplicitVRLittleEndian,
        _relabel(DigitalXRayImageStorageForPresentation, "DX"),
    ),
    "mg": Case(
        "CT_small.dcm",
        ExplicitVRLittleEndian,
        _relabel(DigitalMammographyXRayImageStorageForPresentation, "MG"),
    ),
    "xa": Case(
        "CT_small.dcm", ExplicitVRLittleEndian, _relabel(XRayAngiographicImageStorage, "XA")
    ),
    "nm": Case("CT_small.dcm", ExplicitVRLittleEndian, _relabel(NuclearMedicineImageStorage, "NM")),
    "pet": Case(
        "CT_small.dcm",
        ExplicitVRLittleEndian,
        _relabel(PositronEmissionTomographyImageStorage, "PT"),
    ),
}

#: storescu's option that proposes a given transfer syntax first, in a context of its own.
PROPOSE = {
    ExplicitVRLittleEndian: "-xe",
    ImplicitVRLittleEndian: "-xi",
    ExplicitVRBigEndian: "-xb",
    DeflatedExplicitVRLittleEndian: "-xd",
    JPEGBaseline8Bit: "-xy",
    JPEGExtended12Bit: "-xx",
    JPEGLosslessSV1: "-xs",
    JPEGLSLossless: "-xt",
    JPEGLSNearLossless: "-xu",
    JPEG2000Lossless: "-xv",
    JPEG2000: "-xw",
    RLELossless: "-xr",
}


def storescu(
    port: int, path: Path, ts: UID, aet: str = "CLINIC1", called: str = "TELEHUB"
) -> subprocess.CompletedProcess:
    """DCMTK storescu proposing only the file's own SOP class, its syntax first (``-R``)."""
    return subprocess.run(
        [dcmtk_tool("storescu"), "-v", "-R", PROPOSE[ts], "-aet", aet, "-aec", called]
        + ["127.0.0.1", str(port), str(path)],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def wire_recorder(
    dcmtk: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, int]]:
    """DCMTK's storescp in bit-preserving mode: it writes each data set exactly as it came
    over the wire, which is what "stored as received" compares against (storescu re-encodes
    files as it sends them: it drops trailing padding, empties all-space values ...)."""
    folder = tmp_path_factory.mktemp("wire")
    port = free_port()
    proc = subprocess.Popen(
        [dcmtk_tool("storescp"), "+B", "+xa", "-pm", "-aet", "RECORDER", "-od", str(folder)]
        + [str(port)],
        env=DCMTK_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        yield folder, port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ----- every SOP class and transfer syntax, stored as received -------------------------------
@pytest.mark.parametrize("name", list(CASES))
def test_storescu_instance_is_stored_as_received(
    embedded_hub: Hub, wire_recorder: tuple[Path, int], tmp_path: Path, name: str
) -> None:
    case = CASES[name]
    path = case.make(tmp_path)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == case.expect_ts

    for port, called in ((embedded_hub.dicom_port, "TELEHUB"), (wire_recorder[1], "RECORDER")):
        run = storescu(port, path, case.expect_ts, called=called)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "Received Store Response (Success)" in run.stdout + run.stderr
    (recorded,) = wire_recorder[0].glob(f"*{ds.SOPInstanceUID}*")
    sent = recorded.read_bytes()

    row, stored = stored_instance(embedded_hub, ds.SOPInstanceUID)
    assert row is not None, f"{name}: not indexed"
    assert row.sop_class_uid == ds.SOPClassUID
    assert row.transfer_syntax_uid == case.expect_ts, (
        f"{name}: SCP accepted {UID(row.transfer_syntax_uid).name}, "
        f"sender preferred {case.expect_ts.name}"
    )
    assert stored is not None, f"{name}: indexed but no object"
    assert pydicom.dcmread(io.BytesIO(stored)).file_meta.TransferSyntaxUID == case.expect_ts
    assert dataset_bytes(stored) == dataset_bytes(sent), f"{name}: stored bytes differ"


def test_our_scu_sends_every_case_and_the_hub_keeps_the_files_bytes(
    embedded_hub: Hub, tmp_path: Path
) -> None:
    """Our SCU streams files as they are on disk, so here the file itself is the reference."""
    paths = {name: case.make(tmp_path / name) for name, case in CASES.items()}
    result = send_paths(list(paths.values()), "127.0.0.1", embedded_hub.dicom_port, "CLINIC1")
    assert result.refused == [] and result.sent == len(paths)
    for name, path in paths.items():
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        row, stored = stored_instance(embedded_hub, ds.SOPInstanceUID)
        assert row is not None and stored is not None, name
        assert row.transfer_syntax_uid == CASES[name].expect_ts, name
        assert dataset_bytes(stored) == dataset_bytes(path.read_bytes()), name


# ----- bad input over DIMSE ------------------------------------------------------------------
def associate(hub: Hub, pairs: list[tuple[UID, UID]], aet: str = "CLINIC1") -> Association:
    ae = AE(aet)
    ae.add_requested_context(Verification)
    for sop_class, ts in pairs:
        ae.add_requested_context(sop_class, ts)
    assoc = ae.associate("127.0.0.1", hub.dicom_port, ae_title="TELEHUB")
    assert assoc.is_established
    return assoc


def store_request(sop_class: UID, sop_uid: str, data: bytes) -> C_STORE:
    """A C-STORE request whose data set is ``data`` byte for byte, however broken it is."""
    request = C_STORE()
    request.MessageID = 1
    request.AffectedSOPClassUID = sop_class
    request.AffectedSOPInstanceUID = sop_uid
    request.Priority = 2
    request.DataSet = io.BytesIO(data)
    return request


def context_id(assoc: Association, sop_class: UID, ts: UID) -> int:
    return next(
        cx.context_id
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == sop_class and cx.transfer_syntax[0] == ts
    )


def part10(data: bytes, ts: UID, sop_class: UID, sop_uid: str, folder: Path) -> Path:
    """A Part 10 file whose data set is ``data`` byte for byte, however broken it is: pynetdicom
    streams what follows the file meta as the C-STORE data set, and takes the request's
    Affected SOP Class and Instance UIDs from the file meta."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ts
    buffer = io.BytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"raw-{generate_uid()}.dcm"
    path.write_bytes(buffer.getvalue() + data)
    return path


def raw_store(hub: Hub, folder: Path, data: bytes, ts: UID, sop_class: UID, sop_uid: str) -> int:
    """C-STORE ``data`` as the data set, requested as ``sop_class``/``sop_uid``; the status."""
    assoc = associate(hub, [(sop_class, ts)])
    try:
        status = assoc.send_c_store(part10(data, ts, sop_class, sop_uid, folder))
        assert "Status" in status, "no C-STORE response"
        return int(status.Status)
    finally:
        assoc.release()


def same_length_uid(uid: str) -> str:
    """A new UID as long as ``uid``, to swap into a file's bytes without changing lengths."""
    digits = str(int.from_bytes(generate_uid().encode()[-16:], "big"))
    new = ("2.25." + "9" + digits * 4)[: len(uid)]
    assert len(new) == len(uid) and new[-1] != "."
    return new


def assert_nothing_kept(hub: Hub, sop_uid: str) -> None:
    row, _ = stored_instance(hub, sop_uid)
    assert row is None, f"{sop_uid} was indexed"
    assert objects_named(hub, sop_uid) == [], f"{sop_uid} left an object behind"


def assert_hub_serves(hub: Hub) -> None:
    assoc = associate(hub, [])
    try:
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()


@pytest.mark.parametrize("name", ["rtplan_truncated.dcm", "MR_truncated.dcm"])
def test_pydicoms_truncated_files_are_refused(embedded_hub: Hub, tmp_path: Path, name: str) -> None:
    raw = dicom_file(name).read_bytes()
    ds = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
    old = ds.SOPInstanceUID
    new = same_length_uid(old)
    data = dataset_bytes(raw).replace(old.encode(), new.encode())
    ts = ds.file_meta.TransferSyntaxUID
    assert raw_store(embedded_hub, tmp_path, data, ts, ds.SOPClassUID, new) == 0xC000
    assert_nothing_kept(embedded_hub, new)


def _ct(tmp_path: Path) -> tuple[bytes, Dataset]:
    path = copy_with_new_uids(dicom_file("CT_small.dcm"), tmp_path)
    return dataset_bytes(path.read_bytes()), pydicom.dcmread(path, stop_before_pixels=True)


@pytest.mark.parametrize(
    "damage",
    ["empty", "garbage", "cut-inside-header", "explicit-bytes-on-implicit-context"],
)
def test_damaged_data_set_gets_cannot_understand(
    embedded_hub: Hub, tmp_path: Path, damage: str
) -> None:
    data, ds = _ct(tmp_path)
    ts = ExplicitVRLittleEndian
    if damage == "empty":
        data = b""
    elif damage == "garbage":
        data = bytes(range(256)) * 40
    elif damage == "cut-inside-header":
        data = data[:300] + data[300:304]  # a few bytes of the next element's header
        data = data[: data.find(b"\x08\x00\x20\x00") + 3]  # (0008,0020) Study Date, cut
    else:
        ts = ImplicitVRLittleEndian
    status = raw_store(embedded_hub, tmp_path, data, ts, ds.SOPClassUID, ds.SOPInstanceUID)
    assert status == 0xC000
    assert_nothing_kept(embedded_hub, ds.SOPInstanceUID)


def test_sop_class_differing_from_the_request_gets_a900(embedded_hub: Hub, tmp_path: Path) -> None:
    data, ds = _ct(tmp_path)
    ts = ExplicitVRLittleEndian
    status = raw_store(embedded_hub, tmp_path, data, ts, MRImageStorage, ds.SOPInstanceUID)
    assert status == 0xA900
    assert_nothing_kept(embedded_hub, ds.SOPInstanceUID)


def test_sop_instance_differing_from_the_request_is_refused(
    embedded_hub: Hub, tmp_path: Path
) -> None:
    data, ds = _ct(tmp_path)
    other = generate_uid()
    status = raw_store(embedded_hub, tmp_path, data, ExplicitVRLittleEndian, ds.SOPClassUID, other)
    assert status == 0xC000
    assert_nothing_kept(embedded_hub, ds.SOPInstanceUID)
    assert_nothing_kept(embedded_hub, other)


def _half_sent_store(assoc: Association, data: bytes, ds: Dataset) -> bytes:
    """The encoded PDUs of a C-STORE, of which the caller sends only a part."""
    message = C_STORE_RQ()
    message.primitive_to_message(store_request(ds.SOPClassUID, ds.SOPInstanceUID, data))
    cx = context_id(assoc, ds.SOPClassUID, ExplicitVRLittleEndian)
    encoded = b""
    for primitive in message.encode_msg(cx, 4096):
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        encoded += pdu.encode()
    return encoded


@pytest.mark.parametrize("how", ["a-abort", "socket-closed-inside-pdu"])
def test_association_ending_mid_data_set_keeps_what_was_acknowledged_only(
    embedded_hub: Hub, tmp_path: Path, how: str
) -> None:
    first_data, first = _ct(tmp_path / "first")
    data, ds = _ct(tmp_path / "second")
    assoc = associate(embedded_hub, [(CTImageStorage, ExplicitVRLittleEndian)])
    status = assoc.send_c_store(pydicom.dcmread(tmp_path / "first" / f"{first.SOPInstanceUID}.dcm"))
    assert status.Status == 0x0000

    encoded = _half_sent_store(assoc, data, ds)
    sock = assoc.dul.socket.socket
    assert sock is not None
    if how == "a-abort":
        sock.sendall(encoded[: len(encoded) // 2 // 4102 * 4102])  # whole PDUs only
        assoc.abort()
    else:
        sock.sendall(encoded[: len(encoded) // 2 + 7])  # stops inside a P-DATA-TF PDU
        sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + 5
        while assoc.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)

    assert_hub_serves(embedded_hub)
    assert_nothing_kept(embedded_hub, ds.SOPInstanceUID)
    row, stored = stored_instance(embedded_hub, first.SOPInstanceUID)
    assert row is not None and stored is not None
    assert dataset_bytes(stored) == first_data


def test_unknown_calling_ae_gets_rejected_permanent_by_service_user(
    embedded_hub: Hub, dcmtk: None
) -> None:
    ae = AE("STRANGER")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", embedded_hub.dicom_port, ae_title="TELEHUB")
    answer = assoc.acceptor.primitive
    assert assoc.is_rejected and answer is not None
    assert (answer.result, answer.result_source, answer.diagnostic) == (1, 1, 3)

    run = subprocess.run(
        [dcmtk_tool("echoscu"), "-aet", "STRANGER", "-aec", "TELEHUB", "127.0.0.1"]
        + [str(embedded_hub.dicom_port)],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=30,
    )
    out = run.stdout + run.stderr
    assert run.returncode != 0
    assert "Result: Rejected Permanent, Source: Service User" in out
    assert "Reason: Calling AE Title Not Recognized" in out
    assert_hub_serves(embedded_hub)
