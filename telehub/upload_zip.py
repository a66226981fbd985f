"""A zip of DICOM files as an upload: clinics often have a study only as the .zip a modality
or a CD viewer exported.

The zip is turned, member by member and streaming (never a whole member in memory), into a
STOW-RS body on disk, so every file goes through exactly the same ingest path as a folder
upload. Members that are not DICOM Part 10 files (a README, a viewer program, an encrypted
entry) are reported by name as refused instead of failing the whole upload.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from aiohttp.helpers import parse_mimetype

from telehub.config import Settings
from telehub.errors import Invalid

ZIP_TYPES = frozenset({("application", "zip"), ("application", "x-zip-compressed")})
#: Members skipped without a word: folders, macOS resource forks, the CD's index file.
_SKIP_NAMES = frozenset({"DICOMDIR", "DICOMDIR.", "Thumbs.db", ".DS_Store"})
_COPY = 1024 * 1024


def is_zip(content_type: str) -> bool:
    mime = parse_mimetype(content_type)
    return (mime.type, mime.subtype) in ZIP_TYPES


def _skipped(info: zipfile.ZipInfo) -> bool:
    name = PurePosixPath(info.filename)
    return (
        info.is_dir()
        or name.parts[:1] == ("__MACOSX",)
        or name.name in _SKIP_NAMES
        or name.name.startswith("._")
    )


def _refused(name: str, code: str, message: str) -> dict[str, Any]:
    """A member refused before STOW: ``code`` (not_dicom, encrypted, unreadable) for the UI."""
    return {"file": name, "code": code, "sop_uid": "", "reason": None, "message": message}


@contextlib.contextmanager
def as_stow_body(
    path: Path, settings: Settings
) -> Iterator[tuple[Path | None, str, list[dict[str, Any]]]]:
    """Yield (body file or None when no member is DICOM, its content type, refused members).

    The uncompressed total is capped like a STOW-RS request, so a zip bomb stops early.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise Invalid(f"not a readable zip file: {exc}", "bad_zip") from exc
    boundary = f"telehub-zip-{secrets.token_hex(12)}"
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    workdir = Path(tempfile.mkdtemp(prefix="zip-", dir=settings.spool))
    body = workdir / "body"
    refused: list[dict[str, Any]] = []
    parts = 0
    total = 0
    try:
        with archive, open(body, "wb") as out:
            for info in archive.infolist():
                if _skipped(info):
                    continue
                if info.flag_bits & 0x1:
                    refused.append(_refused(info.filename, "encrypted", "encrypted zip entry"))
                    continue
                total += info.file_size
                if total > settings.stow_max_bytes:
                    raise Invalid(
                        f"the zip unpacks to more than {settings.stow_max_bytes} bytes", "too_large"
                    )
                opened = False
                try:
                    with archive.open(info) as member:
                        head = member.read(132)
                        if len(head) < 132 or head[128:132] != b"DICM":
                            refused.append(
                                _refused(info.filename, "not_dicom", "not a DICOM Part 10 file")
                            )
                            continue
                        out.write(
                            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                        )
                        opened = True
                        out.write(head)
                        shutil.copyfileobj(member, out, _COPY)
                except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError) as exc:
                    # a member cut short stays a (broken) part: STOW refuses it by its UID
                    refused.append(_refused(info.filename, "unreadable", f"cannot unpack: {exc}"))
                if opened:
                    out.write(b"\r\n")
                    parts += 1
            out.write(f"--{boundary}--\r\n".encode())
        yield (body if parts else None), content_type, refused
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
