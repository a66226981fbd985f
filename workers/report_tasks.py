"""Report tasks: store a signed report version as a DICOM SR with its study."""

from __future__ import annotations

import logging

from sqlalchemy.exc import OperationalError

from telehub.exports import sr
from telehub.store import StoreError
from workers.app import app
from workers.tasks import services

log = logging.getLogger(__name__)


@app.task(
    name="telehub.store_report_sr",
    autoretry_for=(OperationalError, StoreError),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=None,
)
def store_report_sr(case_id: int, version: int, outbox_id: int | None = None) -> None:
    """Idempotent: the SR's UIDs and bytes derive from the version, so a rerun stores nothing
    new and records SR_STORED once."""
    stored = sr.store_report_sr(services(), case_id, version, outbox_id)
    log.info("case %s report v%s: SR %s", case_id, version, "stored" if stored else "skipped")
