"""Live updates: case timeline events and the user's notifications, fanned out to the open
event streams of this hub process.

The database is the source, so it works across hub processes and whatever process (worker,
receiver, another hub) wrote the change: one poller per process reads the append-only
``case_events`` and ``notifications`` tables by id every ``POLL_SECONDS``, only while someone
listens, and hands each row to the listeners allowed to see it (``telehub.access.visible_to``
for case events, evaluated in SQL for all listening principals in one query; notifications go
to their addressee).

Ids are handed out at INSERT but become visible at COMMIT, so on PostgreSQL id 12 can appear
after id 13. A :class:`Cursor` therefore remembers the ids it skipped over and reads them again
for ``GAP_SECONDS`` (a rolled-back transaction leaves its id unused for ever), de-duplicating.

Delivery is at least once: each message's SSE id ``c<case id>.n<notification id>`` says
"everything up to here was delivered"; a client resuming with ``Last-Event-ID`` gets what came
after, possibly a message it already had (``event_id`` / ``notification_id`` tell them apart).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import case as sql_case
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import aliased

from telehub import audit
from telehub.access import visible_to
from telehub.auth import Principal
from telehub.db import Database
from telehub.db.models import Case, CaseEvent, EventTicket, Notification, User
from telehub.db.types import utcnow
from telehub.errors import Unauthorized

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
#: How long an id skipped over is waited for (an uncommitted or rolled-back transaction).
GAP_SECONDS = 30.0
#: Most skipped ids remembered; a bigger jump (a sequence cache after a crash) is not a gap.
MAX_GAPS = 1000
BATCH = 500
#: Messages waiting for a slow client before its stream is closed (it resumes by id).
QUEUE_LIMIT = 2000
TICKET_SECONDS = 60
_EVENT_ID = re.compile(r"^c(\d+)\.n(\d+)$")


# ----- tickets (a browser's EventSource cannot send an Authorization header) ----------------
def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def issue_ticket(db: Database, principal: Principal) -> str:
    """A one-time ticket for ``GET /api/v1/events?ticket=``, valid ``TICKET_SECONDS``; only
    its SHA-256 is stored, like the bearer tokens."""
    ticket = secrets.token_urlsafe(32)
    now = utcnow()
    with db.session() as session:
        session.execute(
            delete(EventTicket).where(EventTicket.expires_at < now - timedelta(hours=1))
        )
        session.add(
            EventTicket(
                ticket_hash=_digest(ticket),
                user_id=principal.user_id,
                expires_at=now + timedelta(seconds=TICKET_SECONDS),
            )
        )
    return ticket


def redeem_ticket(db: Database, ticket: str) -> Principal:
    """The ticket's user, once: a conditional UPDATE marks it used, so a copied ticket (or two
    requests racing with one) opens one stream."""
    now = utcnow()
    with db.session() as session:
        won = session.execute(
            update(EventTicket)
            .where(
                EventTicket.ticket_hash == _digest(ticket),
                EventTicket.used_at.is_(None),
                EventTicket.expires_at > now,
            )
            .values(used_at=now)
        ).rowcount
        if won != 1:
            raise Unauthorized("unknown, used or expired event-stream ticket", "invalid_ticket")
        user = session.scalar(
            select(User)
            .join(EventTicket, EventTicket.user_id == User.id)
            .where(EventTicket.ticket_hash == _digest(ticket))
        )
        if user is None or not user.active:
            raise Unauthorized("account disabled", "invalid_ticket")
        return Principal(user.id, user.username, user.role, user.facility_id, user.centre_id)


# ----- cursors over an append-only table -----------------------------------------------------
@dataclass
class Cursor:
    """Where a reader of an id-ordered table stands: the highest id seen and the ids below it
    not seen yet (maybe still uncommitted), each with when it was first missed."""

    high: int
    gaps: dict[int, float] = field(default_factory=dict)

    @property
    def settled(self) -> int:
        """Every id up to this one was seen (or given up on)."""
        return min(self.gaps) - 1 if self.gaps else self.high

    def accept(self, ids: Iterable[int], now: float | None = None) -> set[int]:
        """Take the ids read; returns those not seen before."""
        now = time.monotonic() if now is None else now
        new: set[int] = set()
        for i in sorted(ids):
            if i > self.high:
                if i - self.high - 1 <= MAX_GAPS:
                    for missing in range(self.high + 1, i):
                        self.gaps[missing] = now
                self.high = i
                new.add(i)
            elif self.gaps.pop(i, None) is not None:
                new.add(i)
        for missing, since in list(self.gaps.items()):
            if now - since > GAP_SECONDS:
                del self.gaps[missing]
        return new


def parse_event_id(raw: str | None) -> tuple[int, int] | None:
    """``c<case event id>.n<notification id>`` as sent in each message's ``id:``."""
    match = _EVENT_ID.match((raw or "").strip())
    return (int(match[1]), int(match[2])) if match else None


