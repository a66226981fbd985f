"""A synthetic participant (aiortc client with generated video and a tone) for tests, bench
and smoke checks: its video is a flat grey of a known level, so a viewer can tell whose
picture it receives after VP8 coding."""

from __future__ import annotations

import asyncio
import fractions
import math
import time
from dataclasses import dataclass, field

import av
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

from telehub.media import forwarding

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
        self.size = (width, height)
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


class PreencodedTrack(MediaStreamTrack):
    """Replays packets encoded once (VP8 or Opus), paced by the clock: a participant that costs
    the machine almost nothing, so a bench measures the hub, not the participants' encoders.
    aiortc's sender packs ``av.Packet`` as it is. Keyframes come every ``gop`` frames, not on
    request (a browser would answer a PLI at once)."""

    def __init__(self, kind: str, packets: list[av.Packet], interval: float) -> None:
        super().__init__()
        self.kind = kind
        self._packets = packets
        self._interval = interval
        self._start: float | None = None
        self._count = 0
        self._step = packets[1].pts - packets[0].pts if len(packets) > 1 else 1

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.monotonic()
        due = self._start + self._count * self._interval
        late = time.monotonic() - due
        if late > 2 * self._interval:  # like a camera: no backlog sent in a burst, go on from now
            self._start += late
            due += late
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        source = self._packets[self._count % len(self._packets)]
        packet = av.Packet(bytes(source))
        packet.pts = self._count * self._step
        packet.time_base = source.time_base
        self._count += 1
        return packet


def encode_video(track: GreyVideoTrack, seconds: float = 4.0, gop: int = 30) -> list[av.Packet]:
    """VP8 packets of ``seconds`` of the track's pictures (aiortc's default 500 kbps)."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = track.size
    codec.pix_fmt = "yuv420p"
    codec.time_base = fractions.Fraction(1, VIDEO_CLOCK)
    codec.bit_rate = 500_000
    codec.gop_size = gop
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    packets: list[av.Packet] = []
    for i in range(int(seconds * track.fps)):
        frame = VideoFrame.from_ndarray(track._images[i % len(track._images)], format="yuv420p")
        frame.pts = int(i * VIDEO_CLOCK / track.fps)
        frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
        packets.extend(codec.encode(frame))
    packets.extend(codec.encode(None))
    for p in packets:
        p.time_base = fractions.Fraction(1, VIDEO_CLOCK)
    return packets


def encode_audio(track: ToneAudioTrack, seconds: float = 1.0) -> list[av.Packet]:
    """Opus packets (20 ms each) of the track's tone."""
    codec = av.CodecContext.create("libopus", "w")
    codec.sample_rate = ToneAudioTrack.RATE
    codec.layout = "stereo"
    codec.format = "s16"
    packets: list[av.Packet] = []
    samples = ToneAudioTrack.SAMPLES
    for i in range(int(seconds * ToneAudioTrack.RATE / samples)):
        chunk = track._wave[i * samples : (i + 1) * samples]
        stereo = np.repeat(chunk, 2).reshape(1, -1)
        frame = AudioFrame.from_ndarray(stereo, format="s16", layout="stereo")
        frame.sample_rate = ToneAudioTrack.RATE
        frame.pts = i * samples
        packets.extend(codec.encode(frame))
    for p in packets:
        p.time_base = fractions.Fraction(1, ToneAudioTrack.RATE)
    return packets


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
        preencoded: bool = False,
    ) -> None:
        """``preencoded``: send packets encoded once and count received frames without
        decoding them (a bench participant that loads the hub, not this machine)."""
        self.level = level
        self.preencoded = preencoded
        self._own: dict[str, MediaStreamTrack] = {
            "audio": ToneAudioTrack(220 + level),
            "video": GreyVideoTrack(level, width, height, fps, moving),
        }
        if preencoded:
            audio, video = self._own["audio"], self._own["video"]
            self._own = {
                "audio": PreencodedTrack("audio", encode_audio(audio), 0.02),
                "video": PreencodedTrack("video", encode_video(video), 1 / fps),
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
            if preencoded:
                forwarding.forward(track)  # count what arrives, do not decode it
            mid = next(t.mid for t in self.pc.getTransceivers() if t.receiver.track is track)
            self.received[str(mid)] = Received(track.kind)
            self._tasks.append(asyncio.ensure_future(self._consume(str(mid), track)))

    async def offer(self) -> dict[str, str]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        forwarding.enlarge_socket_buffers(self.pc)  # a bench participant receives a lot too
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
