"""Media tracks the hub adds on the relay path: a video track scaled down for a weak viewer."""

from __future__ import annotations

import asyncio

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame

# Named quality levels a viewer may ask for (the ``quality`` signaling message): the height
# of the video the hub relays to that viewer; None keeps the sender's size; "audio" sends none.
QUALITY_HEIGHTS: dict[str, int | None] = {"high": None, "medium": 360, "low": 240}
QUALITY_LEVELS = (*QUALITY_HEIGHTS, "audio")


class ScaledVideoTrack(MediaStreamTrack):
    """Reads frames from ``source`` and scales them down to ``height`` (aspect kept, even sizes).

    aiortc's VP8 encoder only lowers its bitrate (floor 250 kbps) on REMB; a smaller picture is
    what lets a township link below that floor keep a fluid picture.
    """

    kind = "video"

    def __init__(self, source: MediaStreamTrack, height: int) -> None:
        super().__init__()
        self._source = source
        self.height = height

    async def recv(self) -> VideoFrame:
        frame = await self._source.recv()
        if frame.height <= self.height:
            return frame
        width = max(2, round(frame.width * self.height / frame.height / 2) * 2)
        scaled = frame.reformat(width=width, height=self.height)
        scaled.pts = frame.pts
        scaled.time_base = frame.time_base
        return scaled

    def stop(self) -> None:
        super().stop()
        self._source.stop()


class SlotTrack(MediaStreamTrack):
    """What the hub sends on one of a viewer's receive slots; its source can be swapped.

    The viewer's RTCRtpSender keeps this one track for the life of the peer connection, so a
    slot can go from one participant to the next without renegotiation and without killing the
    sender (aiortc's sender stops for good when its track raises MediaStreamError). Without a
    source the slot sends nothing. The source's timestamps pass through: a swap makes the RTP
    timestamp jump once, which receivers treat as a gap.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._source: MediaStreamTrack | None = None
        self._generation = 0
        self._pending: asyncio.Future[AudioFrame | VideoFrame] | None = None
        self._changed = asyncio.Event()

    @property
    def source(self) -> MediaStreamTrack | None:
        return self._source

    def set_source(self, track: MediaStreamTrack | None) -> None:
        """Carry ``track`` from now on (None: send nothing); the old source is stopped."""
        old, self._source = self._source, track
        self._generation += 1
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()
        if old is not None and old is not track:
            old.stop()
        self._changed.set()

    async def recv(self) -> AudioFrame | VideoFrame:
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            source, generation = self._source, self._generation
            if source is None:
                self._changed.clear()
                await self._changed.wait()
                continue
            self._pending = asyncio.ensure_future(source.recv())
            try:
                return await self._pending
            except asyncio.CancelledError:
                if generation == self._generation:
                    raise  # our caller was cancelled, not a swap
            except MediaStreamError:  # the participant's track ended: wait for a new source
                if generation == self._generation:
                    self._source = None

    def stop(self) -> None:
        super().stop()
        self.set_source(None)
