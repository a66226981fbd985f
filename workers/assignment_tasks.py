"""Assignment work: push a routed case to the best available reader, expire idle leases.
Each task calls one service; both are idempotent (conditional UPDATEs), so a duplicated
message or a second beat changes nothing."""

from __future__ import annotations

import logging

from sqlalchemy.exc import OperationalError

from telehub import assignment
from workers.app import app
from workers.tasks import services

log = logging.getLogger(__name__)


@app.task(
    name="telehub.assign_case",
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=None,
)
def assign_case(
    case_id: int, outbox_id: int | None = None, exclude: list[int] | None = None
) -> None:
    svc = services()
    result = assignment.assign_case(svc.db, svc.settings, case_id, outbox_id, exclude or ())
    log.info("case %s: %s", case_id, result.reason)


@app.task(name="telehub.expire_leases", autoretry_for=(OperationalError,), max_retries=3)
def expire_leases() -> None:
    assignment.expire_leases(services().db)
