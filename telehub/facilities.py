"""Facility look-ups the protocol adapters need on every association, cached briefly."""

from __future__ import annotations

import logging
import threading
import time
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

from sqlalchemy import select

from telehub.db import Database
from telehub.db.models import Facility

log = logging.getLogger(__name__)


def parse_networks(text: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """``"10.2.0.0/16, 192.0.2.7"`` -> networks; raises ValueError on a bad entry."""
    return tuple(ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip())


class FacilityDirectory:
    """Calling AE title -> facility id, and where each title may call from; reloaded when older
    than ``ttl`` seconds, so a facility an admin adds is accepted within seconds on every hub
    process, without a restart."""

    def __init__(self, db: Database, ttl: float = 5.0) -> None:
        self.db = db
        self.ttl = ttl
        self._by_aet: dict[str, int] = {}
        self._networks: dict[str, tuple[IPv4Network | IPv6Network, ...]] = {}
        self._loaded = 0.0
        self._lock = threading.Lock()

    def _fresh(self) -> dict[str, int]:
        with self._lock:
            if time.monotonic() - self._loaded > self.ttl:
                with self.db.reader() as session:
                    rows = session.execute(
                        select(Facility.ae_title, Facility.id, Facility.dicom_networks).where(
                            Facility.ae_title.is_not(None)
                        )
                    ).all()
                self._by_aet = {aet.strip(): fid for aet, fid, _ in rows}
                self._networks = {}
                for aet, _, networks in rows:
                    try:
                        self._networks[aet.strip()] = parse_networks(networks or "")
                    except ValueError:
                        log.error("facility %s: bad dicom_networks %r; refusing it", aet, networks)
                        self._networks[aet.strip()] = ()
                        self._by_aet.pop(aet.strip(), None)
                self._loaded = time.monotonic()
            return self._by_aet

    def facility_for_ae(self, ae_title: str) -> int | None:
        return self._fresh().get(ae_title.strip())

    def ae_titles(self, address: str | None = None) -> list[str]:
        """The calling AE titles accepted, from ``address`` if given."""
        titles = self._fresh()
        if address is None:
            return sorted(titles)
        try:
            ip = ip_address(address)
        except ValueError:
            return []
        return sorted(
            aet
            for aet in titles
            if not self._networks.get(aet) or any(ip in net for net in self._networks[aet])
        )

    def invalidate(self) -> None:
        with self._lock:
            self._loaded = 0.0
