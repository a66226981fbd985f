"""The process-wide services every adapter shares: settings, database, object store."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from telehub.config import Settings
from telehub.db import Database
from telehub.spool import SpoolingStore, SpoolMover
from telehub.store import FilesystemStore, ObjectStore, S3Store, StoreError, open_store

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    db: Database
    store: ObjectStore
    mover: SpoolMover | None = None
    #: Under ``serve``: each DICOM receiving process's open connections, -1 for one that is
    #: not accepting (see dicom.receiver_load); None in a process that runs no receivers.
    receivers: Callable[[], list[int]] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        """The process's services; an S3 store gets a local spool in front of it and a mover
        thread (see telehub.spool), so S3 latency never bounds ingest."""
        settings.data.mkdir(parents=True, exist_ok=True)
        store = open_store(settings.resolved_storage_url)
        mover = None
        if isinstance(store, S3Store):
            try:
                store.ensure_bucket()
            except StoreError as exc:  # writes go to the spool meanwhile; the mover retries
                log.warning("object store not reachable at start: %s", exc)
            store = SpoolingStore(FilesystemStore(settings.spool / "objects"), store)
            mover = SpoolMover(store)
            mover.start()
        db = Database(settings.resolved_database_url)
        return cls(settings=settings, db=db, store=store, mover=mover)

    def close(self) -> None:
        if self.mover is not None:
            self.mover.stop()
        self.db.dispose()
