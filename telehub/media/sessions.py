"""What the signaling side (``telehub.consults``) calls: one :class:`Room` per live consult.

All functions are coroutines for the hub's event loop. The hub must be configured once with
:func:`configure` (object store, work folder, ICE servers); recordings are stored under
``consults/<consult_id>/<n>.mkv`` and announced through :data:`on_recording_stored`.
Hooks the signaling side sets (module attributes, None = not interested):

- ``on_recording_stored(consult_id, key, duration_s)``: a finalised segment is in the store.
- ``on_slots_changed(consult_id, participant_id, slots)``: push ``{"type": "media-slots",
  "slots": slots}`` to that participant (which receive slot carries whom).
- ``on_participant_lost(consult_id, participant_id)``: the hub's peer for this participant
  failed or was closed without a leave (the media is already cleaned up).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer

from telehub.media.room import Room
from telehub.store import ObjectStore

log = logging.getLogger(__name__)

on_recording_stored: Callable[[int, str, float], Awaitable[None] | None] | None = None
on_slots_changed: Callable[[int, int, dict[str, Any]], Awaitable[None] | None] | None = None
on_participant_lost: Callable[[int, int], Awaitable[None] | None] | None = None

_rooms: dict[int, Room] = {}
_ICE_KEYS = ("urls", "username", "credential")
_store: ObjectStore | None = None
_work_dir: Path = Path(tempfile.gettempdir()) / "telehub-media"
# aiortc uses only the first server; an empty list means host candidates only (LAN, tests).
_ice_servers: list[RTCIceServer] = []
#: Forward encoded media rather than re-encode it (telehub.media.forwarding).
_forward = True


def configure(
    store: ObjectStore | None = None,
    work_dir: Path | None = None,
    ice_servers: list[dict[str, Any]] | None = None,
    forward: bool | None = None,
) -> None:
    """Set where recordings go, the hub peer's STUN/TURN servers ({"urls", "username",
    "credential"} like the browser's RTCIceServer), and whether media is forwarded as
    received (default) or decoded and re-encoded per viewer."""
    global _store, _work_dir, _ice_servers, _forward
    if forward is not None:
        _forward = forward
    if store is not None:
        _store = store
    if work_dir is not None:
        _work_dir = Path(work_dir)
    if ice_servers is not None:
        _ice_servers = [
            RTCIceServer(**{k: v for k, v in server.items() if k in _ICE_KEYS})
            for server in ice_servers[:1]
        ]


def room(consult_id: int) -> Room:
    """The consult's room, created on first use."""
    found = _rooms.get(consult_id)
    if found is None:
        found = _rooms[consult_id] = Room(
            consult_id,
            # max-bundle: with aiortc's default "balanced", a second m-line of one kind is
            # created on the first one's transport before BUNDLE is applied and never connects.
            configuration=RTCConfiguration(
                iceServers=list(_ice_servers), bundlePolicy=RTCBundlePolicy.MAX_BUNDLE
            ),
            work_dir=_work_dir,
            segment_done=_segment_done,
            first_segment=_next_segment(consult_id),
            slots_changed=_slots_changed,
            vanished=_vanished,
            forward=_forward,
        )
    return found


async def handle_offer(consult_id: int, participant_id: int, sdp: str, type: str) -> dict:
    """Answer a participant's offer: {"type": "answer", "sdp": ..., "slots": {...}}.

    Raises ValueError (message for the client) on an invalid offer; other consults are untouched.
    """
    return await room(consult_id).offer(participant_id, sdp, type)


async def add_candidate(consult_id: int, participant_id: int, candidate: dict | None) -> None:
    """A trickled ICE candidate from a browser ({"candidate", "sdpMid", "sdpMLineIndex"});
    None or an empty candidate (end of candidates) is ignored. aiortc itself does not trickle:
    its answer carries all of the hub's candidates."""
    found = _rooms.get(consult_id)
    if found is not None and candidate and candidate.get("candidate"):
        await found.add_candidate(participant_id, candidate)


async def participant_left(consult_id: int, participant_id: int) -> None:
    found = _rooms.get(consult_id)
    if found is not None:
        await found.leave(participant_id)


async def set_recording(consult_id: int, on: bool) -> None:
    """Start (all consents given) or stop the recording; stopping finalises and stores it."""
    await room(consult_id).set_recording(on)


async def set_quality(consult_id: int, participant_id: int, level: str) -> None:
    """A viewer on a weak link asks for less: "high", "medium" (360p), "low" (240p), "audio"."""
    found = _rooms.get(consult_id)
    if found is not None:
        await found.set_quality(participant_id, level)


async def end(consult_id: int) -> None:
    """The consult is over: finalise the recording, close every peer, forget the room."""
    found = _rooms.pop(consult_id, None)
    if found is not None:
        await found.close()


def active() -> list[int]:
    return sorted(_rooms)


async def _call(hook: Callable[..., Awaitable[None] | None] | None, *args: Any) -> None:
    if hook is None:
        return
    result = hook(*args)
    if inspect.isawaitable(result):
        await result


def _next_segment(consult_id: int) -> int:
    """A consult whose room is opened again (rejoin after end, hub restart) continues the
    numbering: a stored segment is never overwritten."""
    number = 1
    while _store is not None and _store.exists(f"consults/{consult_id}/{number}.mkv"):
        number += 1
    return number


async def _segment_done(consult_id: int, number: int, path: Path, duration: float) -> None:
    """Store a finalised segment under consults/<id>/<n>.mkv and tell the signaling side."""
    if _store is None:
        log.warning(
            "consult %s: no object store configured, recording kept at %s", consult_id, path
        )
        return
    key = f"consults/{consult_id}/{number}.mkv"
    try:
        await asyncio.get_running_loop().run_in_executor(None, _store.put_file, key, path)
    except Exception:
        log.exception("consult %s: storing recording %s failed; kept at %s", consult_id, key, path)
        return
    path.unlink(missing_ok=True)
    log.info("consult %s: recording stored as %s (%.1f s)", consult_id, key, duration)
    try:
        await _call(on_recording_stored, consult_id, key, duration)
    except Exception:
        log.exception("consult %s: on_recording_stored failed for %s", consult_id, key)


async def _slots_changed(consult_id: int, participant_id: int, slots: dict[str, Any]) -> None:
    await _call(on_slots_changed, consult_id, participant_id, slots)


async def _vanished(consult_id: int, participant_id: int) -> None:
    await participant_left(consult_id, participant_id)
    try:
        await _call(on_participant_lost, consult_id, participant_id)
    except Exception:
        log.exception("consult %s: on_participant_lost failed", consult_id)
