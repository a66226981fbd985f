"""Recovery after a crash: finish or remove what a killed process left half done.

A receiver acknowledges an instance only after its object and its index row are durable, so a
crash loses nothing acknowledged; but it can leave two kinds of debris (issue 8, faults):

* a study whose transfer never ended (the receiver died before the association release or the
  end of the STOW request), so nothing marked it complete and its case is never routed;
  :func:`complete_abandoned_studies` completes it once it has been quiet for a while;
* an object with no index row (the process died between the object write and the index commit;
  the spool mover then uploads it all the same), and temporary files in the spool;
  :func:`sweep_orphans` and :func:`sweep_spool_temp` remove them once they are old enough that
  no ingest can still be about to index them.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from telehub import ingest
from telehub.db import Database
from telehub.db.models import STUDY_OPEN, Instance, Study
from telehub.db.types import utcnow
from telehub.spool import SpoolingStore
from telehub.store import FilesystemStore, ObjectStore, S3Store, StoreError

log = logging.getLogger(__name__)

#: Spool entries that only live while one request or association is being handled.
_TEMP_PREFIXES = ("stow-", "ecg-", "report-sr-")
_BATCH = 500


def complete_abandoned_studies(db: Database, quiet_seconds: float) -> list[int]:
    """Complete studies (or record their growth) that got instances but no transfer end and
    have been quiet for ``quiet_seconds``; returns the ids of cases now ready for routing."""
    cutoff = utcnow() - timedelta(seconds=quiet_seconds)
    with db.reader() as session:
        uids = list(
            session.scalars(
                select(Study.study_uid).where(
                    Study.last_received_at < cutoff,
                    # none yet, or grown since (0 means completed before the count existed,
                    # 0003); the same text as the partial index ix_studies_open, so both
                    # SQLite and PostgreSQL use it
                    STUDY_OPEN,
                )
            )
        )
    if not uids:
        return []
    reason = f"no transfer end seen; {quiet_seconds:g} s quiet"
    cases = ingest.complete_studies(db, uids, reason)
    log.warning("completed %d abandoned stud(ies), %d case(s) now routable", len(uids), len(cases))
    return cases


@dataclass(frozen=True)
class OrphanSweep:
    checked: int  # instance objects looked at
    orphans: int  # of those, without an index row and older than the grace
    removed: int  # orphans removed (the rest: the store refused, try next time)


def sweep_orphans(db: Database, store: ObjectStore, grace_seconds: float) -> OrphanSweep:
    """Remove instance objects no index row points at and older than ``grace_seconds``.

    The grace must exceed the longest ingest (object write to index commit): a younger object
    without a row may be an instance being stored right now. Each orphan is looked up again
    just before it is removed.
    """
    keys = [key for key in store.keys("dicom/") if key.endswith(".dcm")]
    unindexed = [
        key for i in range(0, len(keys), _BATCH) for key in _unindexed(db, keys[i : i + _BATCH])
    ]
    cutoff = time.time() - grace_seconds
    orphans = removed = 0
    for key in unindexed:
        modified = _modified(store, key)
        if modified is None or modified > cutoff or not _unindexed(db, [key]):
            continue
        orphans += 1
        try:
            store.delete(key)
            removed += 1
        except StoreError as exc:
            log.warning("could not remove orphaned object %s: %s", key, exc)
    if orphans:
        log.warning("%d orphaned object(s) with no index row, %d removed", orphans, removed)
    return OrphanSweep(len(keys), orphans, removed)


def _unindexed(db: Database, keys: list[str]) -> list[str]:
    with db.reader() as session:
        indexed = set(
            session.scalars(select(Instance.object_key).where(Instance.object_key.in_(keys)))
        )
    return [key for key in keys if key not in indexed]


def _modified(store: ObjectStore, key: str) -> float | None:
    """When the object was written (epoch seconds); None if it is gone or unknowable."""
    try:
        if isinstance(store, SpoolingStore):
            inner = store.spool if store.spool.exists(key) else store.remote
            return _modified(inner, key)
        if isinstance(store, FilesystemStore):
            return store.path_of(key).stat().st_mtime
        if isinstance(store, S3Store):
            return store.client.stat_object(store.bucket, key).last_modified.timestamp()
    except Exception:  # gone meanwhile, or the store is down: leave it for the next sweep
        return None
    return None


def spool_temp_entries(spool: Path) -> list[Path]:
    """Temporary files and folders in a process's spool: received data sets not yet stored,
    request work folders, half-written objects."""
    found: list[Path] = []
    for folder in (spool / "incoming", spool / "objects" / ".tmp"):
        if folder.is_dir():
            found.extend(folder.iterdir())
    if spool.is_dir():
        found.extend(p for p in spool.iterdir() if p.name.startswith(_TEMP_PREFIXES))
    return found


def sweep_spool_temp(spool: Path, grace_seconds: float) -> int:
    """Remove spool temporaries older than ``grace_seconds`` (a crashed process's leftovers);
    returns how many were removed."""
    cutoff = time.time() - grace_seconds
    removed = 0
    for path in spool_temp_entries(spool):
        try:
            if path.lstat().st_mtime > cutoff:
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed += 1
        except FileNotFoundError:
            continue
    if removed:
        log.warning("removed %d stale temporary file(s) from %s", removed, spool)
    return removed
