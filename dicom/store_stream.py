"""C-STORE and C-ECHO requests taken straight off the wire, without pynetdicom's DIMSE layer.

pynetdicom carries every received P-DATA-TF PDU through six layers (PDU object, primitive,
state machine, DIMSE message assembly, a queue to the association thread, the service class),
and back again for the response. For the hub's one hot path, a modality pushing instances,
that was half of the CPU per instance. Here the DUL thread hands each P-DATA-TF of an
established association to a :class:`StoreStream` first (see
:func:`dicom.pynetdicom_tuning.install`), which:

* reads the PDV items itself (PS3.8 9.3.5.1) and collects each message's command set;
* for a C-STORE-RQ, writes the data set fragments to a spool file as they arrive (the file
  meta in front, as pynetdicom writes it), hands the file to the receiver's store function
  when the last fragment is in, and sends the C-STORE-RSP itself;
* answers a C-ECHO-RQ;
* passes every other message (C-FIND, C-MOVE, C-GET, C-CANCEL, responses to the hub's own
  C-STORE sub-operations, anything it does not expect) on to pynetdicom unchanged, PDV by PDV,
  so those services and every error path stay pynetdicom's.

Negotiation, release, abort and timers stay pynetdicom's too: only P-DATA-TF PDUs come here,
and only once the association is established.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pynetdicom
from pynetdicom.association import Association

from telehub.store import Stored

log = logging.getLogger(__name__)

#: Data sets up to this size are also kept in memory for the structure check (bounded: one
#: per association), so a small instance's file is written once and never read back.
KEEP_IN_MEMORY = 256 * 1024


@dataclass(frozen=True)
class Received:
    """A received data set, as a Part 10 file in the spool (not yet fsynced: the store links
    it to its final name first, so one journal commit makes data and name durable)."""

    path: Path
    #: Size and SHA-256 of the whole file, computed as it was written (None: not known, e.g.
    #: pynetdicom's own receive path).
    known: Stored | None = None
    #: The file's bytes, for an instance of up to KEEP_IN_MEMORY bytes.
    content: bytes | None = None


#: ``store(assoc, sop_class_uid, sop_instance_uid, received) -> (status, error comment)``.
StoreFunction = Callable[[Association, str, str, Received], tuple[int, str]]

C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
NO_DATA_SET = 0x0101

_COMMAND_FIELD = 0x00000100
_MESSAGE_ID = 0x00000110
_DATA_SET_TYPE = 0x00000800
_AFFECTED_CLASS = 0x00000002
_AFFECTED_INSTANCE = 0x00001000

_IDLE, _COMMAND, _DATA, _PASS = range(4)
_PDV_HEADER = struct.Struct(">LBB")
_ELEMENT_HEADER = struct.Struct("<HHL")


class CommandError(ValueError):
    """A command set that is not valid Implicit VR Little Endian."""


def parse_command(raw: bytes | bytearray) -> dict[int, bytes]:
    """The elements of a DIMSE command set (Implicit VR Little Endian, PS3.7 6.3.1)."""
    elements: dict[int, bytes] = {}
    offset, end = 0, len(raw)
    while offset < end:
        if offset + 8 > end:
            raise CommandError("truncated element header")
        group, element, length = _ELEMENT_HEADER.unpack_from(raw, offset)
        offset += 8
        if group != 0x0000 or offset + length > end:
            raise CommandError(f"element ({group:04X},{element:04X}) out of place")
        elements[element] = bytes(raw[offset : offset + length])
        offset += length
    return elements


def _us(elements: dict[int, bytes], tag: int) -> int | None:
    value = elements.get(tag)
    return struct.unpack("<H", value)[0] if value is not None and len(value) == 2 else None


def _ui(elements: dict[int, bytes], tag: int) -> str:
    return elements.get(tag, b"").rstrip(b"\0 ").decode("ascii", errors="replace")


def _encode_element(tag: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if tag in (_AFFECTED_CLASS, _AFFECTED_INSTANCE) else b" "
    return _ELEMENT_HEADER.pack(0x0000, tag, len(value)) + value


def encode_response(
    command_field: int,
    message_id: int,
    status: int,
    sop_class_uid: str,
    sop_instance_uid: str = "",
    error_comment: str = "",
) -> bytes:
    """A C-STORE-RSP or C-ECHO-RSP command set, elements in ascending order with its group
    length first (PS3.7 9.3.1.2, 9.3.5.2)."""
    us = lambda v: struct.pack("<H", v)  # noqa: E731
    body = b"".join(
        (
            _encode_element(_AFFECTED_CLASS, sop_class_uid.encode("ascii")),
            _encode_element(_COMMAND_FIELD, us(command_field)),
            _encode_element(0x00000120, us(message_id)),
            _encode_element(_DATA_SET_TYPE, us(NO_DATA_SET)),
            _encode_element(0x00000900, us(status)),
            _encode_element(0x00000902, error_comment[:64].encode("ascii", "replace"))
            if error_comment
            else b"",
            _encode_element(_AFFECTED_INSTANCE, sop_instance_uid.encode("ascii"))
            if sop_instance_uid
            else b"",
        )
    )
    return _encode_element(0x00000000, struct.pack("<L", len(body))) + body


def p_data_tf(context_id: int, command: bytes, max_pdu: int) -> bytes:
    """One or more P-DATA-TF PDUs carrying a command set, split to the peer's maximum PDU
    length (0: no limit)."""
    room = len(command) if not max_pdu else max(1, max_pdu - 6)
    pdus = []
    for start in range(0, len(command), room):
        fragment = command[start : start + room]
        last = start + room >= len(command)
        item = _PDV_HEADER.pack(len(fragment) + 2, context_id, 0x03 if last else 0x01)
        pdus.append(struct.pack(">BBL", 0x04, 0, len(item) + len(fragment)) + item + fragment)
    return b"".join(pdus)


def _meta_element(group_element: int, vr: bytes, value: bytes) -> bytes:
    tag = struct.pack("<HH", group_element >> 16, group_element & 0xFFFF)
    if vr == b"OB":
        return tag + vr + b"\0\0" + struct.pack("<L", len(value)) + value
    return tag + vr + struct.pack("<H", len(value)) + value


def _uid_value(uid: str) -> bytes:
    raw = str(uid).encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def file_meta(*, sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """The File Meta Information pynetdicom writes in front of every received data set,
    encoded directly (Explicit VR Little Endian, PS3.10 7.1): building and writing it through
    pydicom datasets cost a tenth of the receive path."""
    version = pynetdicom.PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii")
    body = b"".join(
        (
            _meta_element(0x00020001, b"OB", b"\0\1"),
            _meta_element(0x00020002, b"UI", _uid_value(sop_class_uid)),
            _meta_element(0x00020003, b"UI", _uid_value(sop_instance_uid)),
            _meta_element(0x00020010, b"UI", _uid_value(transfer_syntax)),
            _meta_element(0x00020012, b"UI", _uid_value(pynetdicom.PYNETDICOM_IMPLEMENTATION_UID)),
            _meta_element(0x00020013, b"SH", version + b" " * (len(version) % 2)),
        )
    )
    return _meta_element(0x00020000, b"UL", struct.pack("<L", len(body))) + body


@dataclass
class _Message:
    context_id: int
    command: bytearray
    raw_items: list[bytes]


class StoreStream:
    """One acceptor association's fast path; lives on (and runs in) its DUL thread."""

    def __init__(self, assoc: Association, store: StoreFunction, spool: Path) -> None:
        self.assoc = assoc
        self._store = store
        self._spool = str(spool)
        self._state = _IDLE
        self._message: _Message | None = None
        self._request: dict[int, bytes] = {}
        self._fd: int | None = None
        self._path: str | None = None
        self._hash = hashlib.sha256()
        self._size = 0
        self._kept: bytearray | None = None
        self._error: tuple[int, str] | None = None

    # ----- PDUs in --------------------------------------------------------------------
    def take(self, pdu: bytearray | memoryview) -> bytes | None:
        """Consume one P-DATA-TF PDU (header included); returns a P-DATA-TF of the PDV items
        pynetdicom must still see (None if none), in their order."""
        if not self.assoc.is_established:
            return bytes(pdu) if self._state == _IDLE else self._fail("P-DATA before accept")
        view = memoryview(pdu)
        passed: list[bytes] = []
        offset, end = 6, len(pdu)
        while offset < end:
            if offset + 6 > end:
                return self._fail("truncated PDV item")
            length, context_id, control = _PDV_HEADER.unpack_from(pdu, offset)
            if length < 2 or offset + 4 + length > end:
                return self._fail("PDV item length out of range")
            item = view[offset : offset + 4 + length]
            self._pdv(context_id, control, item, passed)
            offset += 4 + length
        if not passed:
            return None
        body = b"".join(passed)
        return struct.pack(">BBL", 0x04, 0, len(body)) + body

    def _pdv(self, context_id: int, control: int, item: memoryview, passed: list[bytes]) -> None:
        is_command, last = control & 0x01, control & 0x02
        fragment = item[6:]
        state = self._state
        if state == _DATA:
            if is_command or context_id != self._message.context_id:  # type: ignore[union-attr]
                # Protocol error mid-message: drop our part, let pynetdicom deal with the rest.
                self._discard()
                self._state = _PASS
                passed.append(bytes(item))
                return
            self._write(fragment)
            if last:
                self._complete_store()
            return
        if state == _PASS:
            passed.append(bytes(item))
            if not is_command and last:
                self._state = _IDLE
            return
        if not is_command:  # data with no command: pynetdicom's error to report
            passed.append(bytes(item))
            return
        if state == _IDLE:
            self._message = _Message(context_id, bytearray(), [])
            self._state = _COMMAND
        message = self._message
        assert message is not None
        message.command += fragment
        message.raw_items.append(bytes(item))
        if not last:
            return
        self._dispatch(message, passed)

    def _dispatch(self, message: _Message, passed: list[bytes]) -> None:
        """A whole command set is in: ours to serve, or pynetdicom's."""
        try:
            request = parse_command(message.command)
        except CommandError:
            request = {}
        command = _us(request, _COMMAND_FIELD)
        has_data = _us(request, _DATA_SET_TYPE) != NO_DATA_SET
        context = self.assoc._accepted_cx.get(message.context_id)
        ours = context is not None and _us(request, _MESSAGE_ID) is not None
        if ours and command == C_STORE_RQ and has_data:
            self._request = request
            self._open_spool(context.transfer_syntax[0])  # type: ignore[union-attr]
            self._state = _DATA
        elif ours and command == C_ECHO_RQ and not has_data:
            self._respond(message.context_id, C_ECHO_RSP, request, 0x0000)
            self._state = _IDLE
        else:
            passed.extend(message.raw_items)
            self._state = _PASS if has_data else _IDLE
        self._message = None if self._state != _DATA else message

    # ----- one C-STORE ----------------------------------------------------------------
    def _open_spool(self, transfer_syntax: str) -> None:
        self._hash = hashlib.sha256()
        self._size = 0
        self._kept = bytearray()
        self._error = None
        try:
            fd, self._path = tempfile.mkstemp(suffix=".dcm", dir=self._spool)
        except OSError as exc:
            self._spool_failed(exc)
            return
        self._fd = fd
        header = file_meta(
            sop_class_uid=_ui(self._request, _AFFECTED_CLASS),
            sop_instance_uid=_ui(self._request, _AFFECTED_INSTANCE),
            transfer_syntax=transfer_syntax,
        )
        self._write(b"\0" * 128 + b"DICM" + header)

    def _write(self, data: bytes | memoryview) -> None:
        """Append to the spool file, hashing as it goes (the store then need not read the file
        back); a small instance's bytes are also kept for the structure check."""
        if self._error is not None:
            return  # the spool failed: the rest of the data set is read and dropped
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]  # type: ignore[arg-type]
        except OSError as exc:
            self._spool_failed(exc)
            return
        self._hash.update(data)
        self._size += len(data)
        if self._kept is not None:
            if self._size <= KEEP_IN_MEMORY:
                self._kept += data
            else:
                self._kept = None

    def _spool_failed(self, exc: OSError) -> None:
        log.error("cannot spool a received instance: %s", exc)
        self._discard_file()
        self._error = (0xA700, "out of resources: cannot write to the spool")

    def _complete_store(self) -> None:
        request, path, message = self._request, self._path, self._message
        assert message is not None
        self._message = None
        self._state = _IDLE
        if self._error is not None:
            status, comment = self._error
        else:
            os.close(self._fd)  # type: ignore[arg-type]
            self._fd, self._path = None, None
            received = Received(
                Path(path),  # type: ignore[arg-type]
                Stored(self._size, self._hash.hexdigest()),
                bytes(self._kept) if self._kept is not None else None,
            )
            try:
                status, comment = self._store(
                    self.assoc,
                    _ui(request, _AFFECTED_CLASS),
                    _ui(request, _AFFECTED_INSTANCE),
                    received,
                )
            except Exception:  # the store function reports its own failures; this is a bug
                log.exception("C-STORE handler failed")
                status, comment = 0x0110, "could not store instance"
            finally:
                # Stored copies are hard links or uploads: the spool name is ours to drop.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)  # type: ignore[arg-type]
        self._kept = None
        self._respond(message.context_id, C_STORE_RSP, request, status, comment)

    def _respond(
        self, context_id: int, field: int, request: dict[int, bytes], status: int, comment: str = ""
    ) -> None:
        command = encode_response(
            field,
            _us(request, _MESSAGE_ID) or 0,
            status,
            _ui(request, _AFFECTED_CLASS),
            _ui(request, _AFFECTED_INSTANCE),
            comment,
        )
        self.assoc.dul.socket.send(  # type: ignore[union-attr]
            p_data_tf(context_id, command, self.assoc.requestor.maximum_length or 0)
        )

    # ----- ends -----------------------------------------------------------------------
    def _discard(self) -> None:
        self._discard_file()
        self._message = None

    def _discard_file(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            self._path = None

    def _fail(self, why: str) -> bytes | None:
        self._discard()
        raise CommandError(why)

    def close(self) -> None:
        """The connection closed: a half-received instance is not kept."""
        self._discard()
        self._state = _IDLE


def attach(assoc: Association, store: StoreFunction, spool: Path) -> None:
    """Serve this acceptor association's C-STORE and C-ECHO requests on the fast path (when
    :mod:`dicom.pynetdicom_tuning` is installed; pynetdicom's own path otherwise)."""
    assoc.dul._telehub_stream = StoreStream(assoc, store, spool)  # type: ignore[attr-defined]
