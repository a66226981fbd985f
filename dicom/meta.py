"""Read what the index needs from a received Part 10 file, without touching the pixel data.

Text is decoded in the file's Specific Character Set by pydicom, with two corrections for what
Chinese equipment sends: a file without a Specific Character Set is read in the hub's
configured default (``dicom_default_charset``, e.g. GB18030) instead of ISO-IR 6, and values
under ``ISO 2022 IR 58`` are decoded here, because pydicom 3.0 leaves its escape sequences in
the text (and reads GB2312 bytes sent without them as Latin-1). Person names keep all their
component groups (``Zhang^San=张^三``), so nothing the sender wrote is lost.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pydicom
from pydicom.charset import convert_encodings
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

from dicom.integrity import Scan, scan
from telehub.ingest import InstanceMeta


class InvalidInstance(ValueError):
    """The data set is readable but not acceptable; ``status`` is the DIMSE failure status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


CANNOT_UNDERSTAND = 0xC000
DOES_NOT_MATCH_SOP_CLASS = 0xA900


IR_58 = "ISO 2022 IR 58"
#: ISO 2022 escape sequences (designations of G0..G3), as they appear in IR 58 values.
_ESCAPE = re.compile(rb"\x1b[$()*+\-./]{1,2}[@-~]")


def _charsets(ds: Dataset) -> list[str]:
    value = ds.get("SpecificCharacterSet")
    if value is None:
        return []
    values = value if isinstance(value, MultiValue) else [value]
    return [str(v).strip() for v in values]


def _decode_ir58(raw: bytes) -> str:
    """ASCII plus GB2312 under ISO 2022: drop the escape sequences and decode the rest as
    GB18030 (a superset of both), whether or not the sender wrote the escapes."""
    return _ESCAPE.sub(b"", raw).decode("gb18030", errors="replace")


def _text(ds: Dataset, keyword: str, limit: int = 200) -> str:
    if IR_58 in _charsets(ds):
        element = ds.get_item(keyword)
        if isinstance(element, RawDataElement):
            raw = element.value or b""
            return _decode_ir58(raw).strip(" \x00")[:limit]
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, MultiValue):
        value = "\\".join(str(v) for v in value)
    return str(value).strip(" \x00")[:limit]


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


