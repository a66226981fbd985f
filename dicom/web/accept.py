"""The Accept header of a WADO-RS request, and what each resource can answer with it.

WADO-RS media types carry parameters that decide the answer (``type`` of a multipart/related,
``transfer-syntax``), so a plain media-type match is not enough. The hub never transcodes
stored instances: it answers with the stored bytes when the client accepts them
(``transfer-syntax=*`` or none named) and 406 otherwise; frames can also be decoded to native.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dicom.web.stored import FRAME_MEDIA_TYPES, NotAcceptable

EXPLICIT_LE = "1.2.840.10008.1.2.1"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
_OUTSIDE_QUOTES = r'(?=(?:[^"]*"[^"]*")*[^"]*$)'


@dataclass(frozen=True)
class MediaRange:
    type: str
    params: dict[str, str]
    q: float = 1.0


def parse_accept(header: str | None) -> list[MediaRange]:
    """Media ranges by preference (q, then order); q=0 ranges are dropped."""
    if not header or not header.strip():
        return []
    ranges: list[MediaRange] = []
    for item in re.split("," + _OUTSIDE_QUOTES, header):
        fields = [f.strip() for f in re.split(";" + _OUTSIDE_QUOTES, item)]
        if not fields[0]:
            continue
        params: dict[str, str] = {}
        for field in fields[1:]:
            name, _, value = field.partition("=")
            params[name.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        if q > 0:
            ranges.append(MediaRange(fields[0].lower(), params, q))
    return sorted(ranges, key=lambda r: -r.q)


def _part_type(r: MediaRange, default: str) -> str | None:
    """The part media type a range asks for; None when it is not a multipart answer."""
    if r.type in ("*/*", "multipart/*"):
        return r.params.get("type", "*/*").lower()
    if r.type == "multipart/related":
        return r.params.get("type", default).lower()
    return None


def check_instances(header: str | None, stored_syntaxes: set[str]) -> None:
    """Retrieve of instances: multipart/related; type="application/dicom" as stored."""
    ranges = parse_accept(header)
    if not ranges:
        return
    for r in ranges:
        part = _part_type(r, "application/dicom")
        if part not in ("application/dicom", "application/*", "*/*"):
            continue
        wanted = r.params.get("transfer-syntax")
        if wanted in (None, "*") or stored_syntaxes == {wanted}:
            return
    raise NotAcceptable(
        "instances are served as stored (transfer syntaxes "
        + ", ".join(sorted(stored_syntaxes))
        + '); accept multipart/related; type="application/dicom"; transfer-syntax=*'
    )


def check_json(header: str | None) -> None:
    """Metadata: application/dicom+json (or application/json)."""
    ranges = parse_accept(header)
    ok = ("application/dicom+json", "application/json", "application/*", "*/*")
    if ranges and not any(r.type in ok for r in ranges):
        raise NotAcceptable("metadata is available as application/dicom+json only")


def check_bulkdata(header: str | None) -> None:
    ranges = parse_accept(header)
    ok = ("application/octet-stream", "application/*", "*/*")
    if ranges and not any(_part_type(r, "application/octet-stream") in ok for r in ranges):
        raise NotAcceptable(
            'bulk data is served as multipart/related; type="application/octet-stream"'
        )


@dataclass(frozen=True)
class FramePlan:
    """How to answer a frames request for one instance."""

    native: bool  # decode / byte-swap to uncompressed little endian
    content_type: str  # of each part


def plan_frames(header: str | None, stored: str) -> FramePlan:
    """Pick the answer for frames stored in ``stored`` transfer syntax (PS3.18 8.7.3.5)."""
    image_type = FRAME_MEDIA_TYPES.get(stored)
    native_syntax = stored if stored == BIG_ENDIAN else EXPLICIT_LE
    as_stored = FramePlan(
        False,
        f"{image_type}; transfer-syntax={stored}"
        if image_type
        else f"application/octet-stream; transfer-syntax={native_syntax}",
    )
    native = FramePlan(True, f"application/octet-stream; transfer-syntax={EXPLICIT_LE}")
    ranges = parse_accept(header)
    if not ranges:
        return native
    for r in ranges:
        part = _part_type(r, "application/octet-stream")
        wanted = r.params.get("transfer-syntax")
        if part == "application/octet-stream":
            if wanted == "*":
                # What OHIF asks for: the frame as stored, its syntax named in the part.
                return FramePlan(False, f"application/octet-stream; transfer-syntax={stored}")
            if wanted in (None, EXPLICIT_LE):
                return native
            if wanted == stored and image_type is None:
                return as_stored
        elif part in ("*/*", "image/*") and wanted in (None, "*", stored):
            if image_type or part == "*/*":
                return as_stored
        elif part is not None and part == image_type and wanted in (None, "*", stored):
            return as_stored
    raise NotAcceptable(
        f"frames of this instance are available as {image_type or 'application/octet-stream'} "
        f"(stored transfer syntax {stored}) or decoded as application/octet-stream"
    )


def pick_image(header: str | None, query: str | None) -> str:
    """Rendered: image/jpeg (the default) or image/png."""
    ranges = parse_accept(query or header)
    if not ranges:
        return "image/jpeg"
    for r in ranges:
        if r.type in ("image/jpeg", "image/png"):
            return r.type
        if r.type in ("image/*", "*/*"):
            return "image/jpeg"
    raise NotAcceptable("rendered images are available as image/jpeg or image/png")
