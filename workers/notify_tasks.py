"""Webhook delivery: one attempt per run, Celery's retry with exponential backoff between
attempts, the count kept in the delivery row (so the limit holds across restarts)."""

from __future__ import annotations

import logging

from celery import Task
from sqlalchemy.exc import OperationalError

from telehub import webhooks
from workers.app import app, settings
from workers.tasks import services

log = logging.getLogger(__name__)


@app.task(
    name="telehub.deliver_webhook",
    bind=True,
    autoretry_for=(OperationalError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=None,  # webhook_max_attempts, counted in the database, is the limit
)
def deliver_webhook(self: Task, delivery_id: int, outbox_id: int | None = None) -> None:
    cfg = settings()
    outcome = webhooks.deliver(
        services().db,
        delivery_id,
        outbox_id,
        max_attempts=cfg.webhook_max_attempts,
        backoff_seconds=cfg.webhook_backoff_seconds,
        redeliver_seconds=cfg.outbox_redeliver_seconds,
    )
    log.info(
        "webhook delivery %s: %s after %s attempts", delivery_id, outcome.status, outcome.attempts
    )
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)
