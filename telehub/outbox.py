"""Transactional outbox: work leaves a database transaction as a row, never as a bare publish.

The cause (say, a study becoming complete) and its outbox row commit together. The relay then
publishes due rows to the broker and pushes their ``due_at`` forward; the task marks the row done
in the same transaction as its own effect. A broker outage delays work, a lost message is sent
again after ``redeliver_seconds``, and idempotent tasks make the duplicates harmless.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from telehub.db import Database
from telehub.db.models import OutboxMessage
from telehub.db.types import utcnow

log = logging.getLogger(__name__)

#: publish(task_name, kwargs) -> None; raises when the broker cannot take the message.
Publisher = Callable[[str, dict[str, Any]], None]


def enqueue(
    session: Session, task: str, due_at: datetime | None = None, **args: Any
) -> OutboxMessage:
    """Leave ``task(**args)`` for the relay, to be sent at once or from ``due_at`` on."""
    message = OutboxMessage(task=task, args=args)
    if due_at is not None:
        message.due_at = due_at
    session.add(message)
    return message


def mark_done(session: Session, outbox_id: int | None) -> None:
    if outbox_id is not None:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == outbox_id, OutboxMessage.done_at.is_(None))
            .values(done_at=utcnow())
        )


def claim_due(db: Database, redeliver_seconds: float, limit: int = 100) -> list[OutboxMessage]:
    """Take the due rows and move their deadline on, so a parallel relay skips them."""
    now = utcnow()
    with db.session() as session:
        query = (
            select(OutboxMessage)
            .where(OutboxMessage.done_at.is_(None), OutboxMessage.due_at <= now)
            .order_by(OutboxMessage.id)
            .limit(limit)
        )
        if not db.is_sqlite:
            query = query.with_for_update(skip_locked=True)
        rows = list(session.scalars(query))
        for row in rows:
            row.due_at = now + timedelta(seconds=redeliver_seconds)
            row.attempts += 1
        return rows


def postpone(db: Database, outbox_id: int, seconds: float) -> None:
    with db.session() as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == outbox_id)
            .values(due_at=utcnow() + timedelta(seconds=seconds))
        )


def pending_count(db: Database) -> int:
    with db.reader() as session:
        query = select(func.count()).where(OutboxMessage.done_at.is_(None))
        return session.scalar(query) or 0


class OutboxRelay:
    """A thread that publishes due outbox rows; ``kick()`` wakes it at once after a commit."""

    def __init__(
        self,
        db: Database,
        publish: Publisher,
        redeliver_seconds: float = 60.0,
        poll_seconds: float = 1.0,
    ) -> None:
        self.db = db
        self.publish = publish
        self.redeliver_seconds = redeliver_seconds
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)

    def kick(self) -> None:
        self._wake.set()

    def run_once(self) -> int:
        """Publish what is due now; returns how many were published."""
        published = 0
        for row in claim_due(self.db, self.redeliver_seconds):
            try:
                self.publish(row.task, {**row.args, "outbox_id": row.id})
                published += 1
            except Exception as exc:
                log.warning("broker refused outbox message %s (%s): %s", row.id, row.task, exc)
                postpone(self.db, row.id, min(30.0, 2.0 ** min(row.attempts, 5)))
        return published

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                while self.run_once():
                    pass
            except Exception:
                log.exception("outbox relay pass failed; will retry")
