"""Q/R identifiers as SQL over the index: C-FIND matching and C-MOVE/C-GET selection.

Answers come from the index alone (never from the files), so a query costs one SQL statement.
Matching follows PS3.4 C.2.2.2 by the rules QIDO-RS shares (``dicom.matching``); here are only
C-FIND's parts: which attribute exists at which level, values read from the identifier's data
elements, a value breaking the rules answered with status 0xC000, answers as data sets. The
caller's visibility (``telehub.access``) is one more WHERE clause, so a study another facility
may not see is indistinguishable from a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.engine import Row
from sqlalchemy.orm import aliased

from dicom import matching
from dicom.matching import Kind, MatchError
from telehub.db.models import Case, Instance, Patient, Series, Study

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
UTF8 = "ISO_IR 192"

IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000


class QueryError(ValueError):
    """The identifier cannot be answered; ``status`` is the DIMSE failure status to send."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Attr:
    """One attribute the index can match and return: its level, SQL expression and matcher."""

    level: str
    column: Any  # a SQLAlchemy column expression
    kind: Kind | Literal["count"]  # count: returned, never matched


def _rank(level: str) -> int:
    return LEVELS.index(level)


_SeriesCount = aliased(Series)
_STUDY_SERIES = (
    select(func.count(_SeriesCount.id)).where(_SeriesCount.study_id == Study.id).scalar_subquery()
)

