"""The report as a DICOM Basic Text SR, stored with its study so PACS and viewers have it.

Built with pydicom: highdicom writes Comprehensive/Enhanced SR measurement reports (TID 1500)
but has no Basic Text SR, and this tree is small. The content follows the shape of TID 2000
(Basic Diagnostic Imaging Report): a CONTAINER root, observer context, and one CONTAINER per
report heading (CID 7001: Findings, Impressions, ...) holding TEXT items.

Stored through the normal ingest path (``ingest.store_instance``), in the study's own Study
Instance UID, in one "report" series per study, so QIDO-RS and WADO-RS serve it like any other
instance. Everything in the data set is derived from the report version (UIDs from its identity,
times from when it was written), so building it twice gives the same bytes and storing it twice
stores it once. Preliminary reports are not stored; an uploaded ECG (no DICOM study) gets none.
"""

from __future__ import annotations

import io
import logging
import os
import tempfile
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian
from sqlalchemy import select
from sqlalchemy.orm import Session

from telehub import ingest, outbox, timeline
from telehub.db.models import Case, CaseEvent, Instance, Report, Study
from telehub.exports.document import (
    SIGNED,
    ReportDocument,
    build,
    sr_instance_uid,
    sr_series_uid,
)
from telehub.services import Services
from telehub.store import ObjectStore

log = logging.getLogger(__name__)

BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
SERIES_NUMBER = 9001
PRIVATE_SCHEME = "99TELEHUB"
#: Builds the new series' DICOMweb metadata ahead of the first viewer (workers/tasks.py).
DICOMWEB_METADATA_TASK = "telehub.dicomweb_metadata"
#: Patient and study attributes copied from the study's first instance.
COPIED = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "StudyID",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyDescription",
)
#: Report section key -> (heading container, text item) codes of CID 7001 / TID 2000.
HEADINGS = {
    "technique": (codes.DCM.CurrentProcedureDescriptions, codes.DCM.ProcedureDescription),
    "findings": (codes.DCM.Findings, codes.DCM.Finding),
    "impression": (codes.DCM.Impressions, codes.DCM.Impression),
    "conclusion": (codes.DCM.Conclusions, codes.DCM.Conclusion),
    "recommendation": (codes.DCM.Recommendations, codes.DCM.Recommendation),
}


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning[:64]
    return item


def _coded(code: object) -> Dataset:
    return _code(code.value, code.scheme_designator, code.meaning)  # type: ignore[attr-defined]


def _item(relationship: str, value_type: str, concept: Dataset) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = [concept]
    return item


def _text(concept: Dataset, text: str) -> Dataset:
    item = _item("CONTAINS", "TEXT", concept)
    item.TextValue = text
    return item


def _container(relationship: str, concept: Dataset, children: list[Dataset]) -> Dataset:
    item = _item(relationship, "CONTAINER", concept)
    item.ContinuityOfContent = "SEPARATE"
    item.ContentSequence = children
    return item


def _headings(doc: ReportDocument) -> list[Dataset]:
    """One CONTAINER per heading, sections that share a heading in one (ECG measurements
    go under Findings), in the report's order; addenda last, under Addendum."""
    groups: dict[str, tuple[Dataset, list[Dataset]]] = {}
    if doc.sections:
        for section in doc.sections:
            heading, item = HEADINGS.get(section.key, (codes.DCM.Findings, None))
            concept = _coded(item) if item else _code(section.key, PRIVATE_SCHEME, section.title)
            _, children = groups.setdefault(heading.value, (_coded(heading), []))
            children.append(_text(concept, section.text))
    else:
        groups[codes.DCM.Findings.value] = (
            _coded(codes.DCM.Findings),
            [_text(_coded(codes.DCM.Finding), doc.text)],
        )
    containers = [_container("CONTAINS", head, kids) for head, kids in groups.values()]
    if doc.addenda:
        addenda = [
            _text(_code("addendum", PRIVATE_SCHEME, f"Addendum v{a.version}"), a.text)
            for a in doc.addenda
        ]
        containers.append(_container("CONTAINS", _coded(codes.DCM.Addendum), addenda))
    return containers


