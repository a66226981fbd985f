"""Consults over HTTP: create, read, list, end, join tokens; and the signaling WebSocket with
its in-process rooms (waiting room, consent, shared viewing, media hand-off).

A consult's participants must reach the same hub process: the rooms live in this process's
memory (the load balancer keeps a consult's sockets sticky by consult id; docs/consults.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import logging
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from aiohttp import WSMsgType, web

from telehub import consult_sync, consults
from telehub.api.common import (
    int_param,
    json_body,
    path_id,
    principal,
    public,
    remote,
    run,
    services,
)
from telehub.api.schema import ID, json_request, query, responses
from telehub.config import Settings
from telehub.consults import Seat
from telehub.db import Database
from telehub.errors import Invalid, TelehubError
from telehub.services import Services

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

#: Largest signaling message (an SDP with many candidates is a few kB).
MAX_MESSAGE = 256 * 1024
#: Close codes: the signaling channel's own, in the 4000 range.
CLOSE_REFUSED = 4001
CLOSE_FULL = 4009
CLOSE_ENDED = 4010
CLOSE_LEFT = 4000
CLOSE_REPLACED = 4002


# ----- REST ----------------------------------------------------------------------------------
@routes.post("/api/v1/cases/{id}/consults")
async def create_consult(request: web.Request) -> web.Response:
    body = await json_body(request)
    data = await run(
        request,
        consults.create,
        services(request).db,
        principal(request),
        path_id(request),
        body,
        remote(request),
    )
    return web.json_response(data, status=201)


@routes.get("/api/v1/consults")
async def list_consults(request: web.Request) -> web.Response:
    case_id = int_param(request, "case", 0, 1, 2**62) if "case" in request.query else None
    items = await run(
        request,
        consults.list_consults,
        services(request).db,
        principal(request),
        case_id,
        remote(request),
    )
    return web.json_response({"consults": items})


@routes.get("/api/v1/consults/{id}")
async def get_consult(request: web.Request) -> web.Response:
    data = await run(
        request,
        consults.detail,
        services(request).db,
        principal(request),
        path_id(request),
        remote(request),
    )
    return web.json_response(data)


@routes.post("/api/v1/consults/{id}/end")
async def end_consult(request: web.Request) -> web.Response:
    consult_id = path_id(request)
    data = await run(
        request, consults.end, services(request).db, principal(request), consult_id, remote(request)
    )
    room = ROOMS.pop(consult_id, None)
    if room is not None:
        await room.close_all()
    media = _media()
    if media is not None:
        await media.end(consult_id)
    return web.json_response(data)


@routes.post("/api/v1/consults/{id}/token")
async def join_token(request: web.Request) -> web.Response:
    settings = services(request).settings
    data = await run(
        request,
        consults.issue_token,
        services(request).db,
        principal(request),
        path_id(request),
        settings.consult_token_ttl_seconds,
        remote(request),
    )
    return web.json_response(data)


# ----- the media layer (telehub.media.sessions, built beside this) --------------------------
def _media() -> ModuleType | None:
    """The hub's media peer if installed: ``handle_offer``, ``participant_left``,
    ``set_recording``, ``end`` (and optionally ``handle_answer``, ``add_candidate``)."""
    try:
        return importlib.import_module("telehub.media.sessions")
    except ImportError:
        return None


_configured = False


def _configure_media(svc: Services) -> None:
    """Once per process: tell the media peer where recordings go and hook its events to the
    rooms (segments stored -> timeline, receive slots -> the participant's socket)."""
    global _configured
    media = _media()
    if media is None or _configured:
        return
    _configured = True
    media.configure(
        store=svc.store,
        work_dir=svc.settings.data / "media-work",
        ice_servers=svc.settings.ice_server_list,
        forward=svc.settings.consult_media_forward,
    )
    db = svc.db

    async def stored(consult_id: int, key: str, duration: float) -> None:
        await run_sync(consults.recording_stored, db, consult_id, key, duration)

    async def slots(consult_id: int, participant_id: int, slots: dict[str, Any]) -> None:
        room = ROOMS.get(consult_id)
        member = room.members.get(participant_id) if room else None
        if member is not None:
            await _send(member.ws, {"type": "media-slots", "slots": slots})

    media.on_recording_stored = stored
    media.on_slots_changed = slots


def _check_sdp(sdp: Any) -> str:
    if not isinstance(sdp, str) or not sdp.startswith("v=0") or "\nm=" not in sdp:
        raise Invalid("sdp must be a session description (v=0 ... m=...)", "invalid_sdp")
    if len(sdp) > MAX_MESSAGE:
        raise Invalid("sdp too large", "invalid_sdp")
    return sdp


# ----- rooms ---------------------------------------------------------------------------------
@dataclass
class Member:
    seat: Seat
    ws: web.WebSocketResponse | None
    admitted: bool = False
    consent: bool | None = None
    grace: asyncio.Task[None] | None = None

    @property
    def id(self) -> int:
        return self.seat.participant_id

    def describe(self) -> dict[str, Any]:
        return {
            "participant_id": self.id,
            "user_id": self.seat.user_id,
            "username": self.seat.username,
            "display_name": self.seat.display_name,
            "role": self.seat.role,
            "admitted": self.admitted,
            "connected": self.ws is not None,
            "consent": self.consent,
        }


async def _send(ws: web.WebSocketResponse | None, message: dict[str, Any]) -> None:
    if ws is None or ws.closed:
        return
    with contextlib.suppress(ConnectionError, RuntimeError):  # the peer went away meanwhile
        await ws.send_json(message)


def _error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


@dataclass
class Room:
    """One consult's live state in this process: members, presenter, shared view, recording."""

    consult_id: int
    case_id: int
    db: Database
    settings: Settings
    members: dict[int, Member] = field(default_factory=dict)
    presenter: int | None = None
    recording: bool = False
    ended: bool = False
    sync: consult_sync.SyncState = field(default_factory=consult_sync.SyncState)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    flush: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.sync.pointer_hz = self.settings.consult_pointer_hz

    # --- helpers
    def inside(self) -> list[Member]:
        return [m for m in self.members.values() if m.admitted]

    async def broadcast(self, message: dict[str, Any], *, skip: int | None = None) -> None:
        for m in self.inside():
            if m.id != skip:
                await _send(m.ws, message)

    def consent_state(self) -> dict[str, Any]:
        return {
            "type": "consent_state",
            "consents": {str(m.id): m.consent for m in self.inside()},
            "recording": self.recording,
        }

    def state_for(self, member: Member) -> dict[str, Any]:
        """What an admitted participant needs to catch up: who is in, the view, consent."""
        waiting = [m.describe() for m in self.members.values() if not m.admitted]
        return {
            "participants": [m.describe() for m in self.inside()],
            "waiting_room": waiting if member.seat.role == consults.HOST else [],
            "presenter": self.presenter,
            "sync": self.sync.state,
            "sync_seq": self.sync.seq,
            "consents": self.consent_state()["consents"],
            "recording": self.recording,
        }

    # --- joining and leaving
    async def connect(self, seat: Seat, ws: web.WebSocketResponse) -> Member | None:
        async with self.lock:
            member = self.members.get(seat.participant_id)
            if member is not None:  # a reconnect (or a second tab): the same participant
                if member.grace is not None:
                    member.grace.cancel()
                    member.grace = None
                old, member.ws = member.ws, ws
                if old is not None and not old.closed:
                    await _send(old, _error("replaced", "this participant connected again"))
                    await old.close(code=CLOSE_REPLACED)
                await _send(ws, self.welcome(member, resumed=True))
                return member
            if len(self.members) >= self.settings.consult_max_participants:
                limit = self.settings.consult_max_participants
                await _send(ws, _error("too_many_participants", f"at most {limit} participants"))
                await ws.close(code=CLOSE_FULL)
                return None
            member = Member(seat, ws, consent=seat.consent)
            self.members[member.id] = member
            if seat.skip_waiting:
                await self._admit(member, actor_id=None)
                changed = await self.check_recording(notify=False)
                await _send(ws, self.welcome(member))
                await self._after_admit(member, changed)
            else:
                await run_sync(consults.wait, self.db, member.id)
                await _send(ws, self.welcome(member))
                for m in self.inside():
                    if m.seat.role == consults.HOST:
                        await _send(m.ws, {"type": "waiting", "participant": member.describe()})
            return member

    def welcome(self, member: Member, resumed: bool = False) -> dict[str, Any]:
        base = {
            "type": "welcome",
            "consult_id": self.consult_id,
            "case_id": self.case_id,
            "participant_id": member.id,
            "role": member.seat.role,
            "waiting": not member.admitted,
            "resumed": resumed,
            "ice_servers": self.settings.ice_server_list,
        }
        if not member.admitted:  # nothing of the call is shown in the waiting room
            return {**base, "participants": [], "presenter": None, "sync": None, "sync_seq": 0}
        return {**base, **self.state_for(member)}

    async def _admit(self, member: Member, actor_id: int | None) -> None:
        await run_sync(consults.admit, self.db, member.id, actor_id)
        member.admitted = True
        if self.presenter is None and member.seat.role == consults.HOST:
            self.presenter = member.id

    async def _after_admit(self, member: Member, recording_changed: bool) -> None:
        """Tell the others (after the newcomer's own welcome or admitted message)."""
        await self.broadcast(
            {"type": "participant_joined", "participant": member.describe()}, skip=member.id
        )
        if member.consent is not True and any(m.consent for m in self.inside()):
            await _send(member.ws, {"type": "consent_requested"})
        if recording_changed:
            await self.broadcast(self.consent_state())

    async def disconnected(self, member: Member, ws: web.WebSocketResponse) -> None:
        """The socket closed without ``leave``: keep the seat for the reconnect window."""
        async with self.lock:
            if member.ws is not ws or self.members.get(member.id) is not member or self.ended:
                return
            member.ws = None
            member.grace = asyncio.create_task(self._expire(member))

    async def _expire(self, member: Member) -> None:
        await asyncio.sleep(self.settings.consult_reconnect_seconds)
        async with self.lock:
            if member.ws is None and self.members.get(member.id) is member and not self.ended:
                member.grace = None
                await self.depart(member)

    async def depart(self, member: Member) -> None:
        """The participant is gone (left, or their link stayed down): CONSULT_LEFT, tell the
        others and the media layer, reconsider the presenter and the recording."""
        del self.members[member.id]
        seconds = await run_sync(consults.leave, self.db, member.id)
        message = {
            "type": "participant_left",
            "participant_id": member.id,
            "duration_seconds": seconds,
        }
        if member.admitted:
            await self.broadcast(message)
            media = _media()
            if media is not None:
                await media.participant_left(self.consult_id, member.id)
        else:
            for m in self.inside():
                if m.seat.role == consults.HOST:
                    await _send(m.ws, message)
        if self.presenter == member.id:
            hosts = [m.id for m in self.inside() if m.seat.role == consults.HOST]
            self.presenter = hosts[0] if hosts else None
            await self.broadcast({"type": "presenter", "participant_id": self.presenter})
        await self.check_recording()

    async def close_all(self) -> None:
        """The consult ended (its participants already left in the database)."""
        async with self.lock:
            self.ended = True
            for m in list(self.members.values()):
                if m.grace is not None:
                    m.grace.cancel()
                await _send(m.ws, {"type": "ended", "consult_id": self.consult_id})
                if m.ws is not None:
                    await m.ws.close(code=CLOSE_ENDED)
            self.members.clear()

    # --- consent and recording
    async def check_recording(self, notify: bool = True) -> bool:
        """Record while at least two are in and every one of them consented; True when the
        recording was switched (and, with ``notify``, everyone told)."""
        inside = self.inside()
        want = len(inside) >= 2 and all(m.consent is True for m in inside)
        if want == self.recording:
            return False
        self.recording = want
        await run_sync(consults.set_recording, self.db, self.consult_id, want, None)
        media = _media()
        if media is not None:
            await media.set_recording(self.consult_id, want)
        if notify:
            await self.broadcast(self.consent_state())
        return True

    # --- messages
    async def handle(self, member: Member, raw: str) -> None:
        try:
            message = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            await _send(member.ws, _error("bad_json", "message is not valid JSON"))
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await _send(member.ws, _error("bad_message", 'a message is {"type": ...}'))
            return
        kind = message["type"]
        handler = HANDLERS.get(kind)
        if handler is None:
            await _send(member.ws, _error("unknown_type", f"unknown message type {kind!r}"))
            return
        if kind not in ("ping", "leave") and not member.admitted:
            await _send(member.ws, _error("not_admitted", "wait until the host admits you"))
            return
        try:
            async with self.lock:
                if self.ended or self.members.get(member.id) is not member:
                    return
                await handler(self, member, message)
        except TelehubError as exc:
            await _send(member.ws, _error(exc.code, exc.message))
        except Exception:
            log.exception("consult %s: %s message failed", self.consult_id, kind)
            await _send(member.ws, _error("internal_error", "the hub has logged the error"))

    async def on_ping(self, member: Member, message: dict[str, Any]) -> None:
        await _send(member.ws, {"type": "pong", "t": message.get("t")})

    async def on_leave(self, member: Member, message: dict[str, Any]) -> None:
        ws = member.ws
        await self.depart(member)
        if ws is not None:
            await ws.close(code=CLOSE_LEFT)

    async def on_admit(self, member: Member, message: dict[str, Any]) -> None:
        if member.seat.role != consults.HOST:
            raise Invalid("only the host admits participants", "not_host")
        target = self.members.get(message.get("participant_id"))  # type: ignore[arg-type]
        if target is None or target.admitted:
            raise Invalid("no such participant in the waiting room", "not_waiting")
        await self._admit(target, actor_id=member.seat.user_id)
        changed = await self.check_recording(notify=False)
        await _send(target.ws, {"type": "admitted", **self.state_for(target)})
        await self._after_admit(target, changed)

    async def on_consent(self, member: Member, message: dict[str, Any]) -> None:
        given = message.get("given")
        if not isinstance(given, bool):
            raise Invalid("consent needs given: true or false", "bad_consent")
        await run_sync(consults.set_consent, self.db, member.id, given)
        member.consent = given
        if given:
            for m in self.inside():
                if m.consent is not True:
                    await _send(m.ws, {"type": "consent_requested", "by": member.id})
        await self.check_recording(notify=False)
        await self.broadcast(self.consent_state())

    async def on_present(self, member: Member, message: dict[str, Any]) -> None:
        self.presenter = member.id
        await self.broadcast({"type": "presenter", "participant_id": member.id})

    async def on_sync(self, member: Member, message: dict[str, Any]) -> None:
        if self.presenter != member.id:
            raise Invalid(
                "only the presenter's view is shared (send present first)", "not_presenter"
            )
        outcome = self.sync.update(message.get("state"), asyncio.get_running_loop().time())
        if outcome.send_now:
            await self._send_sync()
        elif self.flush is None or self.flush.done():
            self.flush = asyncio.create_task(self._flush_later(outcome.delay))

    async def _send_sync(self) -> None:
        message = {
            "type": "sync",
            "state": self.sync.state,
            "seq": self.sync.seq,
            "from": self.presenter,
        }
        await self.broadcast(message, skip=self.presenter)

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self.lock:
            if self.sync.pending and not self.ended:
                self.sync.sent(asyncio.get_running_loop().time())
                await self._send_sync()

    async def on_media(self, member: Member, message: dict[str, Any]) -> None:
        """offer / answer / candidate: to another participant (``to``: direct media between
        browsers) or to the hub's media peer."""
        kind = message["type"]
        if kind in ("offer", "answer"):
            _check_sdp(message.get("sdp"))
        to = message.get("to")
        if to is not None:
            target = self.members.get(to) if isinstance(to, int) else None
            if target is None or not target.admitted or target.id == member.id:
                raise Invalid("no such participant in the call", "unknown_participant")
            relay = {k: v for k, v in message.items() if k != "to"}
            await _send(target.ws, {**relay, "from": member.id})
            return
        media = _media()
        if media is None:
            raise Invalid("the hub has no media peer in this build", "media_unavailable")
        try:
            if kind == "offer":
                answer = await media.handle_offer(
                    self.consult_id, member.id, message["sdp"], "offer"
                )
                await _send(member.ws, {**answer, "type": "answer"})
            elif kind == "answer" and hasattr(media, "handle_answer"):
                await media.handle_answer(self.consult_id, member.id, message["sdp"])
            elif kind == "candidate" and hasattr(media, "add_candidate"):
                await media.add_candidate(self.consult_id, member.id, message.get("candidate"))
        except ValueError as exc:
            raise Invalid(f"media refused the description: {exc}", "invalid_sdp") from exc


async def _on_quality(room: Room, member: Member, message: dict[str, Any]) -> None:
    """A participant on a weak link asks for less: "high", "medium", "low" or "audio"."""
    level = message.get("level")
    if level not in ("high", "medium", "low", "audio"):
        raise Invalid("level must be high, medium, low or audio", "bad_quality")
    media = _media()
    if media is not None and hasattr(media, "set_quality"):
        await media.set_quality(room.consult_id, member.id, level)


HANDLERS = {
    "quality": _on_quality,
    "ping": Room.on_ping,
    "leave": Room.on_leave,
    "admit": Room.on_admit,
    "consent": Room.on_consent,
    "present": Room.on_present,
    "sync": Room.on_sync,
    "offer": Room.on_media,
    "answer": Room.on_media,
    "candidate": Room.on_media,
}

#: Live rooms of this process, by consult id.
ROOMS: dict[int, Room] = {}


async def run_sync(fn: Any, *args: Any) -> Any:
    """A service call from a room (no request at hand) in the default thread pool."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


# ----- the signaling socket ------------------------------------------------------------------
@routes.get("/api/v1/consults/{id}/ws")
@public  # the join token is the credential (a browser WebSocket sends no Authorization header)
async def signaling(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(heartbeat=20.0, max_msg_size=MAX_MESSAGE)
    await ws.prepare(request)
    db, settings = services(request).db, services(request).settings
    try:
        consult_id = path_id(request)
        seat = await run(request, consults.redeem, db, consult_id, request.query.get("token", ""))
    except TelehubError as exc:
        await _send(ws, _error(exc.code, exc.message))
        await ws.close(code=CLOSE_REFUSED)
        return ws
    _configure_media(services(request))
    room = ROOMS.get(consult_id)
    if room is None or room.ended:
        room = ROOMS[consult_id] = Room(consult_id, seat.case_id, db, settings)
    member = await room.connect(seat, ws)
    if member is None:
        return ws
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                await room.handle(member, msg.data)
            elif msg.type == WSMsgType.BINARY:
                await _send(ws, _error("bad_message", "messages are JSON text"))
    finally:
        await room.disconnected(member, ws)
    return ws


CONSULT = {"type": "object", "description": "a consult with its participants"}
OPENAPI_PATHS = {
    "/api/v1/cases/{id}/consults": {
        "post": {
            "summary": "Start or schedule a consult on a case",
            "parameters": [ID],
            "requestBody": json_request(
                {
                    "type": "object",
                    "properties": {
                        "kind": {"enum": ["adhoc", "scheduled"]},
                        "scheduled_at": {"type": "string", "format": "date-time"},
                        "invite": {
                            "oneOf": [
                                {"type": "array", "items": {"type": "string"}},
                                {
                                    "type": "object",
                                    "properties": {"centre": {"type": "string"}},
                                },
                            ]
                        },
                        "auto_admit": {"type": "boolean"},
                    },
                }
            ),
            "responses": responses(CONSULT, 400, 401, 404, ok_status="201"),
        }
    },
    "/api/v1/consults": {
        "get": {
            "summary": "The caller's consults, optionally of one case",
            "parameters": [query("case", {"type": "integer"}, "only this case's consults")],
            "responses": responses({"type": "object"}, 400, 401),
        }
    },
    "/api/v1/consults/{id}": {
        "get": {
            "summary": "A consult, with the case material its participants need",
            "parameters": [ID],
            "responses": responses(CONSULT, 401, 404),
        }
    },
    "/api/v1/consults/{id}/end": {
        "post": {
            "summary": "End a consult (host or admin)",
            "parameters": [ID],
            "responses": responses(CONSULT, 401, 403, 404, 409),
        }
    },
    "/api/v1/consults/{id}/token": {
        "post": {
            "summary": "A join token for the signaling socket, bound to consult and caller",
            "parameters": [ID],
            "responses": responses({"type": "object"}, 401, 404, 409),
        }
    },
    "/api/v1/consults/{id}/ws": {
        "get": {
            "summary": "Signaling WebSocket (?token=); protocol in docs/consults.md",
            "parameters": [ID, query("token", {"type": "string"}, "join token")],
            "security": [],
            "responses": {"101": {"description": "switching to WebSocket"}},
        }
    },
}