ATTRS: dict[str, Attr] = {
    "PatientName": Attr("PATIENT", Patient.name, "pn"),
    "PatientID": Attr("PATIENT", Patient.patient_id, "text"),
    "PatientBirthDate": Attr("PATIENT", Patient.birth_date, "date"),
    "PatientSex": Attr("PATIENT", Patient.sex, "text"),
    "StudyInstanceUID": Attr("STUDY", Study.study_uid, "uid"),
    "StudyDate": Attr("STUDY", Study.study_date, "date"),
    "StudyTime": Attr("STUDY", Study.study_time, "time"),
    "AccessionNumber": Attr("STUDY", Study.accession_number, "text"),
    "StudyDescription": Attr("STUDY", Study.description, "text"),
    "ModalitiesInStudy": Attr("STUDY", Study.modalities, "modalities"),
    "NumberOfStudyRelatedSeries": Attr("STUDY", _STUDY_SERIES, "count"),
    "NumberOfStudyRelatedInstances": Attr("STUDY", Study.instance_count, "count"),
    "SeriesInstanceUID": Attr("SERIES", Series.series_uid, "uid"),
    "Modality": Attr("SERIES", Series.modality, "text"),
    "SeriesNumber": Attr("SERIES", Series.series_number, "int"),
    "SeriesDescription": Attr("SERIES", Series.description, "text"),
    "BodyPartExamined": Attr("SERIES", Series.body_part, "text"),
    "NumberOfSeriesRelatedInstances": Attr("SERIES", Series.instance_count, "count"),
    "SOPInstanceUID": Attr("IMAGE", Instance.sop_uid, "uid"),
    "SOPClassUID": Attr("IMAGE", Instance.sop_class_uid, "uid"),
    "InstanceNumber": Attr("IMAGE", Instance.instance_number, "int"),
}
#: The unique key of each level, always returned for the levels at and above the query's.
UNIQUE = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
#: Elements of the identifier that steer the query rather than match.
_CONTROL = {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle", "InstanceAvailability"}


# ----- decoding the identifier ---------------------------------------------------------------
def query_level(identifier: Dataset, patient_root: bool) -> str:
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    if level not in LEVELS:
        raise QueryError(IDENTIFIER_DOES_NOT_MATCH, f"QueryRetrieveLevel {level!r} is not valid")
    if level == "PATIENT" and not patient_root:
        raise QueryError(
            IDENTIFIER_DOES_NOT_MATCH, "PATIENT level needs the Patient Root information model"
        )
    return level


def _values(elem: DataElement) -> list[str]:
    """The element's values as text; an empty list is universal matching."""
    value = elem.value
    if value is None or value == "":
        return []
    items = list(value) if isinstance(value, MultiValue | list) else [value]
    texts = [str(item).strip() for item in items]
    return [t for t in texts if t]


def _condition(keyword: str, attr: Attr, values: list[str]) -> ColumnElement[bool] | None:
    """The WHERE clause for one matching key (None: universal), by the shared rules."""
    if attr.kind == "count":
        return None  # not a matching key (PS3.4 C.6.1.1.2): returned only
    try:
        return matching.condition(attr.kind, attr.column, values, keyword)
    except MatchError as exc:
        raise QueryError(UNABLE_TO_PROCESS, str(exc)) from exc


def _uids(keyword: str, values: list[str]) -> list[str]:
    """A retrieve's unique keys: UIDs only, no wildcards (PS3.4 C.4.2.2.1)."""
    try:
        return matching.uid_list(values, keyword)
    except MatchError as exc:
        raise QueryError(UNABLE_TO_PROCESS, str(exc)) from exc


def _base(level: str, visible: ColumnElement[bool], columns: list[Any]) -> Select[Any]:
    if level == "PATIENT":
        seen = select(Study.patient_id).join(Case, Case.id == Study.case_id).where(visible)
        return select(*columns).select_from(Patient).where(Patient.id.in_(seen))
    query = (
        select(*columns)
        .select_from(Study)
        .join(Case, Case.id == Study.case_id)
        .outerjoin(Patient, Patient.id == Study.patient_id)
    )
    if _rank(level) >= _rank("SERIES"):
        query = query.join(Series, Series.study_id == Study.id)
    if level == "IMAGE":
        query = query.join(Instance, Instance.series_id == Series.id)
    return query.where(visible)


_ORDER = {
    "PATIENT": (Patient.id,),
    "STUDY": (Study.id,),
    "SERIES": (Study.id, Series.series_number, Series.id),
    "IMAGE": (Study.id, Series.id, Instance.instance_number, Instance.id),
}


# ----- C-FIND ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Find:
    """One C-FIND as a statement, plus what each answer must carry."""

    level: str
    statement: Select[Any]
    requested: list[tuple[int, str, str]]  # (tag, VR, keyword) as asked, in order
    matching_keys: list[str]

    def answer(self, row: Row[Any], retrieve_aet: str) -> Dataset:
        """The response identifier for one matching row, text in UTF-8 (ISO_IR 192)."""
        ds = Dataset()
        ds.SpecificCharacterSet = UTF8
        ds.QueryRetrieveLevel = self.level
        ds.RetrieveAETitle = retrieve_aet
        values = row._mapping
        for tag, vr, keyword in self.requested:
            if keyword in ds:
                continue
            if keyword in values:
                ds.add_new(tag, vr, _dicom_value(keyword, values[keyword]))
            else:  # asked for but not kept by the index: returned empty (PS3.4 C.2.2.1.2)
                ds.add_new(tag, vr, [] if vr == "SQ" else None)
        if "InstanceAvailability" in {k for _, _, k in self.requested}:
            ds.InstanceAvailability = "ONLINE"
        return ds


def _dicom_value(keyword: str, value: Any) -> Any:
    if value is None or value == "":
        return None
    if keyword == "ModalitiesInStudy":
        return [m for m in str(value).split("\\") if m]
    if isinstance(value, int):
        return value
    return str(value)


def build_find(identifier: Dataset, patient_root: bool, visible: ColumnElement[bool]) -> Find:
    """Turn a C-FIND identifier into one SQL statement; raises :class:`QueryError`."""
    level = query_level(identifier, patient_root)
    returned = [k for k, a in ATTRS.items() if _rank(a.level) <= _rank(level)]
    if level == "PATIENT":
        returned = [k for k in returned if ATTRS[k].level == "PATIENT"]
    columns: list[Any] = [ATTRS[k].column.label(k) for k in returned]
    if level == "PATIENT":
        studies = (
            select(func.count(Study.id))
            .join(Case, Case.id == Study.case_id)
            .where(Study.patient_id == Patient.id, visible)
            .scalar_subquery()
        )
        columns.append(studies.label("NumberOfPatientRelatedStudies"))
    else:
        columns.append(Case.id.label("_case_id"))
    statement = _base(level, visible, columns)

    requested: list[tuple[int, str, str]] = []
    for unique_level in LEVELS[: _rank(level) + 1]:
        keyword = UNIQUE[unique_level]
        if unique_level != "PATIENT" or level == "PATIENT":
            requested.append((_tag(keyword), dictionary_VR(keyword), keyword))
    matching: list[str] = []
    for elem in identifier:
        keyword = elem.keyword or keyword_for_tag(elem.tag) or ""
        if elem.tag.group in (0x0000, 0x0002) or keyword in _CONTROL:
            if keyword == "InstanceAvailability":
                requested.append((elem.tag, "CS", keyword))
            continue
        if keyword not in {k for _, _, k in requested}:
            requested.append((int(elem.tag), elem.VR, keyword or str(elem.tag)))
        attr = ATTRS.get(keyword)
        if attr is None or elem.VR == "SQ" or keyword not in returned:
            continue  # not indexed or below the query level: returned empty, never matched
        try:
            values = _values(elem)
        except Exception as exc:  # a value pydicom cannot decode in the identifier's charset
            raise QueryError(UNABLE_TO_PROCESS, f"cannot decode {keyword}: {exc}") from exc
        if not values:
            continue
        clause = _condition(keyword, attr, values)
        if clause is not None:
            statement = statement.where(clause)
            matching.append(keyword)
    statement = statement.order_by(*_ORDER[level])
    return Find(level, statement, requested, matching)


def _tag(keyword: str) -> int:
    tag = tag_for_keyword(keyword)
    assert tag is not None
    return tag


# ----- C-MOVE / C-GET --------------------------------------------------------------------------
@dataclass(frozen=True)
class InstanceRef:
    """An instance to send: where it is and how it was received."""

    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    object_key: str
    size: int
    case_id: int
    study_uid: str


def build_retrieve(
    identifier: Dataset, patient_root: bool, visible: ColumnElement[bool]
) -> Select[Any]:
    """The instances a C-MOVE/C-GET identifier selects (unique keys only, PS3.4 C.4.2.2.1)."""
    level = query_level(identifier, patient_root)
    key = UNIQUE[level]
    elem = identifier.get(key)
    values = _values(identifier[key]) if elem is not None else []
    if not values:
        raise QueryError(IDENTIFIER_DOES_NOT_MATCH, f"a {level} retrieve needs {key}")
    statement = _base(
        "IMAGE",
        visible,
        [
            Instance.sop_uid,
            Instance.sop_class_uid,
            Instance.transfer_syntax_uid,
            Instance.object_key,
            Instance.size,
            Case.id,
            Study.study_uid,
        ],
    )
    for unique_level in LEVELS[: _rank(level) + 1]:
        keyword = UNIQUE[unique_level]
        if keyword not in identifier:
            continue
        found = _values(identifier[keyword])
        if not found:
            continue
        if keyword == "PatientID":
            statement = statement.where(Patient.patient_id.in_(found))
        else:
            statement = statement.where(ATTRS[keyword].column.in_(_uids(keyword, found)))
    return statement.order_by(*_ORDER["IMAGE"])


def instance_refs(rows: list[Row[Any]]) -> list[InstanceRef]:
    return [InstanceRef(*row) for row in rows]