def _observer(doc: ReportDocument) -> list[Dataset]:
    kind = _item("HAS OBS CONTEXT", "CODE", _coded(codes.DCM.ObserverType))
    kind.ConceptCodeSequence = [_coded(codes.DCM.Person)]
    name = _item("HAS OBS CONTEXT", "PNAME", _coded(codes.DCM.PersonObserverName))
    name.PersonName = doc.author.name[:64]
    language = _item(
        "HAS CONCEPT MOD", "CODE", _coded(codes.DCM.LanguageOfContentItemAndDescendants)
    )
    language.ConceptCodeSequence = [_code("zh-CN", "RFC5646", "Chinese (China)")]
    return [language, kind, name]


def _dicom_time(at: datetime, timezone: str) -> tuple[str, str, str]:
    """(date, time, offset) in the reading centre's zone."""
    try:
        local = at.astimezone(ZoneInfo(timezone))
    except (KeyError, ValueError):
        local = at.astimezone(ZoneInfo("Asia/Shanghai"))
    return local.strftime("%Y%m%d"), local.strftime("%H%M%S.%f"), local.strftime("%z")


def build_sr(doc: ReportDocument, first: Dataset | None) -> Dataset:
    """The SR data set of a report version; ``first`` is the study's first instance (header)."""
    study_uid = doc.studies[0].study_uid
    sop_uid = sr_instance_uid(study_uid, doc.case_id, doc.version)
    date, time, offset = _dicom_time(doc.created_at, doc.timezone)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: Chinese report text and names
    ds.SOPClassUID = BASIC_TEXT_SR
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.TimezoneOffsetFromUTC = offset
    for keyword in COPIED:
        value = first.get(keyword) if first is not None else None
        setattr(ds, keyword, str(value) if value is not None else "")
    if first is None:
        ds.PatientName = doc.patient_name
        ds.PatientID = doc.patient_id
        ds.PatientBirthDate = doc.patient_birth_date
        ds.PatientSex = doc.patient_sex
    ds.StudyInstanceUID = study_uid
    ds.Modality = "SR"
    ds.SeriesInstanceUID = sr_series_uid(study_uid)
    ds.SeriesNumber = SERIES_NUMBER
    ds.SeriesDescription = "诊断报告 Report"
    ds.InstanceNumber = doc.version
    ds.Manufacturer = "telehub"
    ds.InstitutionName = doc.reading_facility[:64]
    ds.ContentDate, ds.ContentTime = date, time
    # SR Document General: final and addenda are complete and verified by their signer.
    ds.CompletionFlag = "COMPLETE" if doc.signed else "PARTIAL"
    ds.VerificationFlag = "VERIFIED" if doc.signed else "UNVERIFIED"
    if doc.signed:
        verifier = Dataset()
        verifier.VerifyingObserverName = doc.author.name[:64]
        verifier.VerifyingObserverIdentificationCodeSequence = []
        verifier.VerifyingOrganization = doc.reading_facility[:64]
        verifier.VerificationDateTime = date + time + offset
        ds.VerifyingObserverSequence = [verifier]
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.PerformedProcedureCodeSequence = []
    if doc.predecessor_version is not None:
        ds.PredecessorDocumentsSequence = [_predecessor(doc, study_uid)]
    # SR Document Content: the root container and its tree.
    concept = (
        _code("11524-6", "LN", "EKG study")
        if doc.case_kind == "ecg"
        else _code("18748-4", "LN", "Diagnostic Imaging Report")
    )
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [concept]
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = _observer(doc) + _headings(doc)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds


def _predecessor(doc: ReportDocument, study_uid: str) -> Dataset:
    assert doc.predecessor_version is not None
    sop = Dataset()
    sop.ReferencedSOPClassUID = BASIC_TEXT_SR
    sop.ReferencedSOPInstanceUID = sr_instance_uid(study_uid, doc.case_id, doc.predecessor_version)
    series = Dataset()
    series.SeriesInstanceUID = sr_series_uid(study_uid)
    series.ReferencedSOPSequence = [sop]
    study = Dataset()
    study.StudyInstanceUID = study_uid
    study.ReferencedSeriesSequence = [series]
    return study


