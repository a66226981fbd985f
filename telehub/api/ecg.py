"""ECG over HTTP: upload (multipart, also a zip), metadata with the automated analysis, the
waveform as JSON for the viewer, and the 12-lead rendering as SVG and PNG."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web

from telehub import ecgs
from telehub.api.common import WORK_QUEUED, path_id, principal, remote, run, services
from telehub.db.models import Priority, Role
from telehub.errors import Forbidden, Invalid, TooLarge
from telehub.services import Services

routes = web.RouteTableDef()
_CHUNK = 256 * 1024


async def _receive_parts(
    request: web.Request, folder: Path, limit: int
) -> tuple[dict[str, Path], dict[str, str]]:
    """Stream the multipart body to ``folder`` (never all in memory), enforcing ``limit``."""
    if not request.content_type.startswith("multipart/"):
        raise Invalid("expected multipart/form-data with the ECG file(s)", "not_multipart")
    try:
        reader = await request.multipart()
    except ValueError as exc:  # e.g. no boundary in the Content-Type
        raise Invalid(f"malformed multipart body: {exc}", "bad_multipart") from exc
    files: dict[str, Path] = {}
    fields: dict[str, str] = {}
    total = 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise Invalid("nested multipart bodies are not accepted", "bad_multipart")
        if part.filename:
            name = Path(part.filename.replace("\\", "/")).name
            if not name or name.startswith(".") or name in files:
                raise Invalid(f"missing, hidden or repeated file name {name!r}", "bad_file_name")
            target = folder / name
            with open(target, "wb") as out:
                while chunk := await part.read_chunk(_CHUNK):
                    total += len(chunk)
                    if total > limit:
                        raise TooLarge(f"upload exceeds {limit // (1024 * 1024)} MB")
                    out.write(chunk)
            files[name] = target
        elif part.name:
            fields[part.name] = (await part.text())[:4000]
    if not files:
        raise Invalid("no file in the upload", "no_file")
    return files, fields


def _ingest(
    svc: Services,
    facility_id: int,
    user_id: int,
    files: dict[str, Path],
    fields: dict[str, str],
    workdir: Path,
) -> tuple[int, int]:
    """Decode (rejecting bad input before anything is stored), then store and index."""
    from ecg.formats import read_upload, unpack_zip
    from ecg.model import ECGError
    from ecg.storage import dumps

    try:
        decoded: dict[str, Path] = {}
        for name, path in files.items():
            if name.lower().endswith(".zip"):
                decoded.update(unpack_zip(path, workdir / f"unzipped-{len(decoded)}"))
            else:
                decoded[name] = path
        ecg = read_upload(decoded)
    except ECGError as exc:
        raise Invalid(str(exc), "bad_ecg") from exc
    upload = ecgs.EcgUpload(
        source_format=ecg.source_format,
        sampling_rate=ecg.sampling_rate,
        lead_names=list(ecg.lead_names),
        duration_s=round(ecg.duration, 3),
        acquired_at=ecg.acquired_at,
        patient_id=ecg.patient.patient_id,
        patient_name=ecg.patient.name,
        patient_sex=ecg.patient.sex,
        patient_birth_date=ecg.patient.birth_date,
    )
    return ecgs.store_upload(
        svc.db,
        svc.store,
        facility_id,
        upload,
        files,
        dumps(ecg),
        priority=fields.get("priority", Priority.ROUTINE.value),
        clinical_question=fields.get("clinical_question", ""),
        actor_id=user_id,
        source="http upload",
    )


@routes.post("/api/v1/ecg")
async def upload(request: web.Request) -> web.Response:
    from ecg.formats import MAX_UPLOAD_BYTES

    who = principal(request)
    if who.role != Role.CLINIC.value:
        raise Forbidden("ECGs are uploaded by clinics", "not_a_clinic")
    if request.content_length is not None and request.content_length > MAX_UPLOAD_BYTES:
        raise TooLarge(f"upload exceeds {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
    svc = services(request)
    spool = svc.settings.spool
    spool.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="ecg-", dir=spool))
    try:
        (workdir / "parts").mkdir()
        files, fields = await _receive_parts(request, workdir / "parts", MAX_UPLOAD_BYTES)
        case_id, ecg_id = await run(
            request, _ingest, svc, who.facility_id, who.user_id, files, fields, workdir
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    request.app[WORK_QUEUED]()
    return web.json_response({"case_id": case_id, "ecg_id": ecg_id}, status=201)


async def _visible(request: web.Request, action: str) -> dict[str, Any]:
    return await run(
        request,
        ecgs.visible_ecg,
        services(request).db,
        principal(request),
        path_id(request),
        remote(request),
        action,
    )


@routes.get("/api/v1/ecg/{id}")
async def describe(request: web.Request) -> web.Response:
    data = await _visible(request, "read")
    data.pop("waveform_key")
    return web.json_response(data)


def _load(svc: Services, key: str):  # type: ignore[no-untyped-def]
    from ecg.storage import loads

    with svc.store.open(key) as fh:
        return loads(fh.read())


def _float(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError as exc:
        raise Invalid(f"query parameter {name} must be a number", "bad_parameter") from exc


@routes.get("/api/v1/ecg/{id}/waveform")
async def waveform(request: web.Request) -> web.Response:
    from ecg.render import waveform_json

    max_points = request.query.get("max_points")
    if max_points is not None and (not max_points.isdigit() or not 10 <= int(max_points) <= 10**6):
        raise Invalid("max_points must be an integer from 10 to 1000000", "bad_parameter")
    leads = [x for x in request.query.get("leads", "").split(",") if x] or None
    data = await _visible(request, "read-waveform")
    svc = services(request)

    def build() -> dict[str, Any]:
        ecg = _load(svc, data["waveform_key"])
        return waveform_json(
            ecg,
            max_points=int(max_points) if max_points else None,
            leads=leads,
            start_s=_float(request, "start") or 0.0,
            end_s=_float(request, "end"),
        )

    return web.json_response(await run(request, build))


def _caption(data: dict[str, Any]) -> dict[str, str]:
    analysis = data.get("analysis") or {}
    caption = {"": "automated, unconfirmed / 自动测量，未经确认"}
    for key, label in (
        ("heart_rate_bpm", "HR"),
        ("pr_ms", "PR"),
        ("qrs_ms", "QRS"),
        ("qt_ms", "QT"),
        ("qtc_ms", "QTc"),
        ("axis_deg", "Axis"),
    ):
        if analysis.get(key) is not None:
            caption[label] = str(analysis[key])
    return caption


async def _rendered(request: web.Request, renderer: Callable[..., str | bytes]) -> str | bytes:
    """The ECG on paper, by one of ecg.render's backends, with the automated measurements."""
    data = await _visible(request, "read-waveform")
    svc = services(request)
    return await run(
        request,
        lambda: renderer(
            _load(svc, data["waveform_key"]), title=f"ECG {data['id']}", measurements=_caption(data)
        ),
    )


@routes.get("/api/v1/ecg/{id}/ecg.svg")
async def svg(request: web.Request) -> web.Response:
    from ecg.render import render_svg

    text = await _rendered(request, render_svg)
    return web.Response(text=str(text), content_type="image/svg+xml")


@routes.get("/api/v1/ecg/{id}/ecg.png")
async def png(request: web.Request) -> web.Response:
    from ecg.render import render_png

    body = await _rendered(request, render_png)
    return web.Response(body=body, content_type="image/png")
