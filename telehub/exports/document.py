"""One report version with everything its exports show, read once inside a transaction.

The renderers (pdf, fhir, sr) then work on this plain value outside any transaction, so a
slow PDF never holds the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pydicom.uid import generate_uid
from sqlalchemy import select
from sqlalchemy.orm import Session

from telehub.db.models import Case, Facility, Instance, Report, ReportStatus, Series, User
from telehub.report_templates import section_titles

SIGNED = (ReportStatus.FINAL.value, ReportStatus.ADDENDUM.value)


@dataclass(frozen=True)
class Person:
    id: int
    username: str
    name: str
    facility: str


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    text: str


@dataclass(frozen=True)
class Addendum:
    version: int
    text: str
    author: Person
    at: datetime


@dataclass(frozen=True)
class Cosignature:
    by: Person
    at: datetime
    comment: str


@dataclass(frozen=True)
class StudyInfo:
    study_uid: str
    date: str
    time: str
    modalities: list[str]
    description: str
    accession: str


@dataclass(frozen=True)
class ReportDocument:
    case_id: int
    case_kind: str
    clinical_question: str
    version: int
    status: str
    #: The report proper: this version, or for an addendum the final report it adds to.
    base_version: int
    base_status: str
    text: str
    sections: list[Section]
    template: str
    author: Person
    #: When the base report was written (signed, for a final one).
    signed_at: datetime
    #: When this version was written (differs from signed_at for an addendum).
    created_at: datetime
    #: Addenda up to and including this version (empty unless this is an addendum).
    addenda: list[Addendum]
    cosignatures: list[Cosignature]
    reading_facility: str
    reading_facility_code: str
    reading_centre: str
    timezone: str
    origin_facility: str
    origin_facility_code: str
    patient_name: str
    patient_id: str
    patient_issuer: str
    patient_sex: str
    patient_birth_date: str
    studies: list[StudyInfo]
    #: Object key of the first stored instance of the first study (patient module for the SR).
    first_instance_key: str | None = None
    #: SOP Instance UID of the SR of the signed version before this one (an addendum's
    #: predecessor document).
    predecessor_version: int | None = field(default=None)

    @property
    def is_addendum(self) -> bool:
        return self.status == ReportStatus.ADDENDUM.value

    @property
    def signed(self) -> bool:
        return self.status in SIGNED

    @property
    def full_text(self) -> str:
        """The report text followed by its addenda, as a reader of this version sees it."""
        parts = [self.text]
        parts += [f"补充报告 Addendum (v{a.version}):\n{a.text}" for a in self.addenda]
        return "\n\n".join(parts)


def _person(session: Session, user: User) -> Person:
    facility = session.get_one(Facility, user.facility_id)
    return Person(user.id, user.username, user.display_name or user.username, facility.name)


def sr_series_uid(study_uid: str) -> str:
    """The one series that holds a study's report SRs; the same on every run."""
    return generate_uid(entropy_srcs=["telehub report SR series", study_uid])


def sr_instance_uid(study_uid: str, case_id: int, version: int) -> str:
    """A report version's SR SOP Instance UID: derived, so storing it twice stores it once."""
    return generate_uid(entropy_srcs=["telehub report SR", study_uid, str(case_id), str(version)])


def build(session: Session, case: Case, report: Report) -> ReportDocument:
    """Read everything the exports of ``report`` (a version of ``case``) need."""
    versions = list(
        session.scalars(select(Report).where(Report.case_id == case.id).order_by(Report.version))
    )
    base = report
    addenda: list[Addendum] = []
    if report.status == ReportStatus.ADDENDUM.value:
        base = next(r for r in versions if r.status == ReportStatus.FINAL.value)
        addenda = [
            Addendum(r.version, r.text, _person(session, r.author), r.created_at)
            for r in versions
            if r.status == ReportStatus.ADDENDUM.value and r.version <= report.version
        ]
    earlier_signed = [
        r.version for r in versions if r.status in SIGNED and r.version < report.version
    ]
    author = session.get_one(User, base.author_id)
    reader_facility = session.get_one(Facility, author.facility_id)
    titles = section_titles(session, base.template)
    sections = [
        Section(key, titles.get(key, key), text) for key, text in (base.sections or {}).items()
    ]
    studies = [
        StudyInfo(
            s.study_uid,
            s.study_date,
            s.study_time,
            [m for m in s.modalities.split("\\") if m],
            s.description,
            s.accession_number,
        )
        for s in case.studies
    ]
    first_key = None
    if case.studies:
        first_key = session.scalar(
            select(Instance.object_key)
            .join(Series, Series.id == Instance.series_id)
            .where(Series.study_id == case.studies[0].id, Series.modality != "SR")
            .order_by(Instance.id)
            .limit(1)
        )
    patient = case.patient
    return ReportDocument(
        case_id=case.id,
        case_kind=case.kind,
        clinical_question=case.clinical_question,
        version=report.version,
        status=report.status,
        base_version=base.version,
        base_status=base.status,
        text=base.text,
        sections=sections,
        template=base.template,
        author=_person(session, author),
        signed_at=base.created_at,
        created_at=report.created_at,
        addenda=addenda,
        cosignatures=[
            Cosignature(_person(session, c.user), c.at, c.comment) for c in report.cosignatures
        ],
        reading_facility=reader_facility.name,
        reading_facility_code=reader_facility.code,
        reading_centre=case.centre.name if case.centre else "",
        timezone=case.centre.timezone if case.centre else "Asia/Shanghai",
        origin_facility=case.origin.name,
        origin_facility_code=case.origin.code,
        patient_name=patient.name if patient else "",
        patient_id=patient.patient_id if patient else "",
        patient_issuer=patient.issuer if patient else "",
        patient_sex=patient.sex if patient else "",
        patient_birth_date=patient.birth_date if patient else "",
        studies=studies,
        first_instance_key=first_key,
        predecessor_version=max(earlier_signed) if earlier_signed else None,
    )
