"""pynetdicom's hot spots, patched in one place: polling loops woken by events instead of
sleeping a fixed millisecond, large socket reads, the received file meta encoded directly, and
a cheap copy of the supported contexts for each new association.

pynetdicom 3.0 runs two loops per association: the DUL reactor (socket <-> state machine) and
the association reactor (DIMSE messages -> handlers). Each sleeps ~1 ms whenever it finds
nothing to do, so every C-STORE request and its response wait out up to three sleeps: about
300 small instances/s per association at best (see ../shared/PEERS.md and pynetdicom issues
#120, #650). Here both sleeps become waits that return as soon as there is work:

* the DUL thread waits in ``select`` on its socket and on a wake-up socketpair that is written
  whenever a primitive is queued for sending (``to_provider_queue.put``);
* the association thread waits on its DIMSE message queue's condition.

Both still return after a bounded timeout so timers (ARTIM, idle) and kill flags are checked as
before. And the socket is read in large chunks instead of 4 KiB ones, and the file meta of each
received data set is encoded directly. The loops themselves
are untouched: only the ``time`` module the two pynetdicom modules
see is replaced by one whose ``sleep`` does the wait when called from those threads. Installed
once per process by :func:`install`, for the pynetdicom versions it was checked against.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import queue
import select
import socket
import ssl
import struct
import threading
import time
import types
from typing import Any

import pynetdicom
from pynetdicom import association as _association
from pynetdicom import dimse_messages as _dimse_messages
from pynetdicom import dul as _dul
from pynetdicom import transport
from pynetdicom.presentation import PresentationContext

from dicom import negotiation, store_stream

log = logging.getLogger(__name__)

#: Longest wait before the loops look at their timers and kill flags again.
MAX_WAIT = 0.02
CHECKED_VERSIONS = ("3.0.",)
_installed = False


class _WakeQueue(queue.Queue):  # type: ignore[type-arg]
    """The DUL's outgoing primitive queue: a put also wakes the DUL thread."""

    def __init__(self, waker: socket.socket) -> None:
        super().__init__()
        self._waker = waker

    def _put(self, item: Any) -> None:
        super()._put(item)
        # A full pipe already wakes the reader; a closed one has no reader left.
        with contextlib.suppress(OSError):
            self._waker.send(b"\0")


class _UserQueue(queue.Queue):  # type: ignore[type-arg]
    """The DUL's queue of primitives for the association (A-RELEASE, A-ABORT, ...): a put also
    wakes the association thread, which otherwise waits only on its DIMSE message queue and
    found a release request at its next timeout: 10-20 ms added to every association."""

    def __init__(self, wake: threading.Condition) -> None:
        super().__init__()
        self._wake = wake

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        with self._wake:
            self._wake.notify_all()


def _dul_wait(dul: _dul.DULServiceProvider, delay: float) -> None:
    wake = getattr(dul, "_telehub_wake", None)
    sock = getattr(dul.socket, "socket", None) if dul.socket is not None else None
    if wake is None or sock is None:
        time.sleep(delay)
        return
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return
    if not dul.to_provider_queue.empty() or not dul.event_queue.empty():
        return
    try:
        readable, _, _ = select.select([sock, wake], [], [], MAX_WAIT)
    except (OSError, ValueError):
        return  # the socket closed: let the loop find out
    if wake in readable:
        with contextlib.suppress(OSError):
            while wake.recv(4096):
                pass


def _association_wait(assoc: _association.Association, delay: float) -> None:
    messages = assoc.dimse.msg_queue
    with messages.not_empty:
        if not messages._qsize():
            # A primitive already waiting (put just before this wait, so its wake-up was
            # missed) gets pynetdicom's own 1 ms; otherwise the next put wakes us.
            messages.not_empty.wait(delay if assoc.dul.to_user_queue.qsize() else MAX_WAIT)
        if messages._qsize():
            # Queue.put wakes one waiter. Pass the wake-up on, in case another thread waits in
            # get() for this message (a requestor's send_c_*() does), or it would sleep until
            # its DIMSE timeout.
            messages.not_empty.notify()


def _sleep(delay: float) -> None:
    current = threading.current_thread()
    if isinstance(current, _dul.DULServiceProvider):
        _dul_wait(current, delay)
    elif isinstance(current, _association.Association) and current.is_acceptor and delay == 0.001:
        # Only an acceptor's reactor thread consumes its DIMSE messages itself; a requestor's
        # are taken by the thread calling send_c_*(), so its reactor keeps plain sleeps.
        _association_wait(current, delay)
    else:
        time.sleep(delay)


#: Largest single read: pynetdicom reads 4 KiB at a time, 130 calls for a 0.5 MB CT image.
RECV_CHUNK = 256 * 1024


def _recv(self: transport.AssociationSocket, nr_bytes: int) -> bytearray:
    """pynetdicom's ``AssociationSocket.recv`` with large reads (same contract: up to
    ``nr_bytes``, fewer only if the connection broke; memory grows with what arrives, not
    with what the peer claims it will send)."""
    sock = self.socket
    assert sock is not None
    data = bytearray()
    while len(data) < nr_bytes:
        chunk = sock.recv(min(nr_bytes - len(data), RECV_CHUNK))
        if not chunk:
            break
        data += chunk
    return data


#: Largest PDU read into one buffer at once; a longer one (beyond what we negotiated) is read
#: in chunks, so memory follows what arrives rather than what the peer claims.
PREALLOCATE = 4 * 1024 * 1024


