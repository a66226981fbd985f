"""WADO-RS (PS3.18 10.4): instances, metadata, frames, bulk data, rendered and thumbnails.

Handlers are thin: find what the caller may see (``dicom.web.instances``: access rule and audit
in one transaction), then stream. Instances leave object by object, chunk by chunk, as stored;
frames one by one; nothing holds a whole study in memory.
"""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from aiohttp import web

from dicom.web import accept, metadata, render
from dicom.web.instances import InstanceRef, find_instances, find_series
from dicom.web.stored import (
    FRAME_MEDIA_TYPES,
    PIXEL_TAGS,
    StoredInstance,
    check_frames,
    iter_value,
    native_frame,
    open_instance,
    raw_element,
    stored_frame,
)
from telehub.api.common import principal, remote, run, services
from telehub.errors import Invalid, NotFound
from telehub.store import CHUNK

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

PREFIX = "/dicomweb"  # as mounted by dicom.web.routes
UID = r"[0-9][0-9.]{0,63}"
STUDY = f"{PREFIX}/studies/{{study:{UID}}}"
SERIES = f"{STUDY}/series/{{series:{UID}}}"
INSTANCE = f"{SERIES}/instances/{{instance:{UID}}}"
FRAMES = f"{INSTANCE}/frames/{{frames}}"
MAX_FRAMES_PER_REQUEST = 10_000


# ----- helpers -------------------------------------------------------------------------------
def _uids(request: web.Request) -> tuple[str, str | None, str | None]:
    m = request.match_info
    return m["study"], m.get("series"), m.get("instance")


async def _find(request: web.Request, what: str, **detail: Any) -> list[InstanceRef]:
    study, series, instance = _uids(request)
    svc = services(request)
    return await run(
        request,
        find_instances,
        svc.db,
        principal(request),
        remote(request),
        what,
        study,
        series,
        instance,
        **detail,
    )


def base_url(request: web.Request) -> str:
    """The service root as the caller reached it, for BulkDataURIs.

    A reverse proxy names the public host in X-Forwarded-Host/-Proto. Without one, a Host
    header that lacks the port (dicomweb-client sends such) gets the port the request came in on.
    """
    forwarded = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
    if forwarded:
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip()
        return f"{proto or request.scheme}://{forwarded}{PREFIX}"
    host = request.host
    if ":" not in host.rsplit("]", 1)[-1] and request.transport is not None:
        sockname = request.transport.get_extra_info("sockname")
        port = sockname[1] if isinstance(sockname, tuple) and len(sockname) > 1 else None
        if port and port not in (80, 443):
            host = f"{host}:{port}"
    return f"{request.scheme}://{host}{PREFIX}"


def parse_frames(raw: str) -> list[int]:
    try:
        numbers = [int(part) for part in raw.split(",")]
    except ValueError as exc:
        raise Invalid("frame list must be comma-separated frame numbers", "bad_frame_list") from exc
    if not numbers or any(n < 1 for n in numbers):
        raise Invalid("frame numbers start at 1", "bad_frame_list")
    if len(numbers) > MAX_FRAMES_PER_REQUEST:
        raise Invalid(f"at most {MAX_FRAMES_PER_REQUEST} frames per request", "bad_frame_list")
    return numbers


