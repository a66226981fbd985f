"""Periodic SLA work (Celery beat): warnings, breaches and escalation of unclaimed cases."""

from __future__ import annotations

import logging

from sqlalchemy.exc import OperationalError

from telehub import sla_sweep as service
from workers.app import app
from workers.tasks import services

log = logging.getLogger(__name__)


@app.task(name="telehub.sla_sweep", autoretry_for=(OperationalError,), max_retries=3)
def sla_sweep() -> None:
    """One sweep; idempotent, so a late or doubled beat tick changes nothing twice."""
    svc = services()
    result = service.sweep(svc.db, svc.settings)
    if result.warned or result.breached or result.escalated:
        log.info(
            "SLA sweep: %d warned, %d breached, %d escalated",
            result.warned,
            result.breached,
            result.escalated,
        )
