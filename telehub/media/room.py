"""One consult's media: the hub's peer connection per participant, the relay between them and
the recording segments.

No renegotiation: a participant offers its own audio/video as ``sendonly`` transceivers plus
``recvonly`` transceivers ("slots") for the others it wants to see and hear, usually one audio
and one video slot per other participant. The hub answers each slot ``sendonly`` with a
:class:`~telehub.media.tracks.SlotTrack` and later points the slot at whichever participant's
relayed track it should carry. A client that offers no slots (direct browser-to-browser media)
only sends to the hub for the recording. Which slot carries whom is the ``slots`` map
({mid: {"participant_id", "kind"}}) returned with the answer and pushed on every change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.sdp import candidate_from_sdp

from telehub.media import forwarding
from telehub.media.forwarding import DecodedTrack, KeyframeGate, KeyframeSource
from telehub.media.recorder import SegmentRecorder
from telehub.media.tracks import QUALITY_HEIGHTS, QUALITY_LEVELS, ScaledVideoTrack, SlotTrack

log = logging.getLogger(__name__)

KINDS = ("audio", "video")


@dataclass
class Slot:
    transceiver: RTCRtpTransceiver
    track: SlotTrack
    source: int | None = None  # participant id carried, None while free

    @property
    def kind(self) -> str:
        return self.track.kind


@dataclass
class Peer:
    participant_id: int
    pc: RTCPeerConnection
    slots: list[Slot] = field(default_factory=list)
    incoming: dict[str, MediaStreamTrack] = field(default_factory=dict)
    keyframes: dict[str, KeyframeSource] = field(default_factory=dict)
    quality: str = "high"

    def slot_map(self) -> dict[str, dict[str, object]]:
        return {
            str(s.transceiver.mid): {"participant_id": s.source, "kind": s.kind}
            for s in self.slots
            if s.source is not None
        }


SegmentDone = Callable[[int, int, Path, float], Awaitable[None]]
SlotsChanged = Callable[[int, int, dict[str, dict[str, object]]], Awaitable[None]]
Vanished = Callable[[int, int], Awaitable[None]]


class Room:
    """The media of one consult; all methods run in the hub's event loop."""

    def __init__(
        self,
        consult_id: int,
        *,
        configuration: RTCConfiguration,
        work_dir: Path,
        segment_done: SegmentDone,
        first_segment: int = 1,
        slots_changed: SlotsChanged,
        vanished: Vanished,
        forward: bool = False,
    ) -> None:
        self.consult_id = consult_id
        #: Forward encoded media (telehub.media.forwarding) instead of decoding and re-encoding
        #: it per viewer and for the recording.
        self.forward = forward
        self.configuration = configuration
        self.work_dir = work_dir
        self.relay = MediaRelay()
        self.peers: dict[int, Peer] = {}
        self.recording = False
        self.segments = first_segment - 1  # numbers already used in the store
        self._recorder: SegmentRecorder | None = None
        self._segment_done = segment_done
        self._slots_changed = slots_changed
        self._vanished = vanished
        self._lock = asyncio.Lock()
        self._storing: set[asyncio.Future[None]] = set()

    # -- participants -------------------------------------------------------------------------

    async def offer(self, participant_id: int, sdp: str, type_: str) -> dict[str, object]:
        """Answer a participant's offer; a second offer replaces its peer (reconnect, or a
        client that dropped to audio only)."""
        if type_ != "offer":
            raise ValueError(f"expected an SDP offer, got type {type_!r}")
        if not isinstance(sdp, str) or "\nm=" not in sdp.replace("\r\n", "\n"):
            raise ValueError("invalid SDP: no media section")
        async with self._lock:
            old = self.peers.pop(participant_id, None)
            if old is not None:
                await self._remove(old)
            peer = await self._answer(participant_id, sdp)
            self.peers[participant_id] = peer
            await self._rewire()
            await self._roll_segment()
            assert peer.pc.localDescription is not None
            return {"type": "answer", "sdp": peer.pc.localDescription.sdp, "slots": peer.slot_map()}

    async def _answer(self, participant_id: int, sdp: str) -> Peer:
        pc = RTCPeerConnection(self.configuration)
        peer = Peer(participant_id, pc)

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind in peer.incoming:
                return
            peer.incoming[track.kind] = track
            if self.forward:
                forwarding.forward(track)
            receiver = next(
                (t.receiver for t in pc.getTransceivers() if t.receiver.track is track), None
            )
            peer.keyframes[track.kind] = KeyframeSource(receiver)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if (
                pc.connectionState in ("failed", "closed")
                and self.peers.get(participant_id) is peer
            ):
                log.info("consult %s: participant %s lost", self.consult_id, participant_id)
                await self._vanished(self.consult_id, participant_id)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            for transceiver in pc.getTransceivers():
                if self.forward:
                    forwarding.prefer_forwardable(transceiver)
                if transceiver._offerDirection in ("sendonly", "sendrecv"):  # client receives
                    track = SlotTrack(transceiver.kind)
                    transceiver.direction = "sendrecv"
                    transceiver.sender.replaceTrack(track)
                    peer.slots.append(Slot(transceiver, track))
            await pc.setLocalDescription(await pc.createAnswer())
            forwarding.enlarge_socket_buffers(pc)
        except Exception as exc:  # aiortc raises ValueError, OperationError, ... on bad SDP
            await pc.close()
            raise ValueError(f"invalid SDP offer: {exc}") from exc
        log.info(
            "consult %s: participant %s sends %s, %d slots",
            self.consult_id,
            participant_id,
            sorted(peer.incoming),
            len(peer.slots),
        )
        return peer

    async def add_candidate(self, participant_id: int, init: dict[str, object]) -> None:
        peer = self.peers.get(participant_id)
        if peer is None:
            return
        line = str(init["candidate"]).removeprefix("a=").removeprefix("candidate:")
        try:
            candidate = candidate_from_sdp(line)
        except (ValueError, IndexError) as exc:
            raise ValueError(f"invalid ICE candidate: {exc}") from exc
        candidate.sdpMid = None if init.get("sdpMid") is None else str(init["sdpMid"])
        index = init.get("sdpMLineIndex")
        candidate.sdpMLineIndex = index if isinstance(index, int) else None
        if candidate.sdpMid is None and candidate.sdpMLineIndex is None:
            candidate.sdpMLineIndex = 0
        await peer.pc.addIceCandidate(candidate)

    async def leave(self, participant_id: int) -> None:
        async with self._lock:
            peer = self.peers.pop(participant_id, None)
            if peer is None:
                return
            await self._remove(peer)
            await self._roll_segment()

    async def _remove(self, peer: Peer) -> None:
        """Free every slot that carried ``peer`` and close its connection."""
        for other in self.peers.values():
            changed = False
            for slot in other.slots:
                if slot.source == peer.participant_id:
                    slot.track.set_source(None)
                    slot.source = None
                    changed = True
            if changed:
                await self._notify(other)
        for slot in peer.slots:
            slot.track.set_source(None)
        # Not awaited under the room's lock: closing a peer whose remote already vanished can
        # take aiortc a long time (transport shutdown), and the others must not wait for it.
        asyncio.ensure_future(_close_quietly(peer.pc))

    async def set_quality(self, participant_id: int, level: str) -> None:
        """What the hub relays to this viewer: high (as sent), medium 360p, low 240p, audio."""
        if level not in QUALITY_LEVELS:
            raise ValueError(f"quality must be one of {', '.join(QUALITY_LEVELS)}")
        async with self._lock:
            peer = self.peers.get(participant_id)
            if peer is None or peer.quality == level:
                return
            peer.quality = level
            for slot in peer.slots:
                if slot.kind == "video" and slot.source is not None:
                    slot.track.set_source(None)
                    slot.source = None
            await self._rewire()

    def _viewer_track(
        self, source: MediaStreamTrack, from_peer: Peer, viewer: Peer, slot: Slot
    ) -> MediaStreamTrack:
        relayed = self.relay.subscribe(source, buffered=False)
        height = QUALITY_HEIGHTS.get(viewer.quality)
        if source.kind != "video":
            return relayed
        if self.forward:
            keyframes = from_peer.keyframes.get("video", KeyframeSource(None))
            if height is None:  # the packets as they came, for this viewer's sender to pack
                return KeyframeGate(relayed, keyframes, slot.transceiver.sender)
            # a weak link: this viewer alone gets a decoded, smaller, re-encoded picture
            return ScaledVideoTrack(DecodedTrack(KeyframeGate(relayed, keyframes)), height)
        return ScaledVideoTrack(relayed, height) if height is not None else relayed

    async def _rewire(self) -> None:
        """Give every viewer a slot for every other participant's tracks, where one is free."""
        for viewer in self.peers.values():
            changed = False
            for source in self.peers.values():
                if source is viewer:
                    continue
                for kind, track in source.incoming.items():
                    if kind == "video" and viewer.quality == "audio":
                        continue
                    if any(
                        s.source == source.participant_id and s.kind == kind for s in viewer.slots
                    ):
                        continue
                    free = next(
                        (s for s in viewer.slots if s.kind == kind and s.source is None), None
                    )
                    if free is None:
                        log.log(
                            logging.WARNING
                            if any(s.kind == kind for s in viewer.slots)
                            else logging.DEBUG,  # audio-only viewer: expected
                            "consult %s: no free %s slot at participant %s for %s",
                            self.consult_id,
                            kind,
                            viewer.participant_id,
                            source.participant_id,
                        )
                        continue
                    free.track.set_source(self._viewer_track(track, source, viewer, free))
                    free.source = source.participant_id
                    changed = True
            if changed:
                await self._notify(viewer)

    async def _notify(self, viewer: Peer) -> None:
        with contextlib.suppress(Exception):
            await self._slots_changed(self.consult_id, viewer.participant_id, viewer.slot_map())

    # -- recording ----------------------------------------------------------------------------

    async def set_recording(self, on: bool) -> None:
        async with self._lock:
            self.recording = on
            await self._roll_segment()

    async def _roll_segment(self) -> None:
        """Close the running segment and, while recording, open one for who is here now.

        A Matroska file cannot gain streams after its header: a join or leave during the
        recording starts the next segment (consults/<id>/<n>.mkv)."""
        if self._recorder is not None:
            recorder, self._recorder = self._recorder, None
            duration = await recorder.stop()
            number = int(recorder.path.stem.split("-")[1])
            if recorder.frames == 0:  # closed before any media arrived: nothing to keep
                recorder.path.unlink(missing_ok=True)
                if number == self.segments:
                    self.segments -= 1
            else:
                task = asyncio.ensure_future(
                    self._segment_done(self.consult_id, number, recorder.path, duration)
                )
                self._storing.add(task)
                task.add_done_callback(self._storing.discard)
        if not self.recording:
            return
        tracks = [
            (peer.participant_id, kind, track)
            for peer in self.peers.values()
            for kind, track in sorted(peer.incoming.items())
        ]
        if not tracks:
            return
        self.segments += 1
        self.work_dir.mkdir(parents=True, exist_ok=True)
        name = f"{self.consult_id}-{self.segments}-{uuid.uuid4().hex[:8]}.mkv"
        recorder = SegmentRecorder(self.work_dir / name, copy=self.forward)
        for peer in self.peers.values():
            for kind, track in sorted(peer.incoming.items()):
                relayed = self.relay.subscribe(track, buffered=False)
                if self.forward and kind == "video":  # a segment starts at a keyframe
                    relayed = KeyframeGate(relayed, peer.keyframes.get(kind, KeyframeSource(None)))
                recorder.add_track(relayed, f"p{peer.participant_id} {kind}")
        await recorder.start()
        self._recorder = recorder

    async def close(self) -> None:
        """End of the consult: finalise and store the recording, close every connection."""
        async with self._lock:
            self.recording = False
            await self._roll_segment()
            peers, self.peers = list(self.peers.values()), {}
            for peer in peers:
                await self._remove(peer)
        # the last segments are stored (and announced) before the consult counts as ended
        if self._storing:
            await asyncio.gather(*self._storing, return_exceptions=True)


async def _close_quietly(pc: RTCPeerConnection, timeout: float = 10.0) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(pc.close(), timeout)
