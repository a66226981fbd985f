"""A synthetic participant (aiortc client with generated video and a tone) for tests, bench
and smoke checks: its video is a flat grey of a known level, so a viewer can tell whose
picture it receives after VP8 coding."""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from dataclasses import dataclass, field

import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame

VIDEO_CLOCK = 90000


class GreyVideoTrack(MediaStreamTrack):
    """``fps`` frames/s of ``width`` x ``height`` in one grey level (Y plane), paced by clock."""

    kind = "video"

    def __init__(
        self, level: int, width: int = 640, height: int = 480, fps: int = 15, moving: bool = False
    ) -> None:
        super().__init__()
        self.fps = fps
        image = np.full((height * 3 // 2, width), 128, dtype=np.uint8)
        image[:height] = level
        self._images = [image]
        if moving:  # camera-like load for the bench: noise texture and a moving box
            rng = np.random.default_rng(level)
            noise = rng.integers(-20, 20, (height, width), dtype=np.int16)
            self._images = []
            for step in range(2 * fps):
                frame = image.copy()
                frame[:height] = np.clip(level + noise, 0, 255).astype(np.uint8)
                x = (step * width // (2 * fps)) % (width - width // 4)
                frame[height // 3 : height // 3 + height // 4, x : x + width // 4] = 255 - level
                noise = np.roll(noise, 3, axis=1)
                self._images.append(frame)
        self._start: float | None = None
        self._count = 0

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._count / self.fps
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        image = self._images[self._count % len(self._images)]
        frame = VideoFrame.from_ndarray(image, format="yuv420p")
        frame.pts = int(self._count * VIDEO_CLOCK / self.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        self._count += 1
        return frame


class ToneAudioTrack(MediaStreamTrack):
    """A 20 ms frame of a sine tone every 20 ms, 48 kHz mono s16."""

    kind = "audio"
    RATE = 48000
    SAMPLES = 960

    def __init__(self, hz: float = 440.0) -> None:
        super().__init__()
        t = np.arange(self.RATE) / self.RATE
        self._wave = (np.sin(2 * math.pi * hz * t) * 8000).astype(np.int16)
        self._start: float | None = None
        self._count = 0

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._count * self.SAMPLES / self.RATE
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        offset = (self._count * self.SAMPLES) % (self.RATE - self.SAMPLES)
        chunk = self._wave[offset : offset + self.SAMPLES].reshape(1, -1)
        frame = AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
        frame.sample_rate = self.RATE
        frame.pts = self._count * self.SAMPLES
        frame.time_base = fractions.Fraction(1, self.RATE)
        self._count += 1
        return frame


@dataclass
class Received:
    """What arrived on one receive transceiver (keyed by mid)."""

    kind: str
    frames: int = 0
    first_at: float | None = None
    levels: list[float] = field(default_factory=list)
    heights: list[int] = field(default_factory=list)


class SyntheticParticipant:
    """Sends grey video of ``level`` and a tone, receives ``slots`` others (0: send only)."""

    def __init__(
        self,
        level: int,
        slots: int,
        *,
        video: bool = True,
        width: int = 640,
        height: int = 480,
        fps: int = 15,
        moving: bool = False,
        answerer: bool = False,
    ) -> None:
        self.level = level
        self._own = {
            "audio": ToneAudioTrack(220 + level),
            "video": GreyVideoTrack(level, width, height, fps, moving),
        }
        # max-bundle, as browsers offer in practice (one transport for every m-line).
        config = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
        self.pc = RTCPeerConnection(config)
        self.received: dict[str, Received] = {}
        self._tasks: list[asyncio.Task[None]] = []
        if not video:
            del self._own["video"]
        if answerer:  # direct media: the other participant's offer decides the m-lines
            slots = 0
        else:
            for kind in list(self._own):
                self.pc.addTransceiver(self._own.pop(kind), direction="sendonly")
        for _ in range(slots):
            self.pc.addTransceiver("audio", direction="recvonly")
            if video:
                self.pc.addTransceiver("video", direction="recvonly")

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            mid = next(t.mid for t in self.pc.getTransceivers() if t.receiver.track is track)
            self.received[str(mid)] = Received(track.kind)
            self._tasks.append(asyncio.ensure_future(self._consume(str(mid), track)))

    async def offer(self) -> dict[str, str]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return {"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type}

    async def answer(self, offer: dict[str, str]) -> dict[str, str]:
        """Answer a direct offer from another participant, sending our media where it asks."""
        await self.pc.setRemoteDescription(RTCSessionDescription(**offer))
        for transceiver in self.pc.getTransceivers():
            wants = transceiver._offerDirection in ("sendonly", "sendrecv")
            if wants and transceiver.kind in self._own:
                transceiver.direction = "sendrecv"
                transceiver.sender.replaceTrack(self._own.pop(transceiver.kind))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return {"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type}

    async def accept(self, answer: dict[str, object]) -> None:
        await self.pc.setRemoteDescription(
            RTCSessionDescription(sdp=str(answer["sdp"]), type=str(answer["type"]))
        )

    async def _consume(self, mid: str, track: MediaStreamTrack) -> None:
        got = self.received[mid]
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            got.frames += 1
            if got.first_at is None:
                got.first_at = time.monotonic()
            if isinstance(frame, VideoFrame) and got.frames % 5 == 1:
                plane = frame.planes[0]
                luma = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
                got.levels.append(float(luma[: frame.height, : frame.width].mean()))
                got.heights.append(frame.height)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()
