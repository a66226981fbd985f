"""DICOM JSON metadata (PS3.18 F.2), each series' built once and kept in the object store.

OHIF asks for the metadata of every series when a study opens, so reading every instance per
request is the classic slow path. A series' metadata (the list of its instances' JSON) is built
once, gzipped into the object store under a key that names the instance count it was built
from, and recorded in ``dicomweb_series_metadata``. Instances are only ever added, so the count
is the version: a series with more instances than its kept metadata is rebuilt. The build runs
in a Celery task queued when a study completes (never on the C-STORE path) and, failing that,
on the first request that finds it missing or stale.

Bulk data (pixel data, waveform data, large OB/OW/UN...) is replaced by a ``BulkDataURI``. The
kept JSON holds it relative to the service root (``studies/...``); the handler prefixes the
request's base URL when it serves it, so the kept object does not depend on the host name.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from dicom.web import instances as index
from dicom.web.instances import InstanceRef, SeriesRef
from dicom.web.stored import StoredInstance, open_instance
from telehub import outbox
from telehub.db import Database
from telehub.db.models import SeriesMetadata
from telehub.db.types import utcnow
from telehub.store import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)

TASK = "telehub.dicomweb_metadata"
BUILD_THREADS = 4
#: Binary values longer than this become bulk data (the pixel and waveform data always do).
BULK_THRESHOLD = 1024
BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
ALWAYS_BULK = {
    0x7FE00008,  # Float Pixel Data
    0x7FE00009,  # Double Float Pixel Data
    0x7FE00010,  # Pixel Data
    0x54001010,  # Waveform Data
    0x00420011,  # Encapsulated Document
    0x56000020,  # Spectroscopy Data
}
#: In the kept JSON a BulkDataURI starts with this; the served JSON with the base URL.
RELATIVE_URI = b'"BulkDataURI":"studies/'


def bulkdata_path(ref: InstanceRef, tag_path: str) -> str:
    return (
        f"studies/{ref.study_uid}/series/{ref.series_uid}/instances/{ref.sop_uid}"
        f"/bulkdata/{tag_path}"
    )


# ----- one instance --------------------------------------------------------------------------
def instance_json(inst: StoredInstance, ref: InstanceRef) -> dict[str, Any]:
    """The instance's DICOM JSON with bulk data as BulkDataURIs relative to the service root."""
    out = _dataset_json(inst.ds, ref, "")
    if inst.pixels is not None:
        key = f"{inst.pixels.tag:08X}"
        out[key] = {"vr": inst.pixels.vr, "BulkDataURI": bulkdata_path(ref, key)}
    # Tell viewers how the pixel data is encoded (Available Transfer Syntax UID).
    out.setdefault("00083002", {"vr": "UI", "Value": [str(inst.transfer_syntax)]})
    return dict(sorted(out.items()))