def read_instance_meta(
    path: Path | str, sop_class_uid: str, sop_instance_uid: str, default_charset: str = ""
) -> InstanceMeta:
    """Decode the identifying attributes (text in the file's Specific Character Set).

    ``sop_class_uid``/``sop_instance_uid`` are the C-STORE request's Affected SOP Class and
    Instance UIDs; the data set must agree with them. ``default_charset`` (a DICOM defined
    term such as ``GB18030``) applies when the data set has no Specific Character Set.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, defer_size="64 KB")
        except Exception as exc:
            raise InvalidInstance(CANNOT_UNDERSTAND, f"cannot parse data set: {exc}") from exc
    return meta_from_dataset(ds, sop_class_uid, sop_instance_uid, default_charset)


#: The top-level attributes the index keeps (what :func:`meta_from_dataset` reads).
_INDEXED_KEYWORDS = (
    "SpecificCharacterSet",
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
    "PatientID",
    "IssuerOfPatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "SeriesNumber",
    "SeriesDescription",
    "BodyPartExamined",
    "InstanceNumber",
)
_KEYWORDS = {tag_for_keyword(keyword): keyword for keyword in _INDEXED_KEYWORDS}
INDEXED_TAGS = frozenset(_KEYWORDS)


def check_and_read(
    path: Path | str,
    sop_class_uid: str,
    sop_instance_uid: str,
    default_charset: str = "",
    content: bytes | None = None,
) -> InstanceMeta:
    """What every receiving path calls: the structure check (MalformedDataset) and the index's
    attributes (InvalidInstance), from one pass over the file's element headers. ``content``:
    the file's bytes, when the receiver still holds them (small instances), so the file is not
    opened again."""
    found = scan(path if content is None else content, INDEXED_TAGS)
    if not found.elements:  # deflated: pydicom inflates it
        return read_instance_meta(path, sop_class_uid, sop_instance_uid, default_charset)
    return meta_from_scan(found, sop_class_uid, sop_instance_uid, default_charset)


def meta_from_scan(
    scan: Scan, sop_class_uid: str, sop_instance_uid: str, default_charset: str = ""
) -> InstanceMeta:
    """The same as :func:`read_instance_meta`, from the elements the structure check kept
    (``dicom.integrity.scan(path, INDEXED_TAGS)``): the file is parsed once, not twice."""
    fast = _ascii_meta(scan, sop_class_uid, sop_instance_uid)
    if fast is not None:
        return fast
    ds = Dataset(dict(scan.elements))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = scan.transfer_syntax
    charsets = _charsets(ds) if 0x00080005 in scan.elements else []
    ds.set_original_encoding(
        scan.implicit_vr, scan.little_endian, convert_encodings(charsets or None)
    )
    return meta_from_dataset(ds, sop_class_uid, sop_instance_uid, default_charset)


def _ascii_meta(scan: Scan, sop_class_uid: str, sop_instance_uid: str) -> InstanceMeta | None:
    """Most data sets carry only ASCII in the indexed attributes, which every character set
    decodes alike: read those straight from the bytes, without pydicom's per-element
    conversion. None (use pydicom) when any value has other bytes or an escape sequence."""
    values: dict[str, str] = {}
    for tag, keyword in _KEYWORDS.items():
        element = scan.elements.get(tag)
        raw = element.value if element is not None else b""
        if not raw:
            values[keyword] = ""
            continue
        if not raw.isascii() or b"\x1b" in raw:
            return None
        text = raw.decode("ascii")
        values[keyword] = "\\".join(v.strip(" \x00") for v in text.split("\\"))

    def uid(keyword: str) -> str:
        value = values[keyword]
        if not value:
            raise InvalidInstance(CANNOT_UNDERSTAND, f"{keyword} is missing")
        if not UID(value).is_valid:
            raise InvalidInstance(CANNOT_UNDERSTAND, f"{keyword} {value[:70]!r} is not a valid UID")
        return value

    def number(keyword: str) -> int | None:
        try:
            return int(values[keyword]) if values[keyword] else None
        except ValueError:
            return None

    if uid("SOPInstanceUID") != sop_instance_uid:
        raise InvalidInstance(
            CANNOT_UNDERSTAND, "SOP Instance UID differs from the C-STORE request's"
        )
    if values["SOPClassUID"] != sop_class_uid:
        raise InvalidInstance(
            DOES_NOT_MATCH_SOP_CLASS, "SOP Class UID differs from the C-STORE request's"
        )
    text = values.__getitem__
    return InstanceMeta(
        sop_class_uid=sop_class_uid,
        sop_uid=sop_instance_uid,
        study_uid=uid("StudyInstanceUID"),
        series_uid=uid("SeriesInstanceUID"),
        transfer_syntax_uid=str(scan.transfer_syntax),
        modality=text("Modality")[:16],
        patient_id=text("PatientID")[:64],
        issuer_of_patient_id=text("IssuerOfPatientID")[:64],
        patient_name=text("PatientName")[:200],
        patient_birth_date=text("PatientBirthDate")[:8],
        patient_sex=text("PatientSex")[:16],
        accession_number=text("AccessionNumber")[:64],
        study_date=text("StudyDate")[:8],
        study_time=text("StudyTime")[:16],
        study_description=text("StudyDescription")[:200],
        series_number=number("SeriesNumber"),
        series_description=text("SeriesDescription")[:200],
        body_part=text("BodyPartExamined")[:64],
        instance_number=number("InstanceNumber"),
    )


def meta_from_dataset(
    ds: Dataset, sop_class_uid: str, sop_instance_uid: str, default_charset: str = ""
) -> InstanceMeta:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if default_charset and not any(_charsets(ds)):
            # Only this in-memory copy: the stored object stays exactly as received. pydicom
            # decodes raw text in the charset it read, so that is what is replaced.
            ds.SpecificCharacterSet = default_charset
            implicit, little = ds.original_encoding
            ds.set_original_encoding(implicit, little, convert_encodings(default_charset))
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
