"""Read what the index needs from a received Part 10 file, without touching the pixel data."""

from __future__ import annotations

import warnings
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID

from telehub.ingest import InstanceMeta


class InvalidInstance(ValueError):
    """The data set is readable but not acceptable; ``status`` is the DIMSE failure status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


CANNOT_UNDERSTAND = 0xC000
DOES_NOT_MATCH_SOP_CLASS = 0xA900


def _text(ds: Dataset, keyword: str, limit: int = 200) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    return str(value).strip()[:limit]


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _uid(ds: Dataset, keyword: str) -> str:
    value = str(ds.get(keyword, "") or "").strip().rstrip("\x00")
    if not value:
        raise InvalidInstance(CANNOT_UNDERSTAND, f"{keyword} is missing")
    if not UID(value).is_valid:
        raise InvalidInstance(CANNOT_UNDERSTAND, f"{keyword} {value[:70]!r} is not a valid UID")
    return value


def read_instance_meta(path: Path | str, sop_class_uid: str, sop_instance_uid: str) -> InstanceMeta:
    """Decode the identifying attributes (text in the file's Specific Character Set).

    ``sop_class_uid``/``sop_instance_uid`` are the C-STORE request's Affected SOP Class and
    Instance UIDs; the data set must agree with them.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, defer_size="64 KB")
        except Exception as exc:
            raise InvalidInstance(CANNOT_UNDERSTAND, f"cannot parse data set: {exc}") from exc
        sop_uid = _uid(ds, "SOPInstanceUID")
        if sop_uid != sop_instance_uid:
            raise InvalidInstance(
                CANNOT_UNDERSTAND, "SOP Instance UID differs from the C-STORE request's"
            )
        if str(ds.get("SOPClassUID", "")).strip() != sop_class_uid:
            raise InvalidInstance(
                DOES_NOT_MATCH_SOP_CLASS, "SOP Class UID differs from the C-STORE request's"
            )
        try:
            return InstanceMeta(
                sop_class_uid=sop_class_uid,
                sop_uid=sop_uid,
                study_uid=_uid(ds, "StudyInstanceUID"),
                series_uid=_uid(ds, "SeriesInstanceUID"),
                transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                modality=_text(ds, "Modality", 16),
                patient_id=_text(ds, "PatientID", 64),
                issuer_of_patient_id=_text(ds, "IssuerOfPatientID", 64),
                patient_name=_text(ds, "PatientName"),
                patient_birth_date=_text(ds, "PatientBirthDate", 8),
                patient_sex=_text(ds, "PatientSex", 16),
                accession_number=_text(ds, "AccessionNumber", 64),
                study_date=_text(ds, "StudyDate", 8),
                study_time=_text(ds, "StudyTime", 16),
                study_description=_text(ds, "StudyDescription"),
                series_number=_int(ds, "SeriesNumber"),
                series_description=_text(ds, "SeriesDescription"),
                body_part=_text(ds, "BodyPartExamined", 64),
                instance_number=_int(ds, "InstanceNumber"),
            )
        except InvalidInstance:
            raise
        except Exception as exc:  # a value that cannot be decoded in its character set
            raise InvalidInstance(CANNOT_UNDERSTAND, f"cannot decode attributes: {exc}") from exc
