"""The process-wide services every adapter shares: settings, database, object store."""

from __future__ import annotations

from dataclasses import dataclass

from telehub.config import Settings
from telehub.db import Database
from telehub.store import ObjectStore, S3Store, open_store


@dataclass
class Services:
    settings: Settings
    db: Database
    store: ObjectStore

    @classmethod
    def from_settings(cls, settings: Settings) -> Services:
        settings.data.mkdir(parents=True, exist_ok=True)
        store = open_store(settings.resolved_storage_url)
        if isinstance(store, S3Store):
            store.ensure_bucket()
        return cls(settings=settings, db=Database(settings.resolved_database_url), store=store)

    def close(self) -> None:
        self.db.dispose()
