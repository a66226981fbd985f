"""The ingest hot path's plain SQL (telehub/ingest.py) against the models, on SQLite and on
PostgreSQL: a transfer's later instances, written through the DBAPI cursor, read back through
the ORM exactly as the first one written through it; a re-send is found before any write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom.meta import read_instance_meta
from telehub import ingest
from telehub.db import Database
from telehub.db.models import Facility, Instance, Series, Study
from telehub.store import FilesystemStore
from tests.helpers import fresh_copy


def test_cached_instances_are_indexed_like_the_first(db: Database, tmp_path: Path) -> None:
    with db.reader() as session:
        clinic = session.scalar(select(Facility.id).where(Facility.code == "T1"))
    store = FilesystemStore(tmp_path / "objects")
    cache = ingest.IngestCache()
    study = generate_uid()
    series = generate_uid()
    outcomes, sops, paths = [], [], []
    started = datetime.now(UTC)
    for modality in ("CT", "CT", "SR"):  # the third adds a modality to the study
        path = fresh_copy("CT_small.dcm", tmp_path / "in", study_uid=study, Modality=modality)
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series
        ds.save_as(path, enforce_file_format=True)
        meta = read_instance_meta(path, ds.SOPClassUID, ds.SOPInstanceUID)
        outcomes.append(
            ingest.store_instance(db, store, clinic, meta, path, "dimse:CLINIC1", cache=cache)
        )
        sops.append(ds.SOPInstanceUID)
        paths.append((path, meta))
    assert len({o.case_id for o in outcomes}) == 1
    assert not any(o.duplicate for o in outcomes)

    with db.reader() as session:
        rows = session.scalars(select(Instance).where(Instance.sop_uid.in_(sops))).all()
        by_sop = {row.sop_uid: row for row in rows}
        assert [by_sop[sop].id for sop in sops] == [o.instance_id for o in outcomes]
        for row in rows:
            assert row.received_at.tzinfo is not None
            assert started - timedelta(seconds=1) < row.received_at < datetime.now(UTC)
            assert row.source == "dimse:CLINIC1" and len(row.sha256) == 64
            assert store.exists(row.object_key)
        study_row = session.scalar(select(Study).where(Study.study_uid == study))
        series_row = session.scalar(select(Series).where(Series.series_uid == series))
        assert study_row.instance_count == 3 and series_row.instance_count == 3
        assert study_row.modalities == "CT\\SR"
        assert study_row.last_received_at >= max(row.received_at for row in rows)

    path, meta = paths[0]
    resent = ingest.store_instance(db, store, clinic, meta, path, "dimse:CLINIC1", cache=cache)
    assert resent.duplicate and resent.instance_id == outcomes[0].instance_id
    with db.reader() as session:
        assert session.scalar(select(Study.instance_count).where(Study.study_uid == study)) == 3


def test_a_new_transfer_into_an_indexed_series_starts_on_the_fast_path(
    db: Database, tmp_path: Path
) -> None:
    """A modality that opens an association per image: each new transfer (an empty cache)
    into the indexed series is indexed like the first, counts and modalities kept; another
    facility's instance for that series is still refused."""
    with db.reader() as session:
        clinic = session.scalar(select(Facility.id).where(Facility.code == "T1"))
        other = session.scalar(select(Facility.id).where(Facility.code == "T2"))
    store = FilesystemStore(tmp_path / "objects")
    study, series = generate_uid(), generate_uid()
    outcomes = []
    for modality in ("CT", "CT", "SR"):
        path = fresh_copy("CT_small.dcm", tmp_path / "in", study_uid=study, Modality=modality)
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = series
        ds.save_as(path, enforce_file_format=True)
        meta = read_instance_meta(path, ds.SOPClassUID, ds.SOPInstanceUID)
        cache = ingest.IngestCache()  # a new association each time
        outcomes.append(
            ingest.store_instance(db, store, clinic, meta, path, "dimse:CLINIC1", cache=cache)
        )
    assert len({o.case_id for o in outcomes}) == 1
    with db.reader() as session:
        study_row = session.scalar(select(Study).where(Study.study_uid == study))
        series_row = session.scalar(select(Series).where(Series.series_uid == series))
        assert study_row.instance_count == 3 and series_row.instance_count == 3
        assert study_row.modalities == "CT\\SR"

    path = fresh_copy("CT_small.dcm", tmp_path / "in", study_uid=study)
    ds = pydicom.dcmread(path)
    ds.SeriesInstanceUID = series
    ds.save_as(path, enforce_file_format=True)
    meta = read_instance_meta(path, ds.SOPClassUID, ds.SOPInstanceUID)
    with pytest.raises(ingest.ForeignStudy):
        ingest.store_instance(
            db, store, other, meta, path, "dimse:CLINIC2", cache=ingest.IngestCache()
        )