def to_bytes(ds: Dataset) -> bytes:
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def read_first(store: ObjectStore, key: str | None) -> Dataset | None:
    """The header of the study's first stored instance (no pixel data)."""
    if key is None:
        return None
    with store.open(key) as fh:
        return pydicom.dcmread(fh, stop_before_pixels=True)


def render(doc: ReportDocument, store: ObjectStore) -> bytes:
    """The Part 10 bytes of a version's SR (what is stored, for a signed version)."""
    if not doc.studies:
        raise ValueError("a case without a DICOM study has no SR")
    return to_bytes(build_sr(doc, read_first(store, doc.first_instance_key)))


# ----- the Celery task's service -------------------------------------------------------------
def store_report_sr(services: Services, case_id: int, version: int, outbox_id: int | None) -> bool:
    """Store a signed version's SR with its study (idempotent); True when it is stored now or
    was before. Timeline SR_STORED once per version."""
    db = services.db
    with db.reader() as session:
        case = session.get(Case, case_id)
        report = session.scalar(
            select(Report).where(Report.case_id == case_id, Report.version == version)
        )
        if case is None or report is None or report.status not in SIGNED or not case.studies:
            doc = None
        else:
            doc = build(session, case, report)
    if doc is None:
        with db.session() as session:
            outbox.mark_done(session, outbox_id)
        return False
    study_uid = doc.studies[0].study_uid
    sop_uid = sr_instance_uid(study_uid, case_id, version)
    with db.reader() as session:
        stored = session.scalar(select(Instance.id).where(Instance.sop_uid == sop_uid))
    if stored is None:
        ds = build_sr(doc, read_first(services.store, doc.first_instance_key))
        _ingest(services, case_id, version, ds)
    with db.session() as session:
        if not _recorded(session, case_id, version):
            timeline.record(
                session,
                case_id,
                timeline.Event.SR_STORED,
                version=version,
                study_uid=study_uid,
                series_uid=sr_series_uid(study_uid),
                sop_instance_uid=sop_uid,
            )
            # The SR is the hub's own addition, not growth a later transfer should report.
            study = session.scalar(select(Study).where(Study.study_uid == study_uid))
            if study is not None and study.completed_at is not None:
                study.completed_instance_count += 1
            outbox.enqueue(session, DICOMWEB_METADATA_TASK, study_uid=study_uid)
        outbox.mark_done(session, outbox_id)
    return True


def _recorded(session: Session, case_id: int, version: int) -> bool:
    events = session.scalars(
        select(CaseEvent).where(
            CaseEvent.case_id == case_id, CaseEvent.kind == timeline.Event.SR_STORED
        )
    )
    return any(e.detail.get("version") == version for e in events)


def _ingest(services: Services, case_id: int, version: int, ds: Dataset) -> None:
    """Through ingest.store_instance, as a received instance: object store, then index."""
    with services.db.reader() as session:
        origin = session.scalar(select(Case.origin_facility_id).where(Case.id == case_id))
    assert origin is not None
    spool = services.settings.spool
    spool.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="report-sr-", suffix=".dcm", dir=spool)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(to_bytes(ds))
        meta = ingest.InstanceMeta(
            sop_class_uid=BASIC_TEXT_SR,
            sop_uid=ds.SOPInstanceUID,
            study_uid=ds.StudyInstanceUID,
            series_uid=ds.SeriesInstanceUID,
            transfer_syntax_uid=ExplicitVRLittleEndian,
            modality="SR",
            patient_id=str(ds.PatientID),
            issuer_of_patient_id=str(ds.get("IssuerOfPatientID", "") or ""),
            patient_name=str(ds.PatientName),
            patient_birth_date=str(ds.PatientBirthDate),
            patient_sex=str(ds.PatientSex),
            accession_number=str(ds.AccessionNumber),
            study_date=str(ds.StudyDate),
            study_time=str(ds.StudyTime),
            study_description=str(ds.get("StudyDescription", "") or ""),
            series_number=SERIES_NUMBER,
            series_description=str(ds.SeriesDescription),
            instance_number=version,
        )
        ingest.store_instance(
            services.db,
            services.store,
            origin,
            meta,
            path,
            source=f"report:{case_id}/v{version}",
        )
    finally:
        path.unlink(missing_ok=True)
    log.info("case %s: report v%s stored as SR %s", case_id, version, ds.SOPInstanceUID)
