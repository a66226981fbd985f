"""A study belongs to the facility that sent it first: another facility's instances for the
same Study or SOP Instance UID are refused as not authorised (0x0124) over C-STORE and
STOW-RS, and nothing of theirs is written (docs/conformance.md 6.4)."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from tests.helpers import Hub, fresh_copy
from tests.test_dicom_receiver import store_raw
from tests.test_dicomweb_stow_qido import index, stow_raw, value

NOT_AUTHORISED = 0x0124


def objects_of(hub: Hub, study_uid: str) -> list[Path]:
    """The study's instance objects (not the DICOMweb metadata a worker builds meanwhile)."""
    folder = hub.data / "objects" / "dicom"
    return sorted(p for p in folder.rglob("*") if p.is_file() and study_uid in str(p))


def test_another_facility_cannot_add_to_or_overwrite_a_study(
    embedded_hub: Hub, tmp_path: Path
) -> None:
    study = generate_uid()
    first = fresh_copy("CT_small.dcm", tmp_path / "c1", study_uid=study)
    assert store_raw(embedded_hub, first, "CLINIC1") == 0x0000
    objects_before = objects_of(embedded_hub, study)

    # CLINIC2 sends a new instance into CLINIC1's study, and re-sends CLINIC1's instance
    # with other content: both refused, nothing written.
    intruder = fresh_copy("CT_small.dcm", tmp_path / "c2", study_uid=study)
    assert store_raw(embedded_hub, intruder, "CLINIC2") == NOT_AUTHORISED
    ds = pydicom.dcmread(first)
    ds.PatientName = "Intruder^Changed"
    resent = tmp_path / "resent.dcm"
    ds.save_as(resent)
    assert store_raw(embedded_hub, resent, "CLINIC2") == NOT_AUTHORISED

    # The same over STOW-RS as clinic2: 409, the failure reason names it.
    api = embedded_hub.api
    other = fresh_copy("CT_small.dcm", tmp_path / "c3", study_uid=study)
    answer = stow_raw(api, api.login("clinic2"), [(other.read_bytes(), "application/dicom")])
    assert answer.status == 409, answer.body
    failed = value(answer.body, "00081198")
    assert value(failed, "00081197") == NOT_AUTHORISED

    rows = index(
        embedded_hub,
        "SELECT count(*), max(studies.instance_count) FROM instances "
        "JOIN series ON series.id = instances.series_id "
        "JOIN studies ON studies.id = series.study_id WHERE studies.study_uid = ?",
        study,
    )
    assert rows == [(1, 1)]
    assert objects_of(embedded_hub, study) == objects_before
    # The owner can still add to its own study.
    more = fresh_copy("CT_small.dcm", tmp_path / "c4", study_uid=study)
    assert store_raw(embedded_hub, more, "CLINIC1") == 0x0000
    # The refused re-send left no trace in the owner's case either (no "resent" event).
    resent_events = index(
        embedded_hub,
        "SELECT count(*) FROM case_events JOIN studies ON studies.case_id = case_events.case_id "
        "WHERE studies.study_uid = ? AND case_events.kind = 'instance_resent'",
        study,
    )
    assert resent_events == [(0,)]