def _dataset_json(ds: Dataset, ref: InstanceRef, prefix: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for elem in ds.elements():
        tag = int(elem.tag)
        if tag >> 16 == 0x0002 or (tag & 0xFFFF) == 0:  # file meta, group lengths
            continue
        key = f"{tag:08X}"
        vr = _raw_vr(elem, ds)
        if vr is not None and _is_bulk(elem, tag, vr):
            out[key] = {"vr": vr, "BulkDataURI": bulkdata_path(ref, prefix + key)}
            continue
        try:
            de = ds[tag]  # converts (and reads a deferred value from the open file)
            if de.VR == "SQ":
                items = [
                    _dataset_json(item, ref, f"{prefix}{key}/{i}/")
                    for i, item in enumerate(de.value)
                ]
                out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            else:
                out[key] = de.to_json_dict(None, BULK_THRESHOLD)
        except Exception as exc:  # one malformed value must not hide the instance
            log.warning("%s: element %s left out of the metadata: %s", ref.sop_uid, key, exc)
    return out


def _raw_vr(elem: Any, ds: Dataset) -> str | None:
    vr = elem.VR
    if vr is None:  # implicit VR: the dictionary's
        try:
            vr = dictionary_VR(elem.tag)
        except KeyError:
            return "UN"
    if " or " in str(vr):
        if "OW" in vr:
            return "OW" if int(ds.get("BitsAllocated", 16) or 16) > 8 else "OB"
        return None  # US or SS and the like: let pydicom resolve it
    return str(vr)


def _is_bulk(elem: Any, tag: int, vr: str) -> bool:
    if tag in ALWAYS_BULK and vr in BULK_VRS:
        return True
    if vr not in BULK_VRS:
        return False
    if isinstance(elem, RawDataElement):
        return elem.value is None and elem.length > 0 or elem.length > BULK_THRESHOLD
    value = elem.value
    return isinstance(value, bytes | bytearray) and len(value) > BULK_THRESHOLD


def read_instance_json(store: ObjectStore, ref: InstanceRef) -> dict[str, Any]:
    with open_instance(store, ref.object_key) as inst:
        return instance_json(inst, ref)


# ----- one series, kept ----------------------------------------------------------------------
def cache_key(series: SeriesRef, count: int) -> str:
    shard = hashlib.sha1(series.study_uid.encode()).hexdigest()[:2]
    return f"dicomweb/metadata/{shard}/{series.study_uid}/{series.series_uid}/{count}.json.gz"


def build_series(db: Database, store: ObjectStore, series: SeriesRef) -> tuple[bytes, int]:
    """Read every instance of the series once; returns the JSON array and the instance count."""
    refs = index.series_instances(db, series.series_id)

    def one(ref: InstanceRef) -> bytes | None:
        try:
            return _dumps(read_instance_json(store, ref))
        except ObjectNotFound:
            log.error("series %s: object of %s is missing", series.series_uid, ref.sop_uid)
            return None

    # A few reads in flight hide object-store latency (S3); each holds one header in memory.
    with ThreadPoolExecutor(BUILD_THREADS, thread_name_prefix="dicomweb-metadata") as pool:
        parts = [p for p in pool.map(one, refs) if p is not None]
    return b"[" + b",".join(parts) + b"]", len(refs)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def keep(
    db: Database, store: ObjectStore, built: list[tuple[SeriesRef, bytes, int]], outbox_id=None
) -> None:
    """Put the built series into the store, then record them (and finish the outbox job) in one
    transaction. A concurrent build of a larger count wins; an older one is not recorded."""
    written: list[tuple[SeriesRef, str, int, int]] = []
    for series, data, count in built:
        key = cache_key(series, count)
        packed = gzip.compress(data, compresslevel=5)
        store.put_bytes(key, packed)
        written.append((series, key, count, len(packed)))
    superseded: list[str] = []
    with db.session() as session:
        for series, key, count, size in written:
            row = session.get(SeriesMetadata, series.series_id)
            if row is None:
                session.add(
                    SeriesMetadata(
                        series_id=series.series_id,
                        instance_count=count,
                        object_key=key,
                        size=size,
                        built_at=utcnow(),
                    )
                )
            elif row.instance_count < count:
                superseded.append(row.object_key)
                row.instance_count, row.object_key, row.size = count, key, size
                row.built_at = utcnow()
        outbox.mark_done(session, outbox_id)
    for key in superseded:
        try:
            store.delete(key)
        except Exception:
            log.warning("could not remove superseded metadata %s", key)


def _is_fresh(series: SeriesRef) -> bool:
    return series.cached_key is not None and series.cached_count == series.instance_count


def series_json(db: Database, store: ObjectStore, series: SeriesRef) -> bytes:
    """The series' JSON array (relative BulkDataURIs): the kept one, or built and kept now."""
    if _is_fresh(series):
        assert series.cached_key is not None
        try:
            with store.open(series.cached_key) as fh:
                return gzip.decompress(fh.read())
        except ObjectNotFound:
            log.warning("kept metadata %s is missing; rebuilding", series.cached_key)
    data, count = build_series(db, store, series)
    try:
        keep(db, store, [(series, data, count)])
    except Exception:
        # Serving the answer matters more than keeping it; the next request tries again.
        log.exception("could not keep metadata of series %s", series.series_uid)
    return data


def ensure_study(db: Database, store: ObjectStore, study_uid: str, outbox_id=None) -> int:
    """Build and keep the metadata of the study's series that are missing or stale (the Celery
    task's work; running it again changes nothing). Returns how many series were built."""
    built = []
    for series in index.study_series(db, study_uid):
        if not _is_fresh(series):
            data, count = build_series(db, store, series)
            built.append((series, data, count))
    keep(db, store, built, outbox_id)
    return len(built)


def with_base(data: bytes, base_url: str) -> bytes:
    """Make the kept relative BulkDataURIs absolute for the caller."""
    return data.replace(RELATIVE_URI, b'"BulkDataURI":"' + base_url.encode() + b"/studies/")


def study_chunks(
    db: Database, store: ObjectStore, series: list[SeriesRef], base_url: str
) -> Iterator[bytes]:
    """The study's metadata as one JSON array, one series at a time."""
    yield b"["
    first = True
    for s in series:
        body = series_json(db, store, s)[1:-1]
        if not body:
            continue
        if not first:
            yield b","
        first = False
        yield with_base(body, base_url)
    yield b"]"
