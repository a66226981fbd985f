"""Tasks: decode arguments, call one service, nothing else. Each is idempotent and retry-safe:
the service checks state before it changes it and marks its outbox row done in the same
transaction."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.exc import OperationalError

from telehub import routing
from telehub.services import Services
from workers.app import app, settings

log = logging.getLogger(__name__)
_services: Services | None = None
_lock = threading.Lock()


def services() -> Services:
    global _services
    with _lock:
        if _services is None:
            _services = Services.from_settings(settings())
        return _services


@app.task(
    name="telehub.route_case",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=None,
)
def route_case(case_id: int, outbox_id: int | None = None) -> None:
    decision = routing.route_case(services().db, case_id, outbox_id)
    log.info("case %s: %s (centre %s)", case_id, decision.rule, decision.centre_id)
