"""ECG cases: an uploaded ECG becomes a case for the origin's ECG reading centre; its automated
analysis is recorded and a critical finding raises the case to STAT.

The adapters (``ecg/`` readers, the HTTP upload, the Celery task) decode and analyse; this module
only stores, indexes and changes state, like :mod:`telehub.ingest` does for DICOM.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from telehub import audit, outbox, sla, timeline
from telehub.access import visible_to
from telehub.auth import Principal
from telehub.config import Settings
from telehub.db import Database
from telehub.db.models import (
    PRIORITY_RANK,
    Case,
    CaseKind,
    CaseStatus,
    EcgRecord,
    Priority,
)
from telehub.db.types import utcnow
from telehub.errors import Invalid, NotFound
from telehub.ingest import ROUTE_TASK
from telehub.patients import patient_for
from telehub.store import ObjectStore, remove_orphans

log = logging.getLogger(__name__)

ANALYSE_TASK = "telehub.analyse_ecg"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class EcgUpload:
    """What the adapter decoded, as plain values."""

    source_format: str
    sampling_rate: float
    lead_names: list[str]
    duration_s: float
    acquired_at: datetime | None
    patient_id: str = ""
    patient_name: str = ""
    patient_sex: str = ""
    patient_birth_date: str = ""
    sop_uid: str | None = None


def _safe_name(name: str) -> str:
    cleaned = _SAFE.sub("_", Path(name).name).strip("._") or "file"
    return cleaned[:100]


def store_upload(
    db: Database,
    store: ObjectStore,
    facility_id: int,
    upload: EcgUpload,
    originals: Mapping[str, Path],
    waveform: bytes,
    *,
    priority: str = Priority.ROUTINE.value,
    clinical_question: str = "",
    actor_id: int | None = None,
    source: str = "",
) -> tuple[int, int]:
    """Store the files unchanged and the normalised waveform, then create the case, its ECG row
    and the routing and analysis jobs in one transaction. Returns (case id, ECG id)."""
    if priority not in PRIORITY_RANK:
        raise Invalid(f"priority must be one of {', '.join(PRIORITY_RANK)}", "bad_priority")
    folder = f"ecg/{utcnow():%Y/%m/%d}/{uuid.uuid4().hex}"
    keys: list[str] = []
    try:
        for index, (name, path) in enumerate(sorted(originals.items())):
            key = f"{folder}/original/{index:02d}-{_safe_name(name)}"
            store.put_file(key, path)
            keys.append(key)
        waveform_key = f"{folder}/waveform.npz"
        store.put_bytes(waveform_key, waveform)
        keys.append(waveform_key)
        now = utcnow()
        with db.session() as session:
            patient = patient_for(
                session,
                facility_id,
                upload.patient_id,
                "",
                upload.patient_name,
                upload.patient_birth_date,
                upload.patient_sex,
            )
            case = Case(
                origin_facility_id=facility_id,
                patient_id=patient.id if patient else None,
                kind=CaseKind.ECG.value,
                priority=priority,
                priority_rank=PRIORITY_RANK[Priority(priority)],
                status=CaseStatus.COMPLETE.value,
                clinical_question=clinical_question[:4000],
                arrived_at=now,
            )
            session.add(case)
            session.flush()
            record = EcgRecord(
                case_id=case.id,
                source_format=upload.source_format,
                original_keys=keys[:-1],
                waveform_key=waveform_key,
                sampling_rate=upload.sampling_rate,
                lead_names=upload.lead_names,
                duration_s=upload.duration_s,
                acquired_at=upload.acquired_at,
                received_at=now,
                sop_uid=upload.sop_uid,
            )
            session.add(record)
            session.flush()
            # An upload arrives whole: it is its own first piece and its completion.
            timeline.record(
                session,
                case.id,
                timeline.Event.FIRST_INSTANCE,
                at=now,
                actor_id=actor_id,
                source=source,
                ecg_id=record.id,
            )
            timeline.record(
                session,
                case.id,
                timeline.Event.STUDY_COMPLETE,
                at=now,
                actor_id=actor_id,
                reason="ECG upload",
                format=upload.source_format,
                leads=len(upload.lead_names),
            )
            # Routing first: it is quick and puts the case on the worklist; analysis may take
            # a second and can only raise the priority of a case already there.
            outbox.enqueue(session, ROUTE_TASK, case_id=case.id)
            outbox.enqueue(session, ANALYSE_TASK, ecg_id=record.id)
            return case.id, record.id
    except BaseException:
        remove_orphans(store, keys)  # nothing half-stored
        raise


def waveform_key(db: Database, ecg_id: int) -> str | None:
    with db.reader() as session:
        return session.scalar(select(EcgRecord.waveform_key).where(EcgRecord.id == ecg_id))


def record_analysis(
    db: Database,
    ecg_id: int,
    analysis: dict[str, Any],
    critical: bool,
    outbox_id: int | None = None,
    settings: Settings | None = None,
) -> bool:
    """Keep the first analysis of an ECG; a critical one raises its case to STAT (and moves
    its SLA deadline to STAT's).

    Returns False when the ECG was already analysed (a repeated task changes nothing)."""
    with db.session() as session:
        record = session.get(EcgRecord, ecg_id, with_for_update=not db.is_sqlite)
        if record is None or record.analysed_at is not None:
            outbox.mark_done(session, outbox_id)
            return False
        record.analysis = analysis
        record.analysed_at = utcnow()
        record.critical = critical
        findings = [f.get("code") for f in analysis.get("findings", []) if isinstance(f, dict)]
        timeline.record(
            session,
            record.case_id,
            timeline.Event.ECG_ANALYSED,
            ecg_id=ecg_id,
            critical=critical,
            findings=findings,
            heart_rate_bpm=analysis.get("heart_rate_bpm"),
        )
        if critical:
            raised = session.execute(
                update(Case)
                .where(Case.id == record.case_id, Case.priority != Priority.STAT.value)
                .values(priority=Priority.STAT.value, priority_rank=PRIORITY_RANK[Priority.STAT])
                .execution_options(synchronize_session=False)
            ).rowcount
            if raised:
                case = session.get_one(Case, record.case_id)
                session.refresh(case)
                sla.reprioritise(settings or Settings(), session, case)
                timeline.record(
                    session,
                    record.case_id,
                    timeline.Event.PRIORITY_RAISED,
                    priority=Priority.STAT.value,
                    reason="critical ECG finding",
                    findings=findings,
                )
        outbox.mark_done(session, outbox_id)
        return True


def describe(record: EcgRecord) -> dict[str, Any]:
    analysis = record.analysis
    return {
        "id": record.id,
        "case_id": record.case_id,
        "source_format": record.source_format,
        "sampling_rate": record.sampling_rate,
        "lead_names": record.lead_names,
        "duration_s": record.duration_s,
        "acquired_at": record.acquired_at.isoformat() if record.acquired_at else None,
        "received_at": record.received_at.isoformat(),
        "analysed_at": record.analysed_at.isoformat() if record.analysed_at else None,
        "critical": record.critical,
        # Automated measurements stay labelled unconfirmed until a reader signs the report.
        "analysis": (
            {**analysis, "automated": True, "confirmed": False} if analysis is not None else None
        ),
    }


def visible_ecg(
    db: Database, principal: Principal, ecg_id: int, remote: str, action: str = "read"
) -> dict[str, Any]:
    """The ECG if the caller may see its case (else NotFound, as for a missing one); audited."""
    with db.session() as session:
        record = session.scalar(
            select(EcgRecord)
            .join(Case, Case.id == EcgRecord.case_id)
            .where(EcgRecord.id == ecg_id, visible_to(principal))
        )
        if record is None:
            raise NotFound(f"ECG {ecg_id} not found")
        audit.record(
            session, principal.user_id, action, "ecg", ecg_id, remote=remote, case_id=record.case_id
        )
        return {**describe(record), "waveform_key": record.waveform_key}


#: SOP classes whose instances are ECG waveforms (12-lead, general, ambulatory).
ECG_SOP_CLASSES = (
    "1.2.840.10008.5.1.4.1.1.9.1.1",
    "1.2.840.10008.5.1.4.1.1.9.1.2",
    "1.2.840.10008.5.1.4.1.1.9.1.3",
)


def dicom_ecg_instances(db: Database, case_id: int) -> list[tuple[str, str]]:
    """(SOP Instance UID, object key) of the case's ECG waveform instances not yet extracted."""
    from telehub.db.models import Instance, Series, Study

    with db.reader() as session:
        rows = session.execute(
            select(Instance.sop_uid, Instance.object_key)
            .join(Series, Series.id == Instance.series_id)
            .join(Study, Study.id == Series.study_id)
            .outerjoin(EcgRecord, EcgRecord.sop_uid == Instance.sop_uid)
            .where(
                Study.case_id == case_id,
                Instance.sop_class_uid.in_(ECG_SOP_CLASSES),
                EcgRecord.id.is_(None),
            )
            .order_by(Instance.id)
        ).all()
    return [(sop_uid, key) for sop_uid, key in rows]


def add_dicom_ecg(
    db: Database,
    store: ObjectStore,
    case_id: int,
    object_key: str,
    upload: EcgUpload,
    waveform: bytes,
) -> int | None:
    """Index an ECG that arrived as a DICOM waveform (the instance is its original); idempotent
    by SOP Instance UID. Returns the new ECG id, or None if it was already there."""
    with db.reader() as session:
        if session.scalar(select(EcgRecord.id).where(EcgRecord.sop_uid == upload.sop_uid)):
            return None
    key = f"{object_key.rsplit('.', 1)[0]}.waveform.npz"
    store.put_bytes(key, waveform)
    with db.session() as session:
        if session.scalar(select(EcgRecord.id).where(EcgRecord.sop_uid == upload.sop_uid)):
            return None
        record = EcgRecord(
            case_id=case_id,
            source_format=upload.source_format,
            original_keys=[object_key],
            waveform_key=key,
            sampling_rate=upload.sampling_rate,
            lead_names=upload.lead_names,
            duration_s=upload.duration_s,
            acquired_at=upload.acquired_at,
            sop_uid=upload.sop_uid,
        )
        session.add(record)
        session.flush()
        outbox.enqueue(session, ANALYSE_TASK, ecg_id=record.id)
        return record.id
