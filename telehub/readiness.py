"""Readiness: can this process do its work now (database, object store, broker, and under
``serve`` the DICOM receiving processes)?

``/healthz`` says the process answers; ``/readyz`` says a load balancer may send it requests:
every dependency a request or an acknowledgement needs is reachable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text

from telehub.services import Services


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    seconds: float
    error: str = ""


def _database(services: Services) -> None:
    with services.db.reader() as session:
        session.execute(text("SELECT 1"))


def _object_store(services: Services) -> None:
    services.store.check()


def _broker(services: Services) -> None:
    from workers.app import app

    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, timeout=3)


def _dicom_receivers(services: Services) -> None:
    assert services.receivers is not None
    counts = services.receivers()
    down = sum(1 for count in counts if count < 0)
    if down:
        raise RuntimeError(f"{down} of {len(counts)} DICOM receiving processes not accepting")


CHECKS: dict[str, Callable[[Services], None]] = {
    "database": _database,
    "object_store": _object_store,
    "broker": _broker,
}


def check_all(services: Services) -> list[Check]:
    """Run every check; a failure is reported with its reason, never raised. Under ``serve``
    the DICOM receiving processes are checked too (a modality's association waits in the
    listen queue while none accepts)."""
    checks = dict(CHECKS)
    if services.receivers is not None:
        checks["dicom_receivers"] = _dicom_receivers
    results = []
    for name, probe in checks.items():
        started = time.perf_counter()
        try:
            probe(services)
            results.append(Check(name, True, time.perf_counter() - started))
        except Exception as exc:  # any failure means "not ready", with the reason shown
            results.append(
                Check(name, False, time.perf_counter() - started, f"{type(exc).__name__}: {exc}")
            )
    return results
