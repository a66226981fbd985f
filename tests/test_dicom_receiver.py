"""The DICOM receiver over real associations: echo, bad data sets, unknown callers, re-sends."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, _config
from pynetdicom.sop_class import CTImageStorage, Verification
from sqlalchemy import func, select

from dicom.send import send_paths
from telehub.db import Database
from telehub.db.models import Case, Instance, Study
from tests.helpers import Hub, dicom_file, fresh_copy

_config.STORE_SEND_CHUNKED_DATASET = True  # send files' bytes exactly as they are on disk


def hub_db(hub: Hub) -> Database:
    return Database(f"sqlite:///{hub.data.resolve() / 'telehub.sqlite3'}")


def store_raw(hub: Hub, path: Path, calling_aet: str = "CLINIC1") -> int:
    """C-STORE a file's bytes as they are (even if broken); returns the DIMSE status."""
    ae = AE(calling_aet)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", hub.dicom_port, ae_title="TELEHUB")
    assert assoc.is_established
    try:
        status = assoc.send_c_store(path)
        return int(status.Status)
    finally:
        assoc.release()


def test_echo(embedded_hub: Hub) -> None:
    ae = AE("CLINIC1")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", embedded_hub.dicom_port, ae_title="TELEHUB")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()


def test_unknown_calling_ae_title_is_rejected(embedded_hub: Hub) -> None:
    ae = AE("STRANGER")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", embedded_hub.dicom_port, ae_title="TELEHUB")
    assert assoc.is_rejected
    assert not assoc.is_established
    # Seen by a sender as a clear reason, not a hang.
    result = send_paths(
        [dicom_file("CT_small.dcm")], "127.0.0.1", embedded_hub.dicom_port, "STRANGER"
    )
    assert result.sent == 0
    assert "calling AE title not recognised" in result.refused[0].reason


def test_truncated_data_set_gets_failure_status_and_nothing_is_indexed(
    embedded_hub: Hub, tmp_path: Path
) -> None:
    good = fresh_copy("CT_small.dcm", tmp_path)
    ds = pydicom.dcmread(good)
    raw = good.read_bytes()
    broken = tmp_path / "truncated.dcm"
    broken.write_bytes(raw[: len(raw) - 5000])  # cut inside the pixel data
    status = store_raw(embedded_hub, broken)
    assert status == 0xC000
    db = hub_db(embedded_hub)
    with db.reader() as session:
        assert session.scalar(select(Instance).where(Instance.sop_uid == ds.SOPInstanceUID)) is None
        assert session.scalar(select(Study).where(Study.study_uid == ds.StudyInstanceUID)) is None
    assert not list((embedded_hub.data / "objects").rglob(f"{ds.SOPInstanceUID}.dcm"))
    db.dispose()


def test_data_set_without_study_uid_is_refused(embedded_hub: Hub, tmp_path: Path) -> None:
    path = fresh_copy("CT_small.dcm", tmp_path)
    ds = pydicom.dcmread(path)
    del ds.StudyInstanceUID
    ds.save_as(path, enforce_file_format=True)
    assert store_raw(embedded_hub, path) == 0xC000
    db = hub_db(embedded_hub)
    with db.reader() as session:
        assert session.scalar(select(Instance).where(Instance.sop_uid == ds.SOPInstanceUID)) is None
    db.dispose()


def test_hub_keeps_serving_after_bad_input_and_resend_is_idempotent(
    embedded_hub: Hub, tmp_path: Path
) -> None:
    path = fresh_copy("CT_small.dcm", tmp_path)
    ds = pydicom.dcmread(path)
    for _ in range(2):
        result = send_paths([path], "127.0.0.1", embedded_hub.dicom_port, "CLINIC1")
        assert result.sent == 1, result.refused
    db = hub_db(embedded_hub)
    with db.reader() as session:
        count = session.scalar(
            select(func.count()).select_from(Instance).where(Instance.sop_uid == ds.SOPInstanceUID)
        )
        assert count == 1
        study = session.scalar(select(Study).where(Study.study_uid == ds.StudyInstanceUID))
        assert study is not None and study.instance_count == 1
        cases = session.scalar(
            select(func.count()).select_from(Case).where(Case.id == study.case_id)
        )
        assert cases == 1
    db.dispose()
    objects = list((embedded_hub.data / "objects").rglob(f"{ds.SOPInstanceUID}.dcm"))
    assert len(objects) == 1


def test_the_senders_preferred_transfer_syntax_is_accepted(embedded_hub: Hub) -> None:
    """pynetdicom alone would pick from its own list (Implicit VR first); we store what we
    receive, so the sender's first choice wins, whichever order it proposes."""
    from pydicom.uid import (
        ExplicitVRBigEndian,
        ImplicitVRLittleEndian,
        JPEG2000Lossless,
    )

    for proposed in (
        [ExplicitVRLittleEndian, ImplicitVRLittleEndian],
        [JPEG2000Lossless, ExplicitVRLittleEndian, ImplicitVRLittleEndian],
        [ExplicitVRBigEndian, ImplicitVRLittleEndian],
        [ImplicitVRLittleEndian, ExplicitVRLittleEndian],
    ):
        ae = AE("CLINIC1")
        ae.add_requested_context(CTImageStorage, proposed)
        assoc = ae.associate("127.0.0.1", embedded_hub.dicom_port, ae_title="TELEHUB")
        assert assoc.is_established
        try:
            accepted = assoc.accepted_contexts
            assert [cx.transfer_syntax[0] for cx in accepted] == [proposed[0]]
        finally:
            assoc.release()


def test_an_ae_title_is_accepted_only_from_its_facilitys_networks(tmp_path: Path) -> None:
    """A copied AE title is not enough: a facility can be tied to its networks."""
    import sqlite3

    from tests.helpers import start_hub

    hub = start_hub(tmp_path)
    try:
        with sqlite3.connect(hub.data / "telehub.sqlite3") as conn:
            conn.execute("UPDATE facilities SET dicom_networks = '127.0.0.0/8' WHERE code = 'T1'")
            conn.execute("UPDATE facilities SET dicom_networks = '10.0.0.0/8' WHERE code = 'T2'")
        for aet, accepted in (("CLINIC1", True), ("CLINIC2", False)):
            ae = AE(aet)
            ae.add_requested_context(Verification)
            assoc = ae.associate("127.0.0.1", hub.dicom_port, ae_title="TELEHUB")
            assert assoc.is_established is accepted, aet
            if accepted:
                assoc.release()
            else:
                assert assoc.is_rejected
                rejection = assoc.acceptor.primitive
                assert (rejection.result, rejection.result_source, rejection.diagnostic) == (
                    0x01,
                    0x01,
                    0x03,
                )
    finally:
        hub.proc.stop()
