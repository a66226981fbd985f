"""Readiness: can this process do its work now (database, object store, broker)?

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


CHECKS: dict[str, Callable[[Services], None]] = {
    "database": _database,
    "object_store": _object_store,
    "broker": _broker,
}


def check_all(services: Services) -> list[Check]:
    """Run every check; a failure is reported with its reason, never raised."""
    results = []
    for name, probe in CHECKS.items():
        started = time.perf_counter()
        try:
            probe(services)
            results.append(Check(name, True, time.perf_counter() - started))
        except Exception as exc:  # any failure means "not ready", with the reason shown
            results.append(
                Check(name, False, time.perf_counter() - started, f"{type(exc).__name__}: {exc}")
            )
    return results
