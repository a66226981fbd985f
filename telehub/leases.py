"""The reader's hold on a case: a lease renewed by activity, lapsing back to the worklist."""

from __future__ import annotations

from datetime import timedelta

from telehub.config import Settings
from telehub.db.models import Case
from telehub.db.types import utcnow


def renew(settings: Settings, case: Case, user_id: int) -> bool:
    """Extend the lease if ``user_id`` holds the case; True when it did."""
    if case.reader_id != user_id or case.lease_expires_at is None:
        return False
    case.lease_expires_at = utcnow() + timedelta(seconds=settings.claim_lease_seconds)
    return True
