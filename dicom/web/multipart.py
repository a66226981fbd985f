"""Split a multipart/related body held in a file into its parts, one file per part.

STOW-RS spools the request body to disk first (bounded memory; the resumable upload assembles
bodies on disk too), so the parts are parsed from a file, not a socket. The parsing itself is
aiohttp's :class:`~aiohttp.MultipartReader`, fed by :class:`_FileStream`, which offers the few
``StreamReader`` methods the reader calls. It runs on a private event loop, so callers stay
synchronous (they run in a worker thread).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from aiohttp import BodyPartReader, MultipartReader, hdrs
from aiohttp.helpers import parse_mimetype

CHUNK = 1024 * 1024
_MAX_LINE = 64 * 1024


class MultipartError(ValueError):
    """The body is not a well-formed multipart message."""


@dataclass(frozen=True)
class Part:
    """One body part, written to ``path`` (deleted again after the handler returns)."""

    index: int
    media_type: str  # "type/subtype" in lower case; the multipart ``type`` when the part has none
    parameters: dict[str, str]
    path: Path
    size: int


@dataclass(frozen=True)
class MediaType:
    media_type: str
    parameters: dict[str, str]


def parse_media_type(value: str) -> MediaType:
    """``type/subtype`` in lower case and the parameters (names in lower case)."""
    parsed = parse_mimetype(value or "")
    media = f"{parsed.type}/{parsed.subtype}".lower() if parsed.type else ""
    return MediaType(media, {k.lower(): v for k, v in parsed.parameters.items()})


class _FileStream:
    """The subset of ``aiohttp.StreamReader`` that MultipartReader uses, over a file."""

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self._fh = fh
        self._size = size
        self._buffer = b""

    def _file_at_end(self) -> bool:
        return self._fh.tell() >= self._size

    def at_eof(self) -> bool:
        return not self._buffer and self._file_at_end()

    def unread_data(self, data: bytes) -> None:
        self._buffer = data + self._buffer

    async def read(self, n: int = -1) -> bytes:
        if self._buffer:
            if n < 0 or n >= len(self._buffer):
                data, self._buffer = self._buffer, b""
            else:
                data, self._buffer = self._buffer[:n], self._buffer[n:]
            return data
        return self._fh.read(n)

    async def readline(self, max_line_length: int | None = None) -> bytes:
        limit = max_line_length or _MAX_LINE
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line, self._buffer = self._buffer[: end + 1], self._buffer[end + 1 :]
                return line
            if len(self._buffer) > limit:
                raise MultipartError(f"a header or boundary line is longer than {limit} bytes")
            more = self._fh.read(8192)
            if not more:
                line, self._buffer = self._buffer, b""
                return line
            self._buffer += more


def split_parts(
    body_path: Path,
    content_type: str,
    folder: Path,
    handle: Callable[[Part], None],
    max_parts: int = 100_000,
) -> int:
    """Write each part of the body to ``folder`` and call ``handle`` on it, one at a time (so
    the disk holds one part beside the body); returns the number of parts.

    Raises MultipartError on a malformed body; parts handled before the error stay handled.
    """
    outer = parse_media_type(content_type)
    if not outer.media_type.startswith("multipart/") or "boundary" not in outer.parameters:
        raise MultipartError("Content-Type is not multipart with a boundary")
    default_type = outer.parameters.get("type", "").lower()
    size = body_path.stat().st_size
    with open(body_path, "rb") as fh:
        stream = _FileStream(fh, size)
        return asyncio.run(_split(stream, content_type, folder, handle, default_type, max_parts))


async def _split(
    stream: _FileStream,
    content_type: str,
    folder: Path,
    handle: Callable[[Part], None],
    default_type: str,
    max_parts: int,
) -> int:
    try:
        reader = MultipartReader({hdrs.CONTENT_TYPE: content_type}, stream)  # type: ignore[arg-type]
    except (ValueError, AssertionError) as exc:
        raise MultipartError(str(exc)) from exc
    count = 0
    while True:
        try:
            part = await reader.next()
        except (ValueError, AssertionError) as exc:
            raise MultipartError(f"part {count + 1}: {exc}") from exc
        if part is None:
            return count
        if not isinstance(part, BodyPartReader):
            raise MultipartError(f"part {count + 1} is itself multipart")
        count += 1
        if count > max_parts:
            raise MultipartError(f"more than {max_parts} parts")
        media = parse_media_type(part.headers.get(hdrs.CONTENT_TYPE, "") or default_type)
        path = folder / f"part-{count:06d}"
        written = 0
        try:
            with open(path, "wb") as out:
                while chunk := await part.read_chunk(CHUNK):
                    out.write(chunk)
                    written += len(chunk)
        except (ValueError, AssertionError) as exc:
            path.unlink(missing_ok=True)
            raise MultipartError(f"part {count}: {exc}") from exc
        try:
            handle(Part(count, media.media_type, media.parameters, path, written))
        finally:
            path.unlink(missing_ok=True)
