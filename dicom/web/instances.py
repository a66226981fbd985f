"""Which stored instances a DICOMweb request names, as the caller may see them, audited.

Every WADO-RS read goes through :func:`find_instances` or :func:`find_series`: the access rule
(:func:`telehub.access.visible_to`) is part of the query, a study the caller may not see answers
404 exactly like a missing one, and the audit row is written in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from telehub import audit
from telehub.access import visible_to
from telehub.auth import Principal
from telehub.db import Database
from telehub.db.models import Case, Instance, Series, SeriesMetadata, Study
from telehub.errors import NotFound


@dataclass(frozen=True)
class InstanceRef:
    """What a WADO-RS handler needs of one stored instance (detached from any session)."""

    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    object_key: str
    size: int


@dataclass(frozen=True)
class SeriesRef:
    """A series and the state of its kept metadata (``cached_count`` None: never built)."""

    series_id: int
    study_uid: str
    series_uid: str
    instance_count: int
    cached_count: int | None
    cached_key: str | None


def _instance_query() -> Select[Any]:
    return (
        select(Instance, Series.series_uid, Study.study_uid, Study.case_id)
        .join(Series, Series.id == Instance.series_id)
        .join(Study, Study.id == Series.study_id)
    )


def _ref(row: Any) -> InstanceRef:
    inst, series_uid, study_uid = row[0], row[1], row[2]
    return InstanceRef(
        study_uid,
        series_uid,
        inst.sop_uid,
        inst.sop_class_uid,
        inst.transfer_syntax_uid,
        inst.object_key,
        inst.size,
    )


def _not_found(study_uid: str, series_uid: str | None, sop_uid: str | None) -> NotFound:
    if sop_uid:
        return NotFound(f"instance {sop_uid} not found", "instance_not_found")
    if series_uid:
        return NotFound(f"series {series_uid} not found", "series_not_found")
    return NotFound(f"study {study_uid} not found", "study_not_found")


def _audit(
    session: Session, principal: Principal, remote: str, study_uid: str, case_id: int, **what: Any
) -> None:
    detail = {k: v for k, v in what.items() if v is not None}
    audit.record(
        session, principal.user_id, "read", "study", study_uid, remote, case_id=case_id, **detail
    )


def find_instances(
    db: Database,
    principal: Principal,
    remote: str,
    what: str,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    **detail: Any,
) -> list[InstanceRef]:
    """The instances of a study / series / one instance the caller may see, in series and
    instance order; raises NotFound when there are none. Writes one audit row."""
    query = (
        _instance_query()
        .join(Case, Case.id == Study.case_id)
        .where(Study.study_uid == study_uid, visible_to(principal))
        .order_by(Series.id, Instance.instance_number, Instance.id)
    )
    if series_uid is not None:
        query = query.where(Series.series_uid == series_uid)
    if sop_uid is not None:
        query = query.where(Instance.sop_uid == sop_uid)
    with db.session() as session:
        rows = session.execute(query).all()
        if not rows:
            raise _not_found(study_uid, series_uid, sop_uid)
        _audit(
            session,
            principal,
            remote,
            study_uid,
            rows[0][3],
            what=what,
            series_uid=series_uid,
            sop_uid=sop_uid,
            instances=len(rows),
            **detail,
        )
        return [_ref(row) for row in rows]


def find_series(
    db: Database,
    principal: Principal,
    remote: str,
    what: str,
    study_uid: str,
    series_uid: str | None = None,
) -> list[SeriesRef]:
    """The series of a study (or the one named) the caller may see, with their metadata state;
    raises NotFound when there are none. Writes one audit row."""
    query = (
        select(Series, Study.case_id, SeriesMetadata)
        .join(Study, Study.id == Series.study_id)
        .join(Case, Case.id == Study.case_id)
        .outerjoin(SeriesMetadata, SeriesMetadata.series_id == Series.id)
        .where(Study.study_uid == study_uid, visible_to(principal))
        .order_by(Series.id)
    )
    if series_uid is not None:
        query = query.where(Series.series_uid == series_uid)
    with db.session() as session:
        rows = session.execute(query).all()
        if not rows:
            raise _not_found(study_uid, series_uid, None)
        _audit(
            session,
            principal,
            remote,
            study_uid,
            rows[0][1],
            what=what,
            series_uid=series_uid,
            instances=sum(r[0].instance_count for r in rows),
        )
        return [_series_ref(study_uid, r[0], r[2]) for r in rows]


def _series_ref(study_uid: str, series: Series, cached: SeriesMetadata | None) -> SeriesRef:
    return SeriesRef(
        series.id,
        study_uid,
        series.series_uid,
        series.instance_count,
        cached.instance_count if cached else None,
        cached.object_key if cached else None,
    )


def study_series(db: Database, study_uid: str) -> list[SeriesRef]:
    """All series of a study with their metadata state (internal use: no caller, no audit)."""
    query = (
        select(Series, SeriesMetadata)
        .join(Study, Study.id == Series.study_id)
        .outerjoin(SeriesMetadata, SeriesMetadata.series_id == Series.id)
        .where(Study.study_uid == study_uid)
        .order_by(Series.id)
    )
    with db.reader() as session:
        return [_series_ref(study_uid, s, c) for s, c in session.execute(query).all()]


def series_instances(db: Database, series_id: int) -> list[InstanceRef]:
    """All instances of a series in instance order (internal use: building its metadata)."""
    query = (
        _instance_query()
        .where(Instance.series_id == series_id)
        .order_by(Instance.instance_number, Instance.id)
    )
    with db.reader() as session:
        return [_ref(row) for row in session.execute(query).all()]
