"""Ingest: a received instance goes to the object store, then into the index, in that order.

Protocol adapters (C-STORE, later STOW-RS) decode their protocol, fill an :class:`InstanceMeta`
and call :func:`store_instance`; they report success only when it returns. When a transfer ends
(association release, end of a STOW request) they call :func:`complete_studies`, which marks the
studies complete and leaves a routing job in the outbox in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from telehub import outbox, timeline
from telehub.db import Database
from telehub.db.models import (
    PRIORITY_RANK,
    Case,
    CaseKind,
    CaseStatus,
    Instance,
    Priority,
    Series,
    Study,
)
from telehub.db.types import utcnow
from telehub.patients import patient_for
from telehub.store import ObjectStore, instance_key, remove_orphans

log = logging.getLogger(__name__)

ROUTE_TASK = "telehub.route_case"
ECG_FROM_DICOM_TASK = "telehub.ecg_from_dicom"
_INDEX_ATTEMPTS = 5


@dataclass(frozen=True)
class InstanceMeta:
    """What the index keeps of an instance, already decoded to text by the adapter."""

    sop_class_uid: str
    sop_uid: str
    study_uid: str
    series_uid: str
    transfer_syntax_uid: str
    modality: str = ""
    patient_id: str = ""
    issuer_of_patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    accession_number: str = ""
    study_date: str = ""
    study_time: str = ""
    study_description: str = ""
    series_number: int | None = None
    series_description: str = ""
    body_part: str = ""
    instance_number: int | None = None


@dataclass(frozen=True)
class StoreOutcome:
    instance_id: int
    case_id: int
    duplicate: bool


def store_instance(
    db: Database,
    store: ObjectStore,
    facility_id: int,
    meta: InstanceMeta,
    path: Path,
    source: str,
) -> StoreOutcome:
    """Durably store and index one instance; raises on any failure (report failure then).

    A SOP Instance UID already in the index is acknowledged again without a second copy.
    """
    existing = _find_instance(db, meta.sop_uid)
    if existing is not None:
        return existing
    key = instance_key(meta.study_uid, meta.series_uid, meta.sop_uid)
    stored = store.put_file(key, path)
    try:
        for attempt in range(_INDEX_ATTEMPTS):
            try:
                with db.session() as session:
                    return _index(
                        session, facility_id, meta, key, stored.size, stored.sha256, source
                    )
            except IntegrityError:
                # A concurrent association created the same patient/study/series/instance
                # first; the retry finds it. The same SOP UID means a concurrent duplicate.
                existing = _find_instance(db, meta.sop_uid)
                if existing is not None:
                    return existing
                if attempt == _INDEX_ATTEMPTS - 1:
                    raise
        raise RuntimeError("unreachable")
    except BaseException:
        # Not indexed: the object would be an orphan nobody can find, so remove it.
        if _find_instance(db, meta.sop_uid) is None:
            remove_orphans(store, [key])
        raise


def _find_instance(db: Database, sop_uid: str) -> StoreOutcome | None:
    with db.reader() as session:
        row = session.execute(
            select(Instance.id, Study.case_id)
            .join(Series, Series.id == Instance.series_id)
            .join(Study, Study.id == Series.study_id)
            .where(Instance.sop_uid == sop_uid)
        ).first()
    return StoreOutcome(row[0], row[1], duplicate=True) if row else None


def _index(
    session: Session,
    facility_id: int,
    meta: InstanceMeta,
    key: str,
    size: int,
    sha256: str,
    source: str,
) -> StoreOutcome:
    now = utcnow()
    patient = patient_for(
        session,
        facility_id,
        meta.patient_id,
        meta.issuer_of_patient_id,
        meta.patient_name,
        meta.patient_birth_date,
        meta.patient_sex,
    )
    study = session.scalar(select(Study).where(Study.study_uid == meta.study_uid))
    if study is None:
        case = Case(
            origin_facility_id=facility_id,
            patient_id=patient.id if patient else None,
            kind=CaseKind.ECG.value if meta.modality == "ECG" else CaseKind.IMAGING.value,
            priority=Priority.ROUTINE.value,
            priority_rank=PRIORITY_RANK[Priority.ROUTINE],
            status=CaseStatus.RECEIVING.value,
            arrived_at=now,
        )
        session.add(case)
        session.flush()
        study = Study(
            study_uid=meta.study_uid,
            case_id=case.id,
            patient_id=patient.id if patient else None,
            accession_number=meta.accession_number,
            study_date=meta.study_date,
            study_time=meta.study_time,
            description=meta.study_description,
            first_received_at=now,
            last_received_at=now,
            instance_count=0,
            modalities="",
        )
        session.add(study)
        session.flush()
        timeline.record(
            session,
            case.id,
            timeline.Event.FIRST_INSTANCE,
            at=now,
            study_uid=meta.study_uid,
            source=source,
        )
    series = session.scalar(select(Series).where(Series.series_uid == meta.series_uid))
    if series is None:
        series = Series(
            series_uid=meta.series_uid,
            study_id=study.id,
            modality=meta.modality,
            series_number=meta.series_number,
            description=meta.series_description,
            body_part=meta.body_part,
            instance_count=0,
        )
        session.add(series)
        session.flush()
    elif series.study_id != study.id:
        raise ValueError(f"series {meta.series_uid} already belongs to another study")
    instance = Instance(
        sop_uid=meta.sop_uid,
        series_id=series.id,
        sop_class_uid=meta.sop_class_uid,
        transfer_syntax_uid=meta.transfer_syntax_uid,
        instance_number=meta.instance_number,
        object_key=key,
        size=size,
        sha256=sha256,
        received_at=now,
        source=source[:80],
    )
    session.add(instance)
    series.instance_count += 1
    study.instance_count += 1
    study.last_received_at = now
    if meta.modality and meta.modality not in study.modalities.split("\\"):
        study.modalities = "\\".join(m for m in (*study.modalities.split("\\"), meta.modality) if m)
    session.flush()
    return StoreOutcome(instance_id=instance.id, case_id=study.case_id, duplicate=False)


def complete_studies(db: Database, study_uids: Iterable[str], reason: str) -> list[int]:
    """Mark studies complete and queue their routing; returns the ids of cases newly complete.

    Calling it again for a complete study only records that the study grew, if it did.
    """
    newly_complete: list[int] = []
    for study_uid in sorted(set(study_uids)):
        with db.session() as session:
            study = session.scalar(select(Study).where(Study.study_uid == study_uid))
            if study is None:
                continue
            case = session.get(Case, study.case_id)
            assert case is not None
            now = utcnow()
            if study.completed_at is None:
                study.completed_at = now
                timeline.record(
                    session,
                    case.id,
                    timeline.Event.STUDY_COMPLETE,
                    at=now,
                    study_uid=study_uid,
                    instances=study.instance_count,
                    reason=reason,
                )
                if case.status == CaseStatus.RECEIVING.value:
                    case.status = CaseStatus.COMPLETE.value
                    outbox.enqueue(session, ROUTE_TASK, case_id=case.id)
                    newly_complete.append(case.id)
            else:
                timeline.record(
                    session,
                    case.id,
                    timeline.Event.STUDY_GREW,
                    at=now,
                    study_uid=study_uid,
                    instances=study.instance_count,
                    reason=reason,
                )
            if case.kind == CaseKind.ECG.value:
                outbox.enqueue(session, ECG_FROM_DICOM_TASK, case_id=case.id)
    return newly_complete
