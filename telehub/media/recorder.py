"""One recording segment: every participant's audio and video into one Matroska file.

With forwarding (``copy=True``, see :mod:`telehub.media.forwarding`) the received VP8 and Opus
packets are written as they are, no decoding or encoding: the recording costs next to nothing.
Otherwise decoded frames are encoded (H.264 and Opus).

Why not aiortc's MediaRecorder: it encodes and muxes inside the event loop (a 640x480 H.264
frame blocks every other consult for milliseconds) and keeps the RTP timestamps as they come
(random origin per track), so the file's streams do not line up. Here each segment has one
worker thread that owns the container (encode + mux), and timestamps are taken from the hub's
clock relative to the segment start, so all streams share one timeline and the file's duration
is the recorded wall time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame

log = logging.getLogger(__name__)

VIDEO_TIME_BASE = Fraction(1, 1000)
AUDIO_RATE = 48000
# libx264 "ultrafast" costs about a quarter of libvpx realtime on this kind of machine; the
# recording is for the record, not for quality.
VIDEO_OPTIONS = {"preset": "ultrafast", "tune": "zerolatency", "crf": "28"}
# Matroska writes its header (with every stream's size) at the first packet, before a late
# participant's first frame may exist: the recording has one fixed picture size.
RECORD_SIZE = (640, 480)
#: Matroska's Opus track needs the Ogg Opus identification header as its codec private data
#: (RFC 7845 5.1): version 1, 2 channels, 312 samples pre-skip, 48 kHz, no gain, mapping 0.
OPUS_HEAD = b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 312, AUDIO_RATE, 0, 0)


@dataclass
class _Input:
    track: MediaStreamTrack
    label: str
    stream: av.stream.Stream | None = None
    samples: int = 0
    last_pts: int = -1


@dataclass
class SegmentRecorder:
    """Writes the given tracks to ``path``; :meth:`stop` finalises and returns the duration."""

    path: Path
    copy: bool = False  # write received packets as they are (forwarding)
    _inputs: list[_Input] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _container: av.container.OutputContainer | None = None
    _pool: ThreadPoolExecutor | None = None
    _t0: float = 0.0
    _frames: int = 0

    def add_track(self, track: MediaStreamTrack, label: str) -> None:
        """Add a track before :meth:`start` (Matroska needs every stream before the header)."""
        self._inputs.append(_Input(track, label))

    async def start(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"rec-{self.path.stem}")
        self._container = av.open(str(self.path), mode="w", format="matroska")
        for item in self._inputs:
            if self.copy:
                stream = self._copy_stream(item.track.kind)
            elif item.track.kind == "audio":
                stream = self._container.add_stream("libopus", rate=AUDIO_RATE)
                stream.layout = "stereo"
            else:
                stream = self._container.add_stream("libx264", rate=30, options=VIDEO_OPTIONS)
                stream.pix_fmt = "yuv420p"
                stream.width, stream.height = RECORD_SIZE
                stream.codec_context.time_base = VIDEO_TIME_BASE
                stream.time_base = VIDEO_TIME_BASE
            stream.metadata["title"] = item.label
            item.stream = stream
        self._t0 = time.monotonic()
        self._tasks = [asyncio.ensure_future(self._pump(item)) for item in self._inputs]

    def _copy_stream(self, kind: str) -> av.stream.Stream:
        """A stream that takes forwarded packets as they are (VP8 video, Opus audio)."""
        assert self._container is not None
        if kind == "audio":
            stream = self._container.add_stream("libopus", rate=AUDIO_RATE)
            stream.layout = "stereo"
            stream.codec_context.extradata = OPUS_HEAD
        else:
            stream = self._container.add_stream("libvpx", rate=30)
            stream.pix_fmt = "yuv420p"
            stream.width, stream.height = RECORD_SIZE
        stream.codec_context.time_base = VIDEO_TIME_BASE
        stream.time_base = VIDEO_TIME_BASE
        return stream

    @property
    def frames(self) -> int:
        """Frames written so far (0: nothing arrived, the file has no header and is dropped)."""
        return self._frames

    async def _pump(self, item: _Input) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                frame = await item.track.recv()
            except MediaStreamError:
                return
            if isinstance(frame, av.Packet):
                pts = self._stamp_ms(item)
                if pts is not None:
                    await loop.run_in_executor(self._pool, self._mux, item, frame, pts)
                continue
            if self.copy and isinstance(frame, AudioFrame):
                continue  # Opus is always forwarded; nothing else reaches a copy segment
            pts = self._stamp_ms(item) if self.copy else self._stamp(item, frame)
            if pts is not None:
                await loop.run_in_executor(self._pool, self._encode, item, frame, pts)

    def _stamp(self, item: _Input, frame: AudioFrame | VideoFrame) -> int | None:
        """The frame's place on the segment's timeline (hub clock; audio by sample count).

        Frames come from a MediaRelay and are shared with the viewers' encoders running in
        other threads: they are never modified here, :meth:`_encode` stamps a copy.
        """
        elapsed = time.monotonic() - self._t0
        if isinstance(frame, AudioFrame):
            if item.samples == 0:
                item.samples = int(elapsed * AUDIO_RATE)
            pts = item.samples
            item.samples += frame.samples * AUDIO_RATE // frame.sample_rate
            return pts
        return self._stamp_ms(item)

    def _stamp_ms(self, item: _Input) -> int | None:
        """A video frame's or forwarded packet's place on the timeline, in milliseconds."""
        pts = int((time.monotonic() - self._t0) * 1000)
        if pts <= item.last_pts:  # two in one millisecond: drop the second
            return None
        item.last_pts = pts
        return pts

    def _mux(self, item: _Input, packet: av.Packet, pts: int) -> None:
        assert item.stream is not None and self._container is not None
        own = av.Packet(bytes(packet))
        own.pts = own.dts = pts
        own.time_base = VIDEO_TIME_BASE
        own.is_keyframe = packet.is_keyframe
        own.stream = item.stream
        self._container.mux(own)
        self._frames += 1

    def _encode(self, item: _Input, frame: AudioFrame | VideoFrame, pts: int) -> None:
        stream = item.stream
        assert stream is not None and self._container is not None
        if isinstance(frame, VideoFrame):
            if (frame.width, frame.height, frame.format.name) == (*RECORD_SIZE, "yuv420p"):
                own = VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
            else:
                own = frame.reformat(width=RECORD_SIZE[0], height=RECORD_SIZE[1], format="yuv420p")
            own.time_base = VIDEO_TIME_BASE
        else:
            own = AudioFrame.from_ndarray(
                frame.to_ndarray(), format=frame.format.name, layout=frame.layout.name
            )
            own.sample_rate = frame.sample_rate
            own.time_base = Fraction(1, frame.sample_rate)
            pts = int(pts * frame.sample_rate / AUDIO_RATE)
        own.pts = pts
        for packet in stream.encode(own):
            self._container.mux(packet)
        self._frames += 1

    def _close(self) -> None:
        assert self._container is not None
        for item in self._inputs:
            if item.stream is None:
                continue
            with contextlib.suppress(av.error.FFmpegError):
                for packet in item.stream.encode(None):
                    self._container.mux(packet)
        self._container.close()
        self._container = None

    async def stop(self) -> float:
        """Finalise the file (playable afterwards); returns its duration in seconds."""
        duration = time.monotonic() - self._t0
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for item in self._inputs:
            item.track.stop()
        if self._container is not None:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._close)
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        log.info("recording %s finalised: %.1f s, %d frames", self.path, duration, self._frames)
        return duration
