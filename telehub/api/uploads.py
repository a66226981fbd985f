"""Resumable uploads over HTTP, speaking tus 1.0 (core, creation, termination, expiration) so
that a stock tus client (or the clinic portal's own, web/js/upload.js) can drive it.

``POST /api/v1/uploads`` opens a session (JSON, or tus ``Upload-Length``/``Upload-Metadata``
headers) for a STOW-RS body or a zip of DICOM files; its metadata may carry the clinic's
``priority`` and ``clinical_question`` for the case(s) it creates (telehub.upload_meta).
``PATCH`` (or ``PUT``) appends a chunk at ``Upload-Offset``; ``HEAD``/``GET`` tell the offset;
``POST .../complete`` returns the processing answer (idempotent). Bytes are fsynced before
their offset is acknowledged; a chunk cut short by a dropped link keeps what arrived.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import os
import time
import weakref
from pathlib import Path
from typing import Any

from aiohttp import web

from telehub import uploads
from telehub.api.common import WORK_QUEUED, json_body, principal, run, services
from telehub.errors import Invalid, TelehubError, UnsupportedMediaType

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

TUS_VERSION = "1.0.0"
CHUNK_TYPES = ("application/offset+octet-stream", "application/octet-stream")
#: A chunk whose bytes stop arriving for this long is treated as a dropped link.
READ_TIMEOUT_S = 60.0
#: How long a request waits for another one still writing the same session.
LOCK_WAIT_S = 10.0
SWEEP_EVERY_S = 600.0

_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
_last_sweep = 0.0


class Busy(TelehubError):
    code = "upload_busy"
    http_status = 423


def _tus(headers: dict[str, str] | None = None) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store", **(headers or {})}


def _base_url(request: web.Request) -> str:
    return str(request.url.origin())


def _offset_headers(info: uploads.UploadInfo) -> dict[str, str]:
    return _tus(
        {
            "Upload-Offset": str(info.offset),
            "Upload-Length": str(info.size),
            "Upload-Expires": info.expires_at.strftime("%a, %d %b %Y %H:%M:%S GMT"),
        }
    )


def _mismatch(exc: uploads.OffsetMismatch) -> web.Response:
    return web.json_response(
        {"error": exc.code, "message": exc.message, "offset": exc.current},
        status=409,
        headers=_tus({"Upload-Offset": str(exc.current)}),
    )


def _int_header(request: web.Request, name: str) -> int:
    raw = request.headers.get(name)
    if raw is None or not raw.isdigit():
        raise Invalid(f"{name} header must be a non-negative integer", "bad_header")
    return int(raw)


def _tus_metadata(header: str) -> dict[str, str]:
    """``Upload-Metadata: key base64,key2 base64`` (tus creation)."""
    meta: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in header.split(","))):
        key, _, value = pair.partition(" ")
        try:
            meta[key] = base64.b64decode(value, validate=True).decode() if value else ""
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise Invalid(f"Upload-Metadata value of {key!r} is not base64", "bad_header") from exc
    return meta


async def _creation_request(request: web.Request) -> dict[str, Any]:
    if "Upload-Length" in request.headers:
        meta = _tus_metadata(request.headers.get("Upload-Metadata", ""))
        return {
            "size": _int_header(request, "Upload-Length"),
            "content_type": meta.pop("content_type", "") or meta.pop("filetype", ""),
            "sha256": meta.pop("sha256", None),
            "metadata": meta,
        }
    return await json_body(request)


@routes.route("OPTIONS", "/api/v1/uploads")
async def discover(request: web.Request) -> web.Response:
    """tus discovery: what this server supports (no authentication, no data)."""
    limit = uploads.max_bytes(services(request).settings)
    return web.Response(
        status=204,
        headers=_tus(
            {
                "Tus-Version": TUS_VERSION,
                "Tus-Extension": "creation,termination,expiration",
                "Tus-Max-Size": str(limit),
            }
        ),
    )


@routes.post("/api/v1/uploads")
async def create(request: web.Request) -> web.Response:
    body = await _creation_request(request)
    size, content_type = body.get("size"), body.get("content_type")
    sha256, meta = body.get("sha256"), body.get("metadata") or {}
    if not isinstance(size, int) or isinstance(size, bool):
        raise Invalid("size (bytes, an integer) is required", "bad_size")
    if not isinstance(content_type, str) or not content_type:
        raise Invalid("content_type of the assembled body is required", "bad_content_type")
    if sha256 is not None and not isinstance(sha256, str):
        raise Invalid("sha256 must be a string", "bad_sha256")
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise Invalid("metadata must be an object of strings", "bad_metadata")
    svc = services(request)
    await _maybe_sweep(request)
    info = await run(
        request, uploads.create, svc, principal(request), size, content_type, sha256, meta
    )
    answer = info.to_json(_base_url(request))
    return web.json_response(
        answer, status=201, headers={**_offset_headers(info), "Location": answer["url"]}
    )


async def _maybe_sweep(request: web.Request) -> None:
    """Expired sessions are swept now and then as new ones open (no extra background task)."""
    global _last_sweep
    if time.monotonic() - _last_sweep < SWEEP_EVERY_S:
        return
    _last_sweep = time.monotonic()
    try:
        await run(request, uploads.sweep, services(request))
    except Exception:
        log.exception("sweeping expired uploads failed")


async def _session(request: web.Request) -> uploads.UploadInfo:
    return await run(
        request, uploads.get, services(request).db, principal(request), request.match_info["id"]
    )


@routes.head("/api/v1/uploads/{id}")
async def offset(request: web.Request) -> web.Response:
    info = await _session(request)
    return web.Response(status=200, headers=_offset_headers(info))


@routes.get("/api/v1/uploads/{id}", allow_head=False)
async def describe(request: web.Request) -> web.Response:
    info = await _session(request)
    return web.json_response(info.to_json(_base_url(request)), headers=_offset_headers(info))


@routes.delete("/api/v1/uploads/{id}")
async def terminate(request: web.Request) -> web.Response:
    svc = services(request)
    await run(request, uploads.remove, svc, principal(request), request.match_info["id"])
    return web.Response(status=204, headers=_tus())


@routes.patch("/api/v1/uploads/{id}")
@routes.put("/api/v1/uploads/{id}")
async def append(request: web.Request) -> web.Response:
    """Write one chunk at ``Upload-Offset``; the new offset is acknowledged once on disk."""
    if request.content_type not in CHUNK_TYPES:
        raise UnsupportedMediaType("a chunk is sent as application/offset+octet-stream")
    at = _int_header(request, "Upload-Offset")
    upload_id = request.match_info["id"]
    lock = _locks.setdefault(upload_id, asyncio.Lock())
    try:
        await asyncio.wait_for(lock.acquire(), LOCK_WAIT_S)
    except TimeoutError as exc:
        raise Busy("another request is still writing this upload; retry shortly") from exc
    try:
        info = await _session(request)
        if at != info.offset:
            return _mismatch(uploads.OffsetMismatch(info.offset))
        if info.complete:
            return web.Response(status=204, headers=_offset_headers(info))
        room = info.size - info.offset
        if request.content_length is not None and request.content_length > room:
            raise Invalid(f"chunk runs past the declared size ({room} bytes left)", "past_end")
        try:
            info = await _write_chunk(request, info, room)
        except uploads.OffsetMismatch as exc:
            return _mismatch(exc)
    finally:
        lock.release()
    if info.complete:
        await _process(request, info)
    return web.Response(status=204, headers=_offset_headers(info))


async def _write_chunk(
    request: web.Request, info: uploads.UploadInfo, room: int
) -> uploads.UploadInfo:
    """Stream the body into the spool file at the offset, fsync, then move the offset. If the
    link drops half-way, what arrived is kept (tus: the client resumes from there)."""
    svc = services(request)
    path: Path = uploads.spool_path(svc.settings, info.id)
    received = 0
    failure: Exception | None = None
    with open(path, "r+b") as fh:
        fh.seek(info.offset)
        try:
            while data := await asyncio.wait_for(request.content.readany(), READ_TIMEOUT_S):
                if received + len(data) > room:
                    failure = Invalid(f"chunk runs past the declared size ({room} bytes left)")
                    break
                fh.write(data)
                received += len(data)
        except Exception as exc:  # dropped link, reset, read timeout: keep what arrived
            failure = exc
        fh.flush()
        await run(request, os.fsync, fh.fileno())
    if received:
        info = await run(
            request,
            uploads.advance,
            svc,
            principal(request),
            info.id,
            info.offset,
            info.offset + received,
        )
    if failure is not None:
        if isinstance(failure, TelehubError):
            raise failure
        log.info("upload %s: chunk cut short at %d (%s)", info.id, info.offset, failure)
        raise Invalid(f"chunk cut short after {received} bytes: {failure}", "chunk_interrupted")
    return info


async def _process(request: web.Request, info: uploads.UploadInfo) -> uploads.UploadInfo:
    """The last byte is in: process now, so a plain tus client needs nothing more. A failure
    here does not fail the chunk (its bytes are safe); ``complete`` tries again."""
    try:
        info = await run(
            request,
            uploads.finish,
            services(request),
            principal(request),
            info.id,
            _base_url(request),
        )
    except Exception:
        log.exception("processing upload %s failed; it can be completed again", info.id)
        return info
    request.app[WORK_QUEUED]()
    return info


@routes.post("/api/v1/uploads/{id}/complete")
async def complete(request: web.Request) -> web.Response:
    """The processing answer: the same every time it is asked (202 while still processing)."""
    svc = services(request)
    info = await run(
        request,
        uploads.finish,
        svc,
        principal(request),
        request.match_info["id"],
        _base_url(request),
    )
    request.app[WORK_QUEUED]()
    status = 202 if info.state == "processing" else 200
    return web.json_response(
        info.to_json(_base_url(request)), status=status, headers=_offset_headers(info)
    )
