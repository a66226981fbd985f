"""The domain as the consortium speaks of it: facilities, reading centres, users, patients,
cases with their studies, reports and timeline, plus the outbox, tokens and the audit trail.

Enumerations are stored as short strings (portable between SQLite and PostgreSQL, readable in
psql); the allowed values live in the ``enum.StrEnum`` classes below.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from telehub.db.types import UTCDateTime, utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Tier(enum.StrEnum):
    VILLAGE = "village"
    TOWNSHIP = "township"
    COUNTY = "county"
    TERTIARY = "tertiary"


class Service(enum.StrEnum):
    """What a reading centre reads."""

    IMAGING = "imaging"
    ECG = "ecg"


class Role(enum.StrEnum):
    CLINIC = "clinic"
    READER = "reader"
    ADMIN = "admin"


class CaseKind(enum.StrEnum):
    IMAGING = "imaging"
    ECG = "ecg"
    CONSULTATION = "consultation"


class Priority(enum.StrEnum):
    STAT = "stat"
    URGENT = "urgent"
    ROUTINE = "routine"


#: Sort order of priorities on a worklist (lower first).
PRIORITY_RANK = {Priority.STAT: 0, Priority.URGENT: 1, Priority.ROUTINE: 2}


class CaseStatus(enum.StrEnum):
    RECEIVING = "receiving"  # instances arriving, study not yet complete
    COMPLETE = "complete"  # study complete, waiting for routing
    ROUTED = "routed"  # on a reading centre's worklist
    UNROUTABLE = "unroutable"  # no reading centre covers it; an admin must act
    CLAIMED = "claimed"
    PRELIMINARY = "preliminary"
    FINAL = "final"


class ReportStatus(enum.StrEnum):
    PRELIMINARY = "preliminary"
    FINAL = "final"
    ADDENDUM = "addendum"  # after a final report; the final stays as it was


class ClaimKind(enum.StrEnum):
    """How a case came to its reader."""

    CLAIM = "claim"  # the reader pulled it from the centre's worklist
    PUSH = "push"  # the hub assigned it (best available qualified reader)
    ADMIN = "admin"  # an admin reassigned it


class WebhookKind(enum.StrEnum):
    JSON = "json"  # generic JSON POST
    WECOM = "wecom"  # 企业微信 group robot
    DINGTALK = "dingtalk"  # 钉钉 group robot


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"  # retries exhausted; visible to admins


class ReferralDirection(enum.StrEnum):
    UP = "up"  # to a higher tier (上转)
    DOWN = "down"  # back to a lower tier, e.g. for rehabilitation (下转)


class ReferralStatus(enum.StrEnum):
    REQUESTED = "requested"
    ACCEPTED = "accepted"
    BOOKED = "booked"  # appointment, exam or bed booked
    COMPLETED = "completed"  # the patient arrived / was seen
    DECLINED = "declined"
    CANCELLED = "cancelled"


class BookingKind(enum.StrEnum):
    APPOINTMENT = "appointment"
    EXAM = "exam"
    BED = "bed"


def _check(column: str, values: type[enum.StrEnum]) -> CheckConstraint:
    allowed = ", ".join(f"'{v.value}'" for v in values)
    return CheckConstraint(f"{column} IN ({allowed})", name=column)


class Facility(Base):
    __tablename__ = "facilities"
    __table_args__ = (_check("tier", Tier),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    tier: Mapped[str] = mapped_column(String(16))
    #: The lead hospital responsible for this facility in the consortium grid.
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("facilities.id"))
    #: Calling AE title its modalities use; unique across the consortium.
    ae_title: Mapped[str | None] = mapped_column(String(16), unique=True)
    #: Where that AE title may call from: addresses or networks ("10.2.0.0/16, 192.0.2.7"),
    #: empty for anywhere. An AE title is easily copied; the address is a second check.
    dicom_networks: Mapped[str] = mapped_column(String(500), default="", server_default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ReadingCentre(Base):
    """A facility's readers for imaging (optionally only some modalities) or for ECG."""

    __tablename__ = "reading_centres"
    __table_args__ = (_check("service", Service),)

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Stable short name used by the consortium file and rules ("CH-IMG").
    code: Mapped[str] = mapped_column(String(32), unique=True)
    facility_id: Mapped[int] = mapped_column(ForeignKey("facilities.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    service: Mapped[str] = mapped_column(String(16))
    #: DICOM modality codes it reads; empty: every modality of its service.
    modalities: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: Subspecialties it offers ("neuro", "msk", "paediatric", ...).
    subspecialties: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: When it reads, e.g. "mon-fri 08:00-17:30; sat 08:00-12:00"; empty: around the clock.
    service_hours: Mapped[str] = mapped_column(String(200), default="", server_default="")
    timezone: Mapped[str] = mapped_column(
        String(64), default="Asia/Shanghai", server_default="Asia/Shanghai"
    )

    facility: Mapped[Facility] = relationship()


class ReadingLink(Base):
    """Which reading centre reads for which facility (and, optionally, only one modality)."""

    __tablename__ = "reading_links"
    __table_args__ = (UniqueConstraint("origin_facility_id", "centre_id", "modality"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    origin_facility_id: Mapped[int] = mapped_column(ForeignKey("facilities.id"), index=True)
    centre_id: Mapped[int] = mapped_column(ForeignKey("reading_centres.id"))
    #: A DICOM modality code (CT, MR, ...) or NULL for every modality the centre reads.
    modality: Mapped[str | None] = mapped_column(String(16))

    centre: Mapped[ReadingCentre] = relationship()


class User(Base):
    __tablename__ = "users"
    __table_args__ = (_check("role", Role),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    facility_id: Mapped[int] = mapped_column(ForeignKey("facilities.id"))
    #: For readers: the reading centre whose worklist they work from.
    centre_id: Mapped[int | None] = mapped_column(ForeignKey("reading_centres.id"))
    #: For readers: modality codes, "ECG" and subspecialties they are qualified for; empty:
    #: everything their centre reads.
    qualifications: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: For readers: may sign a final report (a resident writes preliminaries only).
    may_sign_final: Mapped[bool] = mapped_column(default=True, server_default="1")
    #: For readers: most open cases the hub pushes to them (STAT bypasses it); NULL: no cap.
    max_open_cases: Mapped[int | None] = mapped_column(Integer)
    #: For readers: available for push assignment now. Off until the reader (or an admin)
    #: turns it on; a centre with nobody on duty gets no push (see docs/worklists.md).
    on_duty: Mapped[bool] = mapped_column(default=False, server_default="0")
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ApiToken(Base):
    """A bearer token; only its SHA-256 is kept, so a database leak yields no usable token."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()


class EventTicket(Base):
    """A one-time, short-lived ticket for the live-update stream: a browser's EventSource
    cannot send an Authorization header, so it passes ``?ticket=`` instead."""

    __tablename__ = "event_tickets"

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()


class Patient(Base):
    """A patient as identified by (issuer, patient ID); the issuer defaults to the origin."""

    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("issuer", "patient_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    issuer: Mapped[str] = mapped_column(String(64))
    patient_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")


class Case(Base):
    __tablename__ = "cases"
    __table_args__ = (
        _check("kind", CaseKind),
        _check("priority", Priority),
        _check("status", CaseStatus),
        Index(
            "ix_cases_centre_worklist", "centre_id", "status", "priority_rank", "sla_deadline", "id"
        ),
        Index("ix_cases_reader_worklist", "reader_id", "status", "priority_rank", "sla_deadline"),
        Index("ix_cases_origin", "origin_facility_id", "arrived_at"),
        Index("ix_cases_status_deadline", "status", "sla_deadline"),
        Index("ix_cases_status_escalate", "status", "escalate_at"),
        Index("ix_cases_lease", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    origin_facility_id: Mapped[int] = mapped_column(ForeignKey("facilities.id"))
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    priority: Mapped[str] = mapped_column(String(16), default=Priority.ROUTINE.value)
    #: PRIORITY_RANK of ``priority``, kept beside it so the worklist index can sort on it.
    priority_rank: Mapped[int] = mapped_column(Integer, default=PRIORITY_RANK[Priority.ROUTINE])
    status: Mapped[str] = mapped_column(String(16), default=CaseStatus.RECEIVING.value)
    centre_id: Mapped[int | None] = mapped_column(ForeignKey("reading_centres.id"))
    reader_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    clinical_question: Mapped[str] = mapped_column(Text, default="")
    #: Body part examined (from the series), for routing rules.
    body_part: Mapped[str] = mapped_column(String(64), default="", server_default="")
    #: Subspecialty the sender asked for (or a rule set), e.g. "neuro"; empty: none.
    subspecialty: Mapped[str] = mapped_column(String(64), default="", server_default="")
    #: When the first piece of the case (first DICOM instance, ECG upload) arrived.
    arrived_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: When the report is due (SLA target of its priority, counted from complete).
    sla_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: When an unclaimed case goes up a tier automatically (a fraction of the SLA).
    escalate_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sla_warned_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sla_breached_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: How many times it went up a tier; a second opinion keeps the first reader's report.
    escalations: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    second_opinion: Mapped[bool] = mapped_column(default=False, server_default="0")
    claim_kind: Mapped[str | None] = mapped_column(String(16))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: The reader's hold on the case; back on the worklist when it passes unrenewed.
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    origin: Mapped[Facility] = relationship()
    patient: Mapped[Patient | None] = relationship()
    centre: Mapped[ReadingCentre | None] = relationship()
    reader: Mapped[User | None] = relationship()
    studies: Mapped[list[Study]] = relationship(back_populates="case", order_by="Study.id")
    reports: Mapped[list[Report]] = relationship(order_by="Report.version")
    ecgs: Mapped[list[EcgRecord]] = relationship(order_by="EcgRecord.id")
    events: Mapped[list[CaseEvent]] = relationship(order_by="CaseEvent.id")


#: A study still to complete (none yet, or grown since): the recovery sweep's condition
#: (telehub/recovery.py), kept in a partial index so the sweep reads only such studies.
STUDY_OPEN = text(
    "(completed_at IS NULL OR "
    "(completed_instance_count > 0 AND instance_count > completed_instance_count))"
)


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (
        Index(
            "ix_studies_open",
            "last_received_at",
            postgresql_where=STUDY_OPEN,
            sqlite_where=STUDY_OPEN,
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    accession_number: Mapped[str] = mapped_column(String(64), default="")
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_time: Mapped[str] = mapped_column(String(16), default="")
    description: Mapped[str] = mapped_column(String(200), default="")
    #: Backslash-separated modalities in the study, as DICOM's ModalitiesInStudy.
    modalities: Mapped[str] = mapped_column(String(64), default="")
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    first_received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: instance_count when the study was last marked complete (so a later batch shows growth).
    completed_instance_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    case: Mapped[Case] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(order_by="Series.id")


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(primary_key=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(String(200), default="")
    body_part: Mapped[str] = mapped_column(String(64), default="")
    instance_count: Mapped[int] = mapped_column(Integer, default=0)


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(primary_key=True)
    sop_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    instance_number: Mapped[int | None] = mapped_column(Integer)
    object_key: Mapped[str] = mapped_column(String(512))
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: How it came: "dimse:<calling AE>" or "stow:<username>".
    source: Mapped[str] = mapped_column(String(80), default="")


class EcgRecord(Base):
    """One ECG in a case: the original upload kept unchanged, the normalised waveform beside it,
    and the automated analysis (unconfirmed until a reader signs the report)."""

    __tablename__ = "ecg_records"

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    source_format: Mapped[str] = mapped_column(String(32))
    #: Object keys of the files exactly as uploaded (a WFDB record is several files).
    original_keys: Mapped[list[str]] = mapped_column(JSON)
    #: Object key of the normalised waveform (npz: leads in mV, float64).
    waveform_key: Mapped[str] = mapped_column(String(512))
    sampling_rate: Mapped[float] = mapped_column()
    lead_names: Mapped[list[str]] = mapped_column(JSON)
    duration_s: Mapped[float] = mapped_column()
    acquired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: SOP Instance UID when the ECG came as a DICOM waveform (C-STORE or STOW-RS).
    sop_uid: Mapped[str | None] = mapped_column(String(64), unique=True)
    analysis: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    analysed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    critical: Mapped[bool] = mapped_column(default=False)


class Report(Base):
    """One immutable version of a case's report; a new version is a new row."""

    __tablename__ = "reports"
    __table_args__ = (UniqueConstraint("case_id", "version"), _check("status", ReportStatus))

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    version: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    #: Template code it was written from, and its sections ({"findings": ..., ...}).
    template: Mapped[str] = mapped_column(String(64), default="", server_default="")
    sections: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    author: Mapped[User] = relationship()
    cosignatures: Mapped[list[ReportCosignature]] = relationship(order_by="ReportCosignature.id")


class ReportCosignature(Base):
    """A second reader (typically tertiary) countersigning a report version; the version
    itself never changes."""

    __tablename__ = "report_cosignatures"
    __table_args__ = (UniqueConstraint("report_id", "user_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    comment: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    user: Mapped[User] = relationship()


class ReportTemplate(Base):
    """A report skeleton per modality or for ECG: named sections with starting text."""

    __tablename__ = "report_templates"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    #: CaseKind it serves (imaging, ecg) and, for imaging, a modality code or NULL for any.
    kind: Mapped[str] = mapped_column(String(16))
    modality: Mapped[str | None] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(16), default="zh-CN")
    #: [{"key": "findings", "title": "检查所见 Findings", "text": "..."}, ...]
    sections: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(default=True)


class RoutingRule(Base):
    """Sends matching cases to a reading centre; tried in ``position`` order before the
    default (the origin's own county centre). An empty match list matches anything."""

    __tablename__ = "routing_rules"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    position: Mapped[int] = mapped_column(Integer, default=100)
    enabled: Mapped[bool] = mapped_column(default=True)
    kinds: Mapped[list[str]] = mapped_column(JSON, default=list)
    modalities: Mapped[list[str]] = mapped_column(JSON, default=list)
    body_parts: Mapped[list[str]] = mapped_column(JSON, default=list)
    subspecialties: Mapped[list[str]] = mapped_column(JSON, default=list)
    priorities: Mapped[list[str]] = mapped_column(JSON, default=list)
    origin_facility_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    origin_tiers: Mapped[list[str]] = mapped_column(JSON, default=list)
    centre_id: Mapped[int] = mapped_column(ForeignKey("reading_centres.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    centre: Mapped[ReadingCentre] = relationship()


class Notification(Base):
    """An in-app message to one user (new STAT case, SLA near breach, report signed, ...)."""

    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_user_unread", "user_id", "read_at", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    kind: Mapped[str] = mapped_column(String(40))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    title: Mapped[str] = mapped_column(String(300))
    body: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Webhook(Base):
    """An outgoing webhook: generic JSON, or a WeCom / DingTalk group robot."""

    __tablename__ = "webhooks"
    __table_args__ = (_check("kind", WebhookKind),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    url: Mapped[str] = mapped_column(String(1000))
    #: DingTalk signing secret, or the HMAC key of a generic webhook; empty: none.
    secret: Mapped[str] = mapped_column(String(200), default="")
    #: Notification kinds it receives; empty: all.
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: Only cases sent from or read at this facility; NULL: the whole consortium.
    facility_id: Mapped[int | None] = mapped_column(ForeignKey("facilities.id"))
    #: Patient names leave the hub only when an admin allows it for this webhook.
    include_patient_name: Mapped[bool] = mapped_column(default=False)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class WebhookDelivery(Base):
    """One message to one webhook, retried by Celery; failures stay for admins to see."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        _check("status", DeliveryStatus),
        Index("ix_webhook_deliveries_status", "status", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    case_id: Mapped[int | None] = mapped_column(ForeignKey("cases.id"))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Referral(Base):
    """Two-way referral (双向转诊) of a case's patient up or down a tier, tracked to the end."""

    __tablename__ = "referrals"
    __table_args__ = (
        _check("direction", ReferralDirection),
        _check("status", ReferralStatus),
        Index("ix_referrals_created", "created_at"),
        # A facility's incoming and outgoing referrals, newest first (migration 0011).
        Index("ix_referrals_from", "from_facility_id", "created_at"),
        Index("ix_referrals_to", "to_facility_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"))
    direction: Mapped[str] = mapped_column(String(8))
    from_facility_id: Mapped[int] = mapped_column(ForeignKey("facilities.id"))
    to_facility_id: Mapped[int] = mapped_column(ForeignKey("facilities.id"))
    reason: Mapped[str] = mapped_column(Text)
    #: What was booked at the receiving side: BookingKind, when, and its reference.
    booking_kind: Mapped[str | None] = mapped_column(String(16))
    booking_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    booking_ref: Mapped[str] = mapped_column(String(100), default="")
    status: Mapped[str] = mapped_column(String(16), default=ReferralStatus.REQUESTED.value)
    created_by: Mapped[int] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CaseEvent(Base):
    """The case timeline: append-only, the single source of truth for turnaround times."""

    __tablename__ = "case_events"
    __table_args__ = (Index("ix_case_events_case_kind", "case_id", "kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(40))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# Analytics and priors (migration 0011), declared here rather than in the tables' own arguments:
# cases of a period over the whole consortium (TAT, figures), escalation events of a period
# (figures), and a patient ID under any issuer (priors with patient_match = "id").
Index("ix_cases_arrived_at", Case.arrived_at)
Index("ix_case_events_kind_at", CaseEvent.kind, CaseEvent.at)
Index("ix_patients_patient_id", Patient.patient_id)


class OutboxMessage(Base):
    """Work that must reach a Celery worker; written in the same transaction as its cause.

    A relay publishes rows whose ``due_at`` has passed; the task marks ``done_at``. A row that
    was published but never finished (broker lost it, worker died) is published again.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "done_at", "due_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    task: Mapped[str] = mapped_column(String(100))
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class AuditEntry(Base):
    """Append-only record of who read or changed patient data, when and from where."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_resource", "resource_type", "resource_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    action: Mapped[str] = mapped_column(String(40))
    resource_type: Mapped[str] = mapped_column(String(40))
    resource_id: Mapped[str] = mapped_column(String(80), default="")
    remote: Mapped[str] = mapped_column(String(80), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class SeriesMetadata(Base):
    """A series' DICOMweb metadata, built once and kept in the object store (OHIF asks for every
    series' metadata when a study opens). Stale when the series has more instances than built."""

    __tablename__ = "dicomweb_series_metadata"

    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), primary_key=True)
    #: The series' instance count the object was built from (instances are only ever added).
    instance_count: Mapped[int] = mapped_column(Integer)
    object_key: Mapped[str] = mapped_column(String(512))
    size: Mapped[int] = mapped_column(BigInteger)
    built_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DicomNode(Base):
    """A DICOM peer the hub may C-MOVE to (a workstation or PACS of a member facility);
    destinations are only these, never an address taken from a request."""

    __tablename__ = "dicom_nodes"

    id: Mapped[int] = mapped_column(primary_key=True)
    ae_title: Mapped[str] = mapped_column(String(16), unique=True)
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    #: The facility the node belongs to; only that facility's AE titles may move to it.
    facility_id: Mapped[int] = mapped_column(ForeignKey("facilities.id"), index=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UploadState(enum.StrEnum):
    RECEIVING = "receiving"  # bytes arriving (or all there, not yet processed)
    PROCESSING = "processing"  # the assembled body is being stored
    DONE = "done"  # processed; ``result`` holds the answer, the spool file is gone


class Upload(Base):
    """A resumable upload session (tus-style) owned by one user: the body is spooled on the
    hub's disk, each acknowledged offset fsynced; processed once, its answer kept for repeats."""

    __tablename__ = "uploads"
    __table_args__ = (_check("state", UploadState),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    content_type: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str | None] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(16), default=UploadState.RECEIVING.value)
    #: The processing answer (STOW-RS DICOM JSON, or an error) and its HTTP status.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    result_status: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    processing_since: Mapped[datetime | None] = mapped_column(UTCDateTime)


# ----- consults (issue 6, migration 0012) ----------------------------------------------------
class ConsultKind(enum.StrEnum):
    ADHOC = "adhoc"  # "call the county ECG centre now"
    SCHEDULED = "scheduled"


class ConsultStatus(enum.StrEnum):
    OPEN = "open"  # joinable (a scheduled one too: its time is advisory)
    ENDED = "ended"


class ParticipantState(enum.StrEnum):
    INVITED = "invited"  # has a row, never connected (or holds only a token)
    WAITING = "waiting"  # connected, in the waiting room
    ADMITTED = "admitted"  # in the call now
    LEFT = "left"


class Consult(Base):
    """A live video consult (交互式会诊) on a case: its host, invitees and time in the call."""

    __tablename__ = "consults"
    __table_args__ = (_check("kind", ConsultKind), _check("status", ConsultStatus))

    id: Mapped[int] = mapped_column(primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=ConsultStatus.OPEN.value)
    host_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    #: A reading centre invited as a whole: any of its readers may join.
    centre_id: Mapped[int | None] = mapped_column(ForeignKey("reading_centres.id"))
    #: Invitees go straight into the call instead of the waiting room.
    auto_admit: Mapped[bool] = mapped_column(default=False)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: When two participants were first in the call together (the consult became interactive).
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    recording: Mapped[bool] = mapped_column(default=False)

    participants: Mapped[list[ConsultParticipant]] = relationship(order_by="ConsultParticipant.id")


class ConsultParticipant(Base):
    """One user's place in a consult; its id is the participant id on the signaling socket."""

    __tablename__ = "consult_participants"
    __table_args__ = (
        UniqueConstraint("consult_id", "user_id"),
        _check("state", ParticipantState),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    consult_id: Mapped[int] = mapped_column(ForeignKey("consults.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    #: "host" (the creator) or "guest".
    role: Mapped[str] = mapped_column(String(16), default="guest")
    #: Named in the invitation (by username or centre), rather than only able to see the case.
    invited: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(String(16), default=ParticipantState.INVITED.value)
    #: Consent to recording: None not asked yet, True given, False withdrawn or refused.
    consent: Mapped[bool | None] = mapped_column()
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: First admission; once admitted, a rejoin skips the waiting room.
    admitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    joined_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    left_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    #: Time in the call over all of this participant's joins.
    seconds: Mapped[float] = mapped_column(default=0.0)

    user: Mapped[User] = relationship()


class ConsultToken(Base):
    """A join token for the signaling socket, bound to (consult, user); only its SHA-256 is
    kept. A browser's WebSocket cannot send an Authorization header, so this is its auth."""

    __tablename__ = "consult_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    consult_id: Mapped[int] = mapped_column(ForeignKey("consults.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LoginThrottle(Base):
    """Failed logins per attempted username (known or not, so a lockout reveals nothing about
    which accounts exist); kept in the database so every hub process sees the same count."""

    __tablename__ = "login_throttles"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    #: Start of the window the failures are counted in.
    first_failure_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: Logins answer 429 account_locked until then; NULL: not locked.
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