class Multipart:
    """A streamed multipart/related answer (PS3.18 8.6.1.2)."""

    def __init__(self, request: web.Request, part_type: str) -> None:
        self.request = request
        self.boundary = uuid.uuid4().hex
        self.response = web.StreamResponse(
            headers={
                "Content-Type": f'multipart/related; type="{part_type}"; boundary={self.boundary}'
            }
        )

    async def start(self) -> None:
        await self.response.prepare(self.request)

    async def part(self, content_type: str, chunks: AsyncIterator[bytes]) -> None:
        head = f"--{self.boundary}\r\nContent-Type: {content_type}\r\n\r\n"
        await self.response.write(head.encode())
        async for chunk in chunks:
            await self.response.write(chunk)
        await self.response.write(b"\r\n")

    async def finish(self) -> web.StreamResponse:
        await self.response.write(f"--{self.boundary}--\r\n".encode())
        await self.response.write_eof()
        return self.response


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _in_thread(request: web.Request, it: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Iterate a blocking iterator in the thread pool, one chunk per hop."""
    sentinel = b""
    while True:
        chunk = await run(request, next, it, sentinel)
        if not chunk:
            return
        yield chunk


def _abort(request: web.Request, what: str, exc: BaseException) -> None:
    """After the status line is sent an error can only cut the answer short (the client then
    sees a broken multipart, never a silently shorter one)."""
    log.error("%s %s: %s failed mid-stream: %s", request.method, request.path, what, exc)
    if request.transport is not None:
        request.transport.close()


class _Opened:
    """A stored instance held open across awaits (opened and parsed in the thread pool)."""

    def __init__(self, request: web.Request, key: str) -> None:
        self.request = request
        self.stack = contextlib.ExitStack()
        self.key = key

    async def __aenter__(self) -> StoredInstance:
        store = services(self.request).store
        return await run(self.request, self.stack.enter_context, open_instance(store, self.key))

    async def __aexit__(self, *exc: object) -> None:
        await run(self.request, self.stack.close)


# ----- retrieve instances --------------------------------------------------------------------
def _object_chunks(store: Any, key: str) -> Iterator[bytes]:
    with store.open(key) as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


async def _retrieve(request: web.Request) -> web.StreamResponse:
    refs = await _find(request, "instances")
    accept.check_instances(request.headers.get("Accept"), {r.transfer_syntax_uid for r in refs})
    store = services(request).store
    out = Multipart(request, "application/dicom")
    await out.start()
    try:
        for ref in refs:
            content_type = f"application/dicom; transfer-syntax={ref.transfer_syntax_uid}"
            await out.part(content_type, _in_thread(request, _object_chunks(store, ref.object_key)))
    except Exception as exc:
        _abort(request, "retrieve", exc)
        return out.response
    return await out.finish()


routes.get(STUDY)(_retrieve)
routes.get(SERIES)(_retrieve)
routes.get(INSTANCE)(_retrieve)


# ----- metadata ------------------------------------------------------------------------------
def _json_response(request: web.Request, body: bytes) -> web.Response:
    response = web.Response(body=body, content_type="application/dicom+json")
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response.enable_compression()  # metadata compresses ~10x; clinics' links are slow
    return response


@routes.get(STUDY + "/metadata")
async def study_metadata(request: web.Request) -> web.StreamResponse:
    accept.check_json(request.headers.get("Accept"))
    svc = services(request)
    study, _, _ = _uids(request)
    series = await run(
        request, find_series, svc.db, principal(request), remote(request), "metadata", study
    )
    response = web.StreamResponse(headers={"Content-Type": "application/dicom+json"})
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        response.enable_compression()
    await response.prepare(request)
    try:
        chunks = metadata.study_chunks(svc.db, svc.store, series, base_url(request))
        async for chunk in _in_thread(request, chunks):
            await response.write(chunk)
    except Exception as exc:
        _abort(request, "study metadata", exc)
        return response
    await response.write_eof()
    return response


@routes.get(SERIES + "/metadata")
async def series_metadata(request: web.Request) -> web.Response:
    accept.check_json(request.headers.get("Accept"))
    svc = services(request)
    study, series_uid, _ = _uids(request)
    (series,) = await run(
        request,
        find_series,
        svc.db,
        principal(request),
        remote(request),
        "metadata",
        study,
        series_uid,
    )
    data = await run(request, metadata.series_json, svc.db, svc.store, series)
    return _json_response(request, metadata.with_base(data, base_url(request)))


@routes.get(INSTANCE + "/metadata")
async def instance_metadata(request: web.Request) -> web.Response:
    accept.check_json(request.headers.get("Accept"))
    (ref,) = await _find(request, "metadata")
    item = await run(request, metadata.read_instance_json, services(request).store, ref)
    data = b"[" + metadata._dumps(item) + b"]"
    return _json_response(request, metadata.with_base(data, base_url(request)))


# ----- frames --------------------------------------------------------------------------------
@routes.get(FRAMES)
async def frames(request: web.Request) -> web.StreamResponse:
    numbers = parse_frames(request.match_info["frames"])
    (ref,) = await _find(request, "frames", frames=numbers[:100])
    plan = accept.plan_frames(request.headers.get("Accept"), ref.transfer_syntax_uid)
    async with _Opened(request, ref.object_key) as inst:
        await run(request, check_frames, inst, numbers)
        read: Callable[[StoredInstance, int], bytes] = native_frame if plan.native else stored_frame
        part_type = plan.content_type.split(";")[0]
        out = Multipart(request, part_type)
        await out.start()
        try:
            for number in numbers:
                data = await run(request, read, inst, number)
                await out.part(plan.content_type, _once(data))
        except Exception as exc:
            _abort(request, "frames", exc)
            return out.response
        return await out.finish()


# ----- bulk data -----------------------------------------------------------------------------
_BULK_PATH = re.compile(r"^[0-9A-Fa-f]{8}(/[0-9]{1,6}/[0-9A-Fa-f]{8})*$")


def _bulk_parts(inst: StoredInstance, path: str) -> list[tuple[str, Any]]:
    """(content type, bytes or (offset, length)) for each part of a bulk data answer."""
    steps = path.split("/")
    tags = [int(t, 16) for t in steps[::2]]
    indexes = [int(i) for i in steps[1::2]]
    ts = str(inst.transfer_syntax)
    octet = f"application/octet-stream; transfer-syntax={ts}"
    if len(tags) == 1 and tags[0] in PIXEL_TAGS:
        px = inst.pixels
        if px is None or px.tag != tags[0]:
            raise NotFound(f"no bulk data at {path}", "bulkdata_not_found")
        if inst.transfer_syntax.is_encapsulated:
            kind = f"{FRAME_MEDIA_TYPES.get(ts, 'application/octet-stream')}; transfer-syntax={ts}"
            return [(kind, n) for n in range(1, inst.number_of_frames + 1)]
        if px.data is not None:
            return [(octet, px.data)]
        return [(octet, (px.offset, px.length))]
    ds = inst.ds
    try:
        for tag, index in zip(tags[:-1], indexes, strict=True):
            ds = ds[tag].value[index]
        if len(tags) == 1:
            raw = raw_element(ds, tags[0])
            if raw is not None and raw.value is None and raw.length:
                return [(octet, (raw.value_tell, raw.length))]
        value = ds[tags[-1]].value
    except (KeyError, IndexError, TypeError) as exc:
        raise NotFound(f"no bulk data at {path}", "bulkdata_not_found") from exc
    if not isinstance(value, bytes | bytearray):
        raise NotFound(f"{path} is not a bulk data element", "bulkdata_not_found")
    return [(octet, bytes(value))]


def _part_chunks(inst: StoredInstance, source: Any) -> Iterator[bytes]:
    if isinstance(source, bytes):
        yield source
    elif isinstance(source, int):
        yield stored_frame(inst, source)
    else:
        yield from iter_value(inst, *source)


@routes.get(INSTANCE + "/bulkdata/{path:.+}")
async def bulkdata(request: web.Request) -> web.StreamResponse:
    path = request.match_info["path"]
    if not _BULK_PATH.match(path):
        raise Invalid("bulk data path must be a tag (or tag/item/tag...)", "bad_bulkdata_path")
    accept.check_bulkdata(request.headers.get("Accept"))
    (ref,) = await _find(request, "bulkdata", path=path)
    async with _Opened(request, ref.object_key) as inst:
        parts = await run(request, _bulk_parts, inst, path)
        out = Multipart(request, "application/octet-stream")
        await out.start()
        try:
            for content_type, source in parts:
                await out.part(content_type, _in_thread(request, _part_chunks(inst, source)))
        except Exception as exc:
            _abort(request, "bulkdata", exc)
            return out.response
        return await out.finish()


# ----- rendered and thumbnails ---------------------------------------------------------------
def _render_options(request: web.Request, thumbnail: bool) -> render.RenderOptions:
    q = request.query
    viewport = render.parse_viewport(q.get("viewport"))
    if thumbnail and viewport is None:
        viewport = (render.THUMBNAIL, render.THUMBNAIL)
    return render.RenderOptions(
        media_type=accept.pick_image(request.headers.get("Accept"), q.get("accept")),
        window=render.parse_window(q.get("window")),
        viewport=viewport,
        quality=render.parse_quality(q.get("quality")),
    )


def _render_stored(
    store: Any, ref: InstanceRef, frame: int, options: render.RenderOptions
) -> bytes:
    with open_instance(store, ref.object_key) as inst:
        check_frames(inst, [frame])
        return render.render(inst, frame, options)


async def _rendered(request: web.Request, thumbnail: bool) -> web.Response:
    options = _render_options(request, thumbnail)
    frame = 1
    if "frames" in request.match_info:
        numbers = parse_frames(request.match_info["frames"])
        if len(numbers) != 1:
            raise Invalid("render one frame at a time", "bad_frame_list")
        frame = numbers[0]
    what = "thumbnail" if thumbnail else "rendered"
    refs = await _find(request, what, frame=frame)
    if request.match_info.get("instance") is None:
        # A series or study thumbnail: the middle instance of its first series.
        first = [r for r in refs if r.series_uid == refs[0].series_uid]
        refs = [first[len(first) // 2]]
    body = await run(request, _render_stored, services(request).store, refs[0], frame, options)
    return web.Response(body=body, content_type=options.media_type)


@routes.get(INSTANCE + "/rendered")
@routes.get(FRAMES + "/rendered")
async def rendered(request: web.Request) -> web.Response:
    return await _rendered(request, thumbnail=False)


@routes.get(STUDY + "/thumbnail")
@routes.get(SERIES + "/thumbnail")
@routes.get(INSTANCE + "/thumbnail")
@routes.get(FRAMES + "/thumbnail")
async def thumbnail(request: web.Request) -> web.Response:
    return await _rendered(request, thumbnail=True)
