"""Forwarding media without decoding or re-encoding it: the hub as a selective forwarding unit.

aiortc decodes every received frame in a per-receiver thread and re-encodes it once per viewer
(its ``MediaRelay`` hands out decoded frames); for a two-party recorded consult that was two
decodes, two VP8 encodes and two recording encodes, about 0.43 cores. With :func:`forward`, the
hub's receivers hand on the *encoded* frames instead (``av.Packet``), which aiortc's senders
packetise as they are (``Encoder.pack``) and the recorder muxes as they are. Decoding happens
only where a picture is needed: a viewer that asked for a smaller picture (:class:`DecodedTrack`)
or a codec we do not forward.

What forwarding needs that a transcoder does not:
- **Keyframes on demand.** A viewer (or a recording segment) that starts mid-stream can decode
  nothing until the next keyframe, and browsers send one only when asked. :class:`KeyframeGate`
  drops a new subscriber's frames until a keyframe and asks the source for one (RTCP PLI, via
  :class:`KeyframeSource`); a viewer's own PLI (its decoder lost the picture) is passed upstream
  the same way.
- **One codec end to end.** A packet is only valid for the codec it was encoded with, so the
  hub answers video with VP8 only (:func:`prefer_forwardable`); every browser sends VP8.
- **The sender picks the bitrate.** The hub no longer re-encodes per viewer, so the source's
  bitrate follows the hub's receive estimate (REMB); a viewer on a weak link asks for a lower
  quality and gets a decoded, scaled and re-encoded copy (as before) for itself alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import socket
import threading
import time
import weakref
from fractions import Fraction

import aiortc.rtcrtpreceiver as rtcrtpreceiver
import av
from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
)
from aiortc.codecs import get_decoder
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

log = logging.getLogger(__name__)

#: Codecs whose encoded frames the hub forwards (aiortc can packetise them from packets).
FORWARDED = {"VP8", "opus"}
#: At most one keyframe request per source this often: a burst of PLIs (several viewers, a new
#: segment) costs the sender one keyframe, not many.
KEYFRAME_INTERVAL = 0.5

#: Frames handed on as received, and frames decoded, by receivers of this process (for tests
#: and the benchmark: a forwarded two-party consult decodes nothing).
counts = {"forwarded": 0, "decoded": 0}

_decoder_worker = rtcrtpreceiver.decoder_worker
#: The receive queues of the remote tracks whose receivers forward (see :func:`forward`).
_forwarded_queues: weakref.WeakSet[asyncio.Queue] = weakref.WeakSet()  # type: ignore[type-arg]


def forward(track: MediaStreamTrack) -> None:
    """Make the receiver of this remote track hand on encoded frames, not pictures.

    Call it from the peer connection's "track" event: the receiver's thread starts later, at
    connection. aiortc starts that thread with the track's queue; the worker installed here
    forwards for the queues marked and decodes, as aiortc does, for every other receiver (an
    aiortc client in the same process, such as a test's participant, still gets pictures).
    """
    rtcrtpreceiver.decoder_worker = _worker
    _forwarded_queues.add(track._queue)  # type: ignore[attr-defined]


def _worker(
    loop: asyncio.AbstractEventLoop,
    input_q: queue.Queue,  # type: ignore[type-arg]
    output_q: asyncio.Queue,  # type: ignore[type-arg]
    decode_error: threading.Event,
) -> None:
    if output_q in _forwarded_queues:
        _forwarding_worker(loop, input_q, output_q, decode_error)
    else:
        _decoder_worker(loop, input_q, output_q, decode_error)


def _vp8_keyframe(data: bytes) -> bool:
    # RFC 6386 9.1: bit 0 of the frame tag is 0 for a key frame.
    return len(data) > 0 and not data[0] & 0x01


def _forwarding_worker(
    loop: asyncio.AbstractEventLoop,
    input_q: queue.Queue,  # type: ignore[type-arg]
    output_q: asyncio.Queue,  # type: ignore[type-arg]
    decode_error: threading.Event,
) -> None:
    """aiortc's decoder thread, forwarding: encoded frames out as packets (others decoded)."""
    decoders: dict[str, object] = {}
    while True:
        task = input_q.get()
        if task is None:
            asyncio.run_coroutine_threadsafe(output_q.put(None), loop)
            break
        codec, encoded = task
        if codec.name in FORWARDED:
            packet = av.Packet(encoded.data)
            packet.pts = encoded.timestamp
            packet.dts = encoded.timestamp
            packet.time_base = Fraction(1, codec.clockRate)
            if codec.name == "VP8":
                packet.is_keyframe = _vp8_keyframe(encoded.data)
            else:
                packet.is_keyframe = True  # every Opus packet stands alone
            asyncio.run_coroutine_threadsafe(output_q.put(packet), loop)
            counts["forwarded"] += 1
            continue
        decoder = decoders.get(codec.name)
        if decoder is None:
            decoder = decoders[codec.name] = get_decoder(codec)
        try:
            frames = decoder.decode(encoded)  # type: ignore[attr-defined]
        except av.FFmpegError as exc:
            log.warning("could not decode %s frame: %s", codec.name, exc)
            decode_error.set()
            continue
        counts["decoded"] += 1
        for frame in frames:
            asyncio.run_coroutine_threadsafe(output_q.put(frame), loop)


def prefer_forwardable(transceiver: RTCRtpTransceiver) -> None:
    """Answer video with VP8 (and its retransmission) only, when the offer has VP8.

    Called after setRemoteDescription, before createAnswer: aiortc fixed the common codecs
    there, and there is no earlier place for an answerer to choose.
    """
    if transceiver.kind != "video":
        return
    codecs = transceiver._codecs
    vp8 = [c for c in codecs if c.mimeType.lower() == "video/vp8"]
    if not vp8:
        return
    keep = {c.payloadType for c in vp8}
    rtx = [
        c for c in codecs if c.mimeType.lower() == "video/rtx" and c.parameters.get("apt") in keep
    ]
    transceiver._codecs = vp8 + rtx


#: Receive buffer asked for on the hub's media sockets. Linux's default (208 KiB) overflows
#: when a dozen streams' keyframes arrive together, and a lost packet is a lost frame for
#: every viewer of a forwarded stream. The kernel caps it at net.core.rmem_max (docs/consults.md).
SOCKET_BUFFER = 4 * 1024 * 1024


def enlarge_socket_buffers(pc: RTCPeerConnection) -> int:
    """Give the peer connection's UDP sockets a large receive buffer (after ICE gathering,
    i.e. after setLocalDescription). Returns how many sockets were changed."""
    changed = 0
    seen: set[int] = set()
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        ice = getattr(dtls, "transport", None)
        connection = getattr(ice, "_connection", None)
        for protocol in getattr(connection, "_protocols", []):
            transport = getattr(protocol, "transport", None)
            sock = transport.get_extra_info("socket") if transport is not None else None
            if sock is None or sock.fileno() in seen:
                continue
            seen.add(sock.fileno())
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
                changed += 1
    return changed


class KeyframeSource:
    """Asks one participant's sender for a keyframe (RTCP PLI), at most every 0.5 s."""

    def __init__(self, receiver: RTCRtpReceiver | None) -> None:
        self._receiver = receiver
        self._last = 0.0

    def request(self) -> None:
        receiver = self._receiver
        now = time.monotonic()
        if receiver is None or now - self._last < KEYFRAME_INTERVAL:
            return
        self._last = now
        streams = getattr(receiver, "_RTCRtpReceiver__remote_streams", {})
        for ssrc in list(streams):
            asyncio.ensure_future(receiver._send_rtcp_pli(ssrc))


class KeyframeGate(MediaStreamTrack):
    """One subscriber's view of a forwarded video track: starts at a keyframe, and passes the
    subscriber's own keyframe requests (its sender got a PLI) up to the source."""

    kind = "video"

    def __init__(
        self,
        source: MediaStreamTrack,
        keyframes: KeyframeSource,
        sender: RTCRtpSender | None = None,
    ) -> None:
        super().__init__()
        self._source = source
        self._keyframes = keyframes
        self._sender = sender
        self._started = False

    async def recv(self) -> av.Packet | VideoFrame:
        while True:
            item = await self._source.recv()
            if not isinstance(item, av.Packet):
                return item  # a decoded codec: the sender encodes it
            if self._sender is not None and getattr(
                self._sender, "_RTCRtpSender__force_keyframe", False
            ):
                self._sender._RTCRtpSender__force_keyframe = False  # type: ignore[attr-defined]
                self._keyframes.request()
            if not self._started:
                if not item.is_keyframe:
                    self._keyframes.request()
                    continue
                self._started = True
            return item

    def stop(self) -> None:
        super().stop()
        self._source.stop()


class DecodedTrack(MediaStreamTrack):
    """Pictures from a forwarded video track, for a viewer that needs them scaled down."""

    kind = "video"

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self._source = source
        self._decoder = av.CodecContext.create("vp8", "r")
        self._pending: list[VideoFrame] = []

    async def recv(self) -> VideoFrame:
        while not self._pending:
            item = await self._source.recv()
            if isinstance(item, VideoFrame):
                return item
            if not isinstance(item, av.Packet):
                raise MediaStreamError
            try:
                frames = self._decoder.decode(item)
            except av.FFmpegError:
                continue  # until the next keyframe
            counts["decoded"] += 1
            for frame in frames:
                frame.pts = item.pts
                frame.time_base = item.time_base
                self._pending.append(frame)
        return self._pending.pop(0)

    def stop(self) -> None:
        super().stop()
        self._source.stop()
