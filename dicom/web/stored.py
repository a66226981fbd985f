"""Reading parts of a stored Part 10 instance without loading all of it.

The data set is parsed up to the pixel data with large values deferred, so a 2 GB multi-frame
costs its header in memory; frames and bulk values are then read from their file offsets (an
encapsulated frame through pydicom's ``get_frame``, which follows the offset table or the
fragments). An S3 object is not seekable, so it is spooled to a temporary file first.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian

from telehub.errors import NotFound, TelehubError
from telehub.store import CHUNK, ObjectStore

#: Values larger than this are not read while parsing (they are bulk data or read on demand).
DEFER_SIZE = 256 * 1024
SPOOL_IN_MEMORY = 16 * 1024 * 1024
PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)  # float, double float, pixel data
UNDEFINED = 0xFFFFFFFF
EXPLICIT_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}

#: Media type of an encapsulated frame by transfer syntax (PS3.18 table 8.7.3-5).
FRAME_MEDIA_TYPES = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.4.201": "image/jphc",
    "1.2.840.10008.1.2.4.202": "image/jphc",
    "1.2.840.10008.1.2.4.203": "image/jphc",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
}


class NotAcceptable(TelehubError):
    code = "not_acceptable"
    http_status = 406


@dataclass(frozen=True)
class PixelLocation:
    """Where the pixel data value is: a file offset, or the bytes when the file is deflated."""

    tag: int
    vr: str
    offset: int | None
    length: int | None  # None: encapsulated (undefined length)
    data: bytes | None = None


@dataclass
class StoredInstance:
    """A stored instance opened for reading: its header and where its pixel data lies."""

    fh: BinaryIO
    ds: Dataset
    transfer_syntax: UID
    pixels: PixelLocation | None

    @property
    def number_of_frames(self) -> int:
        try:
            return max(1, int(self.ds.get("NumberOfFrames") or 1))
        except (TypeError, ValueError):
            return 1

    @property
    def deflated(self) -> bool:
        return self.transfer_syntax == DeflatedExplicitVRLittleEndian

    @property
    def big_endian(self) -> bool:
        return self.transfer_syntax == ExplicitVRBigEndian


@contextmanager
def open_seekable(store: ObjectStore, key: str) -> Iterator[BinaryIO]:
    """The object as a seekable file; a stream that cannot seek is spooled (memory, then disk)."""
    from telehub.store import ObjectNotFound

    try:
        fh = store.open(key)
    except ObjectNotFound as exc:
        raise NotFound("the instance's stored object is missing", "object_missing") from exc
    with fh:
        if fh.seekable():
            yield fh
            return
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY) as spool:
            shutil.copyfileobj(fh, spool, CHUNK)
            spool.seek(0)
            yield spool  # type: ignore[misc]


@contextmanager
def open_instance(store: ObjectStore, key: str) -> Iterator[StoredInstance]:
    with open_seekable(store, key) as fh:
        yield parse(fh)


def parse(fh: BinaryIO) -> StoredInstance:
    """Parse the header (everything before the pixel data) and locate the pixel data."""
    fh.seek(0)
    ds = pydicom.dcmread(fh, defer_size=DEFER_SIZE, stop_before_pixels=True)
    ts = UID(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))
    if ts == DeflatedExplicitVRLittleEndian:
        # Offsets in a deflated file mean nothing: read it whole (deflate is for small objects).
        fh.seek(0)
        full = pydicom.dcmread(fh)
        pixels = next(
            (
                PixelLocation(t, full[t].VR, None, len(full[t].value), full[t].value)
                for t in PIXEL_TAGS
                if t in full
            ),
            None,
        )
        return StoredInstance(fh, full, ts, pixels)
    return StoredInstance(fh, ds, ts, _locate_pixels(fh, ds, ts))


def _locate_pixels(fh: BinaryIO, ds: Dataset, ts: UID) -> PixelLocation | None:
    """Read the element header where pydicom stopped (it stops at the pixel data tag)."""
    start = fh.tell()
    head = fh.read(8)
    if len(head) < 8:
        return None
    little = ts != ExplicitVRBigEndian
    order = "<" if little else ">"
    group, elem = struct.unpack(order + "HH", head[:4])
    tag = group << 16 | elem
    if tag not in PIXEL_TAGS:
        return None
    implicit = ts == "1.2.840.10008.1.2"
    if implicit:
        (length,) = struct.unpack(order + "I", head[4:8])
        offset = start + 8
        vr = {0x7FE00008: "OF", 0x7FE00009: "OD"}.get(
            tag, "OW" if int(ds.get("BitsAllocated", 16)) > 8 else "OB"
        )
    else:
        vr_bytes = head[4:6]
        vr = vr_bytes.decode("ascii", "replace")
        if vr_bytes in EXPLICIT_LONG_VRS:
            (length,) = struct.unpack(order + "I", fh.read(4))
            offset = start + 12
        else:
            (length,) = struct.unpack(order + "H", head[6:8])
            offset = start + 8
    return PixelLocation(tag, vr, offset, None if length == UNDEFINED else length)


def native_frame_length(ds: Dataset) -> int:
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    samples, bits = int(ds.get("SamplesPerPixel", 1)), int(ds.get("BitsAllocated", 8))
    if bits % 8:
        raise NotAcceptable(f"frames of {bits}-bit pixel data are not supported", "bit_packed")
    return rows * cols * samples * bits // 8


def check_frames(inst: StoredInstance, numbers: list[int]) -> None:
    if inst.pixels is None:
        raise NotFound("the instance has no pixel data", "no_pixel_data")
    count = inst.number_of_frames
    bad = [n for n in numbers if n > count]
    if bad:
        raise NotFound(
            f"frame {bad[0]} does not exist (the instance has {count})", "frame_not_found"
        )


def stored_frame(inst: StoredInstance, number: int) -> bytes:
    """Frame ``number`` (1-based) as stored: native bytes, or the encapsulated frame."""
    px = inst.pixels
    assert px is not None
    index = number - 1
    if px.length is None:  # encapsulated
        assert px.offset is not None
        inst.fh.seek(px.offset)
        return get_frame(inst.fh, index, number_of_frames=inst.number_of_frames)
    if inst.transfer_syntax.is_encapsulated and px.data is not None:
        return get_frame(px.data, index, number_of_frames=inst.number_of_frames)
    size = native_frame_length(inst.ds)
    if px.data is not None:
        return px.data[index * size : (index + 1) * size]
    assert px.offset is not None
    inst.fh.seek(px.offset + index * size)
    data = inst.fh.read(size)
    if len(data) != size:
        raise NotFound(f"frame {number} is truncated in the stored object", "frame_not_found")
    return data


def native_frame(inst: StoredInstance, number: int) -> bytes:
    """Frame ``number`` as uncompressed little-endian pixels (decoded or byte-swapped)."""
    if inst.transfer_syntax.is_encapsulated:
        return decoded_frame(inst, number, raw=True).tobytes()
    data = stored_frame(inst, number)
    bits = int(inst.ds.get("BitsAllocated", 8))
    if inst.big_endian and bits in (16, 32, 64):
        return np.frombuffer(data, dtype=f">u{bits // 8}").astype(f"<u{bits // 8}").tobytes()
    return data


def decoded_frame(inst: StoredInstance, number: int, raw: bool = False) -> np.ndarray:
    """One frame decoded by pydicom and its plugins (pylibjpeg, ...); RGB unless ``raw``."""
    from pydicom.pixels import pixel_array

    inst.fh.seek(0)
    src = inst.ds if inst.deflated else inst.fh  # a deflated one was read whole
    try:
        return pixel_array(src, index=number - 1, raw=raw)
    except (RuntimeError, ValueError, NotImplementedError) as exc:
        raise NotAcceptable(
            f"cannot decode pixel data in transfer syntax {inst.transfer_syntax}: {exc}",
            "cannot_decode",
        ) from exc


def iter_value(inst: StoredInstance, offset: int, length: int) -> Iterator[bytes]:
    """A stored value in chunks, read from its file offset."""
    inst.fh.seek(offset)
    remaining = length
    while remaining > 0:
        chunk = inst.fh.read(min(CHUNK, remaining))
        if not chunk:
            raise NotFound("the value is truncated in the stored object", "object_truncated")
        remaining -= len(chunk)
        yield chunk


def raw_element(ds: Dataset, tag: int) -> RawDataElement | None:
    for elem in ds.elements():
        if elem.tag == tag:
            return elem if isinstance(elem, RawDataElement) else None
    return None