def event_id(case_mark: int, note_mark: int) -> str:
    return f"c{case_mark}.n{note_mark}"


# ----- messages and listeners ----------------------------------------------------------------
@dataclass(frozen=True)
class Message:
    kind: str  # "case" or "notification"
    row_id: int
    sse_id: str
    data: dict[str, Any]

    def json(self) -> str:
        return json.dumps(self.data, ensure_ascii=False, default=str)


@dataclass(eq=False)
class Listener:
    principal: Principal
    hello_id: str
    queue: asyncio.Queue[Message] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    backfill: list[Message] = field(default_factory=list)
    overflowed: bool = False
    _sent: set[tuple[str, int]] | None = None

    def offer(self, message: Message) -> None:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.overflowed = True  # the stream ends; the client resumes from its last id

    def already_sent(self, message: Message) -> bool:
        """A live message the resume backfill already carried."""
        if self._sent is None:
            self._sent = {(m.kind, m.row_id) for m in self.backfill}
        return (message.kind, message.row_id) in self._sent


def _case_data(row: Any, snapshot: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "event_id": row.id,
        "case_id": row.case_id,
        "kind": row.kind,
        "at": row.at.isoformat(),
        "actor_id": row.actor_id,
        "detail": row.detail or {},
        "case": snapshot,
    }


def _note_data(row: Any) -> dict[str, Any]:
    return {
        "notification_id": row.id,
        "kind": row.kind,
        "case_id": row.case_id,
        "title": row.title,
        "body": row.body,
        "detail": row.detail or {},
        "created_at": row.created_at.isoformat(),
    }


def _event_columns(table: Any = CaseEvent) -> tuple[Any, ...]:
    return (table.id, table.case_id, table.kind, table.at, table.actor_id, table.detail)


_EVENT_COLUMNS = _event_columns()
_NOTE_COLUMNS = (
    Notification.id,
    Notification.user_id,
    Notification.kind,
    Notification.case_id,
    Notification.title,
    Notification.body,
    Notification.detail,
    Notification.created_at,
)
_SNAPSHOT = (Case.status, Case.priority, Case.centre_id, Case.reader_id)


def _snapshot(row: Any) -> dict[str, Any]:
    return {
        "status": row.status,
        "priority": row.priority,
        "centre_id": row.centre_id,
        "reader_id": row.reader_id,
    }


@dataclass
class _Batch:
    events: list[Any]
    notes: list[Any]
    #: case id -> snapshot, and the set of principal indexes that may see it
    cases: dict[int, tuple[dict[str, Any], set[int]]]