def _recv_pdu(
    dul: _dul.DULServiceProvider, header: bytes, length: int
) -> bytearray | memoryview | None:
    """The whole PDU, header included, read straight into the association's receive buffer
    (reused from PDU to PDU: a fresh 0.5 MB buffer per CT instance cost page faults and
    zeroing); None if the connection closed first. Valid until the next PDU is read."""
    sock = dul.socket
    assert sock is not None
    if length > PREALLOCATE:
        pdu = bytearray(header) + _recv(sock, length)
        return pdu if len(pdu) == 6 + length else None
    raw = sock.socket
    assert raw is not None
    buffer = getattr(dul, "_telehub_buffer", None)
    if buffer is None or len(buffer) < 6 + length:
        buffer = dul._telehub_buffer = bytearray(max(6 + length, 64 * 1024))  # type: ignore[attr-defined]
    view = memoryview(buffer)[: 6 + length]
    view[:6] = header
    got = 6
    while got < len(view):
        n = raw.recv_into(view[got:])
        if not n:
            return None
        got += n
    return view


_read_pdu_data = _dul.DULServiceProvider._read_pdu_data


def _read_pdu(self: _dul.DULServiceProvider) -> None:
    """pynetdicom's ``DULServiceProvider._read_pdu_data``, except that a P-DATA-TF goes to the
    association's :class:`~dicom.store_stream.StoreStream` first, and only what it passes on
    is decoded by pynetdicom. Same events for the same failures (Evt17 connection closed,
    Evt19 invalid PDU)."""
    stream = getattr(self, "_telehub_stream", None)
    if stream is None:
        _read_pdu_data(self)
        return
    sock = self.socket
    assert sock is not None
    try:
        header = sock.recv(6)
        if len(header) < 6:
            self.event_queue.put("Evt17")
            return
        pdu_type, _, length = struct.unpack(">BBL", header)
        if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
            log.error("unknown PDU type 0x%02X received", pdu_type)
            self.event_queue.put("Evt19")
            return
        pdu = _recv_pdu(self, header, length)
    except (OSError, TimeoutError):
        log.error("connection closed before the entire PDU was received")
        self.event_queue.put("Evt17")
        return
    if pdu is None:
        log.error("the connection closed before the whole PDU (%d bytes) was received", length)
        self.event_queue.put("Evt17")
        return
    if pdu_type == 0x04:
        try:
            rest = stream.take(pdu)
        except store_stream.CommandError as exc:
            log.error("invalid P-DATA-TF: %s", exc)
            self.event_queue.put("Evt19")
            return
        if rest is None:
            return
        pdu = rest
    try:
        decoded, event = self._decode_pdu(pdu)
    except Exception:
        log.exception("unable to decode the received PDU")
        self.event_queue.put("Evt19")
        return
    self.event_queue.put(event)
    self._recv_pdu.put(decoded)


def _copy_contexts(value: Any) -> Any:
    """What pynetdicom's acceptor set-up deep-copies: the server's supported presentation
    contexts, 177 of them with 45 transfer syntaxes each. ``copy.deepcopy`` of that took 37 ms
    of the GIL for every association; the contexts hold only immutable values besides their
    transfer syntax list, so copying that list is the same copy."""
    if isinstance(value, list) and all(isinstance(cx, PresentationContext) for cx in value):
        return [negotiation.copy_context(cx, list(cx.transfer_syntax)) for cx in value]
    return copy.deepcopy(value)


def _write_file_meta(fp: Any, file_meta: bytes) -> None:
    fp.write(file_meta)


def prepare(assoc: _association.Association) -> None:
    """Give one association's DUL its wake-up pair; call when the connection opens, before
    anything is queued for sending."""
    dul = assoc.dul
    if getattr(dul, "_telehub_wake", None) is not None:
        return
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    dul._telehub_wake = reader  # type: ignore[attr-defined]
    dul._telehub_waker = writer  # type: ignore[attr-defined]
    pending = dul.to_provider_queue
    dul.to_provider_queue = _WakeQueue(writer)
    while True:
        try:
            dul.to_provider_queue.put(pending.get_nowait())
        except queue.Empty:
            break
    if assoc.is_acceptor:
        arrived = dul.to_user_queue
        dul.to_user_queue = _UserQueue(assoc.dimse.msg_queue.not_empty)
        while True:
            try:
                dul.to_user_queue.put(arrived.get_nowait())
            except queue.Empty:
                break


def release(assoc: _association.Association) -> None:
    """Close the association's wake-up pair and fast path once it has ended."""
    stream = getattr(assoc.dul, "_telehub_stream", None)
    if stream is not None:
        stream.close()
    for name in ("_telehub_wake", "_telehub_waker"):
        sock = getattr(assoc.dul, name, None)
        if sock is not None:
            sock.close()


def install() -> bool:
    """Patch pynetdicom's loops in this process; False (and unpatched) for an unchecked
    pynetdicom version."""
    global _installed
    if _installed:
        return True
    if not pynetdicom.__version__.startswith(CHECKED_VERSIONS):
        log.warning(
            "pynetdicom %s is not one the event-driven loops were checked against; "
            "keeping its polling loops",
            pynetdicom.__version__,
        )
        return False
    patched = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if k[0] != "_"})
    patched.sleep = _sleep
    _dul.time = patched  # type: ignore[attr-defined]
    _association.time = patched  # type: ignore[attr-defined]
    transport.AssociationSocket.recv = _recv  # type: ignore[method-assign]
    _dul.DULServiceProvider._read_pdu_data = _read_pdu  # type: ignore[method-assign]
    transport.deepcopy = _copy_contexts  # type: ignore[attr-defined]
    _dimse_messages.create_file_meta = store_stream.file_meta  # type: ignore[attr-defined]
    _dimse_messages.write_file_meta_info = _write_file_meta  # type: ignore[attr-defined]
    _installed = True
    return True
