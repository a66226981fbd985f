"""Facility look-ups the protocol adapters need on every association, cached briefly."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select

from telehub.db import Database
from telehub.db.models import Facility


class FacilityDirectory:
    """Calling AE title -> facility id; reloaded when older than ``ttl`` seconds, so a facility
    an admin adds is accepted within seconds on every hub process, without a restart."""

    def __init__(self, db: Database, ttl: float = 5.0) -> None:
        self.db = db
        self.ttl = ttl
        self._by_aet: dict[str, int] = {}
        self._loaded = 0.0
        self._lock = threading.Lock()

    def _fresh(self) -> dict[str, int]:
        with self._lock:
            if time.monotonic() - self._loaded > self.ttl:
                with self.db.reader() as session:
                    rows = session.execute(
                        select(Facility.ae_title, Facility.id).where(Facility.ae_title.is_not(None))
                    )
                    self._by_aet = {aet.strip(): fid for aet, fid in rows}
                self._loaded = time.monotonic()
            return self._by_aet

    def facility_for_ae(self, ae_title: str) -> int | None:
        return self._fresh().get(ae_title.strip())

    def ae_titles(self) -> list[str]:
        return sorted(self._fresh())

    def invalidate(self) -> None:
        with self._lock:
            self._loaded = 0.0