class LiveHub:
    """The listeners of one hub process and the one poller that feeds them."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.listeners: set[Listener] = set()
        self.cases = Cursor(0)
        self.notes = Cursor(0)
        self._task: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()

    # -- subscription (event loop) --
    async def subscribe(
        self, principal: Principal, resume: tuple[int, int] | None, remote: str = ""
    ) -> Listener:
        loop = asyncio.get_running_loop()
        async with self._start_lock:
            if self._task is None or self._task.done():
                high_c, high_n = await loop.run_in_executor(None, self._max_ids)
                self.cases, self.notes = Cursor(high_c), Cursor(high_n)
                self._task = asyncio.create_task(self._run(), name="live-poller")
            hello = resume or (self.cases.settled, self.notes.settled)
            listener = Listener(principal, event_id(*hello))
            self.listeners.add(listener)
        try:
            settled = (self.cases.settled, self.notes.settled)
            listener.backfill = await loop.run_in_executor(
                None, self._backfill, principal, resume, settled, remote
            )
        except BaseException:
            self.unsubscribe(listener)
            raise
        return listener

    def unsubscribe(self, listener: Listener) -> None:
        self.listeners.discard(listener)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self.listeners:
            await asyncio.sleep(POLL_SECONDS)
            if not self.listeners:
                break
            principals = list({listener.principal for listener in self.listeners})
            try:
                batch = await loop.run_in_executor(
                    None,
                    self._poll,
                    principals,
                    (self.cases.high, sorted(self.cases.gaps)),
                    (self.notes.high, sorted(self.notes.gaps)),
                )
            except Exception:
                log.exception("live update poll failed; will retry")
                continue
            self._fan_out(principals, batch)

    def _fan_out(self, principals: list[Principal], batch: _Batch) -> None:
        index = {p: i for i, p in enumerate(principals)}
        note_before = self.notes.settled
        new_events = self.cases.accept(row.id for row in batch.events)
        new_notes = self.notes.accept(row.id for row in batch.notes)
        case_settled, note_settled = self.cases.settled, self.notes.settled
        for row in batch.events:
            if row.id not in new_events or row.case_id not in batch.cases:
                continue
            snapshot, seen_by = batch.cases[row.case_id]
            message = Message(
                "case",
                row.id,
                event_id(min(row.id, case_settled), note_before),
                _case_data(row, snapshot),
            )
            for listener in list(self.listeners):
                if index.get(listener.principal) in seen_by:
                    listener.offer(message)
        for row in batch.notes:
            if row.id not in new_notes:
                continue
            message = Message(
                "notification",
                row.id,
                event_id(case_settled, min(row.id, note_settled)),
                _note_data(row),
            )
            for listener in list(self.listeners):
                if listener.principal.user_id == row.user_id:
                    listener.offer(message)

    # -- database work (executor threads) --
    def _max_ids(self) -> tuple[int, int]:
        with self.db.reader() as session:
            return (
                session.scalar(select(func.max(CaseEvent.id))) or 0,
                session.scalar(select(func.max(Notification.id))) or 0,
            )

    def _poll(
        self,
        principals: list[Principal],
        events_after: tuple[int, list[int]],
        notes_after: tuple[int, list[int]],
    ) -> _Batch:
        with self.db.reader() as session:
            events = session.execute(
                select(*_EVENT_COLUMNS)
                .where(_after(CaseEvent.id, *events_after))
                .order_by(CaseEvent.id)
                .limit(BATCH)
            ).all()
            notes = session.execute(
                select(*_NOTE_COLUMNS)
                .where(_after(Notification.id, *notes_after))
                .order_by(Notification.id)
                .limit(BATCH)
            ).all()
            cases: dict[int, tuple[dict[str, Any], set[int]]] = {}
            case_ids = sorted({row.case_id for row in events})
            if case_ids:
                # Who may see which case: one query, one 0/1 column per listening principal.
                for start in range(0, len(principals), 200):
                    chunk = principals[start : start + 200]
                    columns = [
                        sql_case((visible_to(p), 1), else_=0).label(f"v{start + i}")
                        for i, p in enumerate(chunk)
                    ]
                    rows = session.execute(
                        select(Case.id, *_SNAPSHOT, *columns).where(Case.id.in_(case_ids))
                    ).all()
                    for row in rows:
                        entry = cases.setdefault(row.id, (_snapshot(row), set()))
                        entry[1].update(start + i for i in range(len(chunk)) if row[5 + i])
            return _Batch(events, notes, cases)

    def _backfill(
        self,
        principal: Principal,
        resume: tuple[int, int] | None,
        settled: tuple[int, int],
        remote: str,
    ) -> list[Message]:
        """What a resuming client missed (visible case events after its case mark, its own
        notifications after its notification mark); also the stream's one audit row. A mark
        never passes what the poller has settled, so a late commit below it is not skipped."""
        with self.db.session() as session:
            audit.record(
                session,
                principal.user_id,
                "subscribe",
                "events",
                remote=remote,
                resume=event_id(*resume) if resume else None,
            )
            if resume is None:
                return []
            case_mark, note_mark = resume
            out: list[Message] = []
            # An alias, so a visibility rule that looks into the timeline (EXISTS on
            # case_events) keeps its own FROM instead of correlating to this query's.
            event = aliased(CaseEvent)
            rows = session.execute(
                select(*_event_columns(event), *_SNAPSHOT)
                .join(Case, Case.id == event.case_id)
                .where(event.id > case_mark, visible_to(principal))
                .order_by(event.id)
                .limit(BATCH)
            ).all()
            for row in rows:
                case_mark = min(row.id, max(settled[0], case_mark))
                data = _case_data(row, _snapshot(row))
                out.append(Message("case", row.id, event_id(case_mark, note_mark), data))
            notes = session.execute(
                select(*_NOTE_COLUMNS)
                .where(Notification.user_id == principal.user_id, Notification.id > note_mark)
                .order_by(Notification.id)
                .limit(BATCH)
            ).all()
            for row in notes:
                note_mark = min(row.id, max(settled[1], note_mark))
                out.append(
                    Message("notification", row.id, event_id(case_mark, note_mark), _note_data(row))
                )
            return out


def _after(column: Any, high: int, gaps: list[int]) -> Any:
    return or_(column > high, column.in_(gaps)) if gaps else column > high


_hubs: dict[tuple[int, int], LiveHub] = {}
_hubs_lock = threading.Lock()


def hub_for(db: Database) -> LiveHub:
    """This process's hub for ``db`` on the running event loop."""
    key = (id(db), id(asyncio.get_running_loop()))
    with _hubs_lock:
        hub = _hubs.get(key)
        if hub is None:
            hub = _hubs[key] = LiveHub(db)
        return hub
