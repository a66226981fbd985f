"""Notifications: which timeline events someone must hear of, in-app and through webhooks.

Placeholder: the notifications work fills this in; ``on_event`` is called by
``timeline.record`` inside the event's own transaction.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from telehub.db.models import CaseEvent


def on_event(session: Session, event: CaseEvent) -> None:
    """Create the notifications (and webhook deliveries) an event calls for."""
