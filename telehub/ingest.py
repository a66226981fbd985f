"""Ingest: a received instance goes to the object store, then into the index, in that order.

Protocol adapters (C-STORE, later STOW-RS) decode their protocol, fill an :class:`InstanceMeta`
and call :func:`store_instance`; they report success only when it returns. When a transfer ends
(association release, end of a STOW request) they call :func:`complete_studies`, which marks the
studies complete and leaves a routing job in the outbox in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from telehub import outbox, timeline
from telehub.db import Database, Sql
from telehub.db.models import (
    PRIORITY_RANK,
    Case,
    CaseKind,
    CaseStatus,
    Instance,
    OutboxMessage,
    Priority,
    Series,
    Study,
)
from telehub.db.types import utcnow
from telehub.patients import patient_for
from telehub.store import ObjectStore, Stored, file_sha256, instance_key, remove_orphans

log = logging.getLogger(__name__)

ROUTE_TASK = "telehub.route_case"
ECG_FROM_DICOM_TASK = "telehub.ecg_from_dicom"
COMPLETE_IF_QUIET_TASK = "telehub.complete_if_quiet"
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
    #: For a re-sent instance with other content: "kept_first" or "replaced".
    resend: str = ""


@dataclass
class IngestCache:
    """What one transfer (an association, a STOW request) already wrote to the index.

    A study's second and later instances then cost one insert and two counter updates instead
    of the patient/study/series look-ups. Filled only from committed rows, so it is never wrong.
    """

    studies: dict[str, tuple[int, int, set[str]]] = field(default_factory=dict)
    series: dict[str, int] = field(default_factory=dict)


class ForeignStudy(Exception):
    """The instance belongs to a study (or is an instance) of another facility's case.

    Study and SOP Instance UIDs are global, so a second facility sending one is a misconfigured
    device or a copied study; letting it in would grow (or, by the duplicate policy, replace
    data in) a case the sender may not see. It is refused as "not authorised" (0x0124) and
    nothing is written; a study copied on purpose is sent with new UIDs, or referred.
    """

    status = 0x0124


class DuplicatePolicy(StrEnum):
    """What a re-sent SOP Instance UID with *different* content does (same content is always
    acknowledged without a second copy)."""

    KEEP_FIRST = "keep"
    REPLACE = "replace"


def store_instance(
    db: Database,
    store: ObjectStore,
    facility_id: int,
    meta: InstanceMeta,
    path: Path,
    source: str,
    cache: IngestCache | None = None,
    duplicates: DuplicatePolicy = DuplicatePolicy.KEEP_FIRST,
    known: Stored | None = None,
) -> StoreOutcome:
    """Durably store and index one instance; raises on any failure (report failure then).
    ``known``: the file's size and SHA-256, when the caller hashed it as it wrote it.

    A SOP Instance UID already in the index is found before anything is written: the same bytes
    are acknowledged again without a second copy; other bytes are kept out or replace the first
    copy, by ``duplicates``, and either way the case's timeline says so.
    """
    existing = _find_instance(db, meta.sop_uid)
    if existing is not None:
        if existing.origin_facility_id != facility_id:
            raise ForeignStudy(f"instance {meta.sop_uid} belongs to another facility's case")
        return _resent(db, store, existing, meta, path, source, duplicates, known)
    key = instance_key(meta.study_uid, meta.series_uid, meta.sop_uid)
    stored = store.put_file(key, path, known)
    try:
        for attempt in range(_INDEX_ATTEMPTS):
            try:
                return _index_cached(db, facility_id, meta, key, stored, source, cache)
            except IntegrityError:
                # A concurrent association created the same patient/study/series/instance
                # first; the retry finds it. The same SOP UID means a concurrent duplicate.
                if cache is not None:
                    cache.studies.pop(meta.study_uid, None)
                    cache.series.pop(meta.series_uid, None)
                found = _find_instance(db, meta.sop_uid)
                if found is not None:
                    return StoreOutcome(found.instance_id, found.case_id, duplicate=True)
                if attempt == _INDEX_ATTEMPTS - 1:
                    raise
        raise RuntimeError("unreachable")
    except BaseException:
        # Not indexed: the object would be an orphan nobody can find, so remove it.
        if _find_instance(db, meta.sop_uid) is None:
            remove_orphans(store, [key])
        raise


@dataclass(frozen=True)
class _Existing:
    instance_id: int
    case_id: int
    sha256: str
    object_key: str
    origin_facility_id: int


# The hot path's statements, as plain SQL on a DBAPI cursor (Core's per-statement work cost more
# than running them); the tables and columns are the models' (``tests/test_ingest_sql.py``).
_FIND_INSTANCE = Sql(
    """SELECT instances.id, studies.case_id, instances.sha256, instances.object_key,
              cases.origin_facility_id
       FROM instances
       JOIN series ON series.id = instances.series_id
       JOIN studies ON studies.id = series.study_id
       JOIN cases ON cases.id = studies.case_id
       WHERE instances.sop_uid = :sop_uid"""
)
_INSERT_INSTANCE = Sql(
    """INSERT INTO instances (sop_uid, series_id, sop_class_uid, transfer_syntax_uid,
                              instance_number, object_key, size, sha256, received_at, source)
       VALUES (:sop_uid, :series_id, :sop_class_uid, :transfer_syntax_uid, :instance_number,
               :object_key, :size, :sha256, :received_at, :source)
       RETURNING id"""
)
_COUNT_SERIES = Sql("UPDATE series SET instance_count = instance_count + 1 WHERE id = :series_id")
_COUNT_STUDY = Sql(
    """UPDATE studies SET instance_count = instance_count + 1, last_received_at = :now
       WHERE id = :study_id"""
)
_SET_MODALITIES = Sql("UPDATE studies SET modalities = :modalities WHERE id = :study_id")


_FIND_SERIES = Sql(
    """SELECT series.id, studies.id, studies.case_id, studies.modalities
       FROM series
       JOIN studies ON studies.id = series.study_id
       JOIN cases ON cases.id = studies.case_id
       WHERE series.series_uid = :series_uid AND studies.study_uid = :study_uid
         AND cases.origin_facility_id = :facility_id"""
)


def _existing_series(
    db: Database, facility_id: int, meta: InstanceMeta
) -> tuple[tuple[int, int, set[str]], int] | None:
    """The cache entries for an indexed series of this study and facility; None for anything
    else (new series, another facility's study, a series under another study), which the full
    path creates or refuses."""
    with db.cursor(write=False) as cursor:
        cursor.execute(
            db.sql(_FIND_SERIES),
            {
                "series_uid": meta.series_uid,
                "study_uid": meta.study_uid,
                "facility_id": facility_id,
            },
        )
        row = cursor.fetchone()
    if row is None:
        return None
    series_id, study_id, case_id, modalities = row
    return (study_id, case_id, set(filter(None, modalities.split("\\")))), series_id


def _find_instance(db: Database, sop_uid: str) -> _Existing | None:
    with db.cursor(write=False) as cursor:
        cursor.execute(db.sql(_FIND_INSTANCE), {"sop_uid": sop_uid})
        row = cursor.fetchone()
    return _Existing(*row) if row else None


def _resent(
    db: Database,
    store: ObjectStore,
    existing: _Existing,
    meta: InstanceMeta,
    path: Path,
    source: str,
    duplicates: DuplicatePolicy,
    known: Stored | None,
) -> StoreOutcome:
    sha256 = known.sha256 if known else file_sha256(path)
    if sha256 == existing.sha256:
        return StoreOutcome(existing.instance_id, existing.case_id, duplicate=True)
    action = "replaced" if duplicates is DuplicatePolicy.REPLACE else "kept_first"
    if duplicates is DuplicatePolicy.REPLACE:
        # Same key: the store's atomic replace leaves the first copy or the second, never
        # neither; the index row follows in the transaction below.
        stored = store.put_file(existing.object_key, path, known)
    with db.session() as session:
        if duplicates is DuplicatePolicy.REPLACE:
            session.execute(
                update(Instance)
                .where(Instance.id == existing.instance_id)
                .values(
                    sha256=stored.sha256,
                    size=stored.size,
                    transfer_syntax_uid=meta.transfer_syntax_uid,
                    received_at=utcnow(),
                    source=source[:80],
                )
            )
        timeline.record(
            session,
            existing.case_id,
            timeline.Event.INSTANCE_RESENT,
            sop_uid=meta.sop_uid,
            source=source,
            action=action,
            first_sha256=existing.sha256,
            resent_sha256=sha256,
        )
    log.warning(
        "SOP instance %s re-sent with other content by %s: %s", meta.sop_uid, source, action
    )
    return StoreOutcome(existing.instance_id, existing.case_id, duplicate=True, resend=action)


def _index_cached(
    db: Database,
    facility_id: int,
    meta: InstanceMeta,
    key: str,
    stored: Stored,
    source: str,
    cache: IngestCache | None,
) -> StoreOutcome:
    known = cache.studies.get(meta.study_uid) if cache is not None else None
    series_id = cache.series.get(meta.series_uid) if cache is not None else None
    if (known is None or series_id is None) and cache is not None:
        # A new transfer into a series already indexed (a modality that opens an association
        # per image does this for every image): its committed rows fill the cache at once.
        found = _existing_series(db, facility_id, meta)
        if found is not None:
            known, series_id = found
            cache.studies[meta.study_uid] = known
            cache.series[meta.series_uid] = series_id
    if known is None or series_id is None:
        with db.session() as session:
            outcome, study, series = _index(
                session, facility_id, meta, key, stored.size, stored.sha256, source
            )
            study_id, series_id = study.id, series.id
            modalities = set(study.modalities.split("\\"))
        if cache is not None:
            cache.studies[meta.study_uid] = (study_id, outcome.case_id, modalities)
            cache.series[meta.series_uid] = series_id
        return outcome
    study_id, case_id, modalities = known
    now = db.bind_time(utcnow())
    with db.cursor() as cursor:
        cursor.execute(
            db.sql(_INSERT_INSTANCE),
            {
                "sop_uid": meta.sop_uid,
                "series_id": series_id,
                "sop_class_uid": meta.sop_class_uid,
                "transfer_syntax_uid": meta.transfer_syntax_uid,
                "instance_number": meta.instance_number,
                "object_key": key,
                "size": stored.size,
                "sha256": stored.sha256,
                "received_at": now,
                "source": source[:80],
            },
        )
        instance_id = cursor.fetchone()[0]
        cursor.execute(db.sql(_COUNT_SERIES), {"series_id": series_id})
        cursor.execute(db.sql(_COUNT_STUDY), {"study_id": study_id, "now": now})
        new_modality = meta.modality and meta.modality not in modalities
        if new_modality:
            joined = "\\".join(sorted(m for m in (*modalities, meta.modality) if m))
            cursor.execute(db.sql(_SET_MODALITIES), {"modalities": joined, "study_id": study_id})
    if new_modality:
        modalities.add(meta.modality)
    return StoreOutcome(instance_id=instance_id, case_id=case_id, duplicate=False)


def _index(
    session: Session,
    facility_id: int,
    meta: InstanceMeta,
    key: str,
    size: int,
    sha256: str,
    source: str,
) -> tuple[StoreOutcome, Study, Series]:
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
    if study is not None and facility_id != session.scalar(
        select(Case.origin_facility_id).where(Case.id == study.case_id)
    ):
        raise ForeignStudy(f"study {meta.study_uid} belongs to another facility's case")
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
    outcome = StoreOutcome(instance_id=instance.id, case_id=study.case_id, duplicate=False)
    return outcome, study, series


def complete_studies(
    db: Database, study_uids: Iterable[str], reason: str, quiet_seconds: float = 0.0
) -> list[int]:
    """Mark studies complete and queue their routing; returns the ids of cases newly complete.

    With ``quiet_seconds`` the decision waits, in the outbox (so a restart loses nothing), until
    no instance has arrived for that long. Calling it again for a complete study records that the
    study grew only if instances arrived since it was last complete.
    """
    if quiet_seconds > 0:
        due = utcnow() + timedelta(seconds=quiet_seconds)
        with db.session() as session:
            for study_uid in sorted(set(study_uids)):
                outbox.enqueue(
                    session,
                    COMPLETE_IF_QUIET_TASK,
                    due_at=due,
                    study_uid=study_uid,
                    reason=reason,
                    quiet_seconds=quiet_seconds,
                )
        return []
    newly_complete: list[int] = []
    for study_uid in sorted(set(study_uids)):
        with db.session() as session:
            case_id = complete_study(session, study_uid, reason)
            if case_id is not None:
                newly_complete.append(case_id)
    return newly_complete


def complete_if_quiet(
    db: Database, study_uid: str, reason: str, quiet_seconds: float, outbox_id: int | None
) -> bool:
    """The delayed half of :func:`complete_studies`: complete the study if it has been quiet,
    else look again when it will have been. Idempotent; True when the study was completed."""
    with db.session() as session:
        last = session.scalar(select(Study.last_received_at).where(Study.study_uid == study_uid))
        quiet_until = last + timedelta(seconds=quiet_seconds) if last else utcnow()
        if quiet_until > utcnow():
            # Instances arrived meanwhile: this row waits again (same row, so no duplicates).
            session.execute(
                update(OutboxMessage)
                .where(OutboxMessage.id == outbox_id, OutboxMessage.done_at.is_(None))
                .values(due_at=quiet_until)
            )
            return False
        complete_study(session, study_uid, reason + f" and {quiet_seconds:g} s quiet")
        outbox.mark_done(session, outbox_id)
        return True


def complete_study(session: Session, study_uid: str, reason: str) -> int | None:
    """Complete one study in the caller's transaction; the case id if the case became ready."""
    study = session.scalar(select(Study).where(Study.study_uid == study_uid))
    if study is None:
        return None
    case = session.get(Case, study.case_id)
    assert case is not None
    now = utcnow()
    newly_complete = None
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
            newly_complete = case.id
    elif study.instance_count > study.completed_instance_count:
        timeline.record(
            session,
            case.id,
            timeline.Event.STUDY_GREW,
            at=now,
            study_uid=study_uid,
            instances=study.instance_count,
            added=study.instance_count - study.completed_instance_count,
            reason=reason,
        )
    else:
        return None  # nothing new since it was last complete
    study.completed_instance_count = study.instance_count
    if case.kind == CaseKind.ECG.value:
        outbox.enqueue(session, ECG_FROM_DICOM_TASK, case_id=case.id)
    outbox.enqueue(session, "telehub.dicomweb_metadata", study_uid=study_uid)
    return newly_complete
