"""Cases: list, detail (with timeline and TAT), and marking a case complete."""

from __future__ import annotations

from aiohttp import web

from telehub import cases
from telehub.api.common import (
    WORK_QUEUED,
    int_param,
    path_id,
    principal,
    remote,
    run,
    services,
)
from telehub.db.models import CaseStatus
from telehub.errors import Invalid

routes = web.RouteTableDef()


@routes.get("/api/v1/cases")
async def list_cases(request: web.Request) -> web.Response:
    status = request.query.get("status")
    if status is not None and status not in {s.value for s in CaseStatus}:
        raise Invalid(f"unknown status {status!r}", "bad_parameter")
    items = await run(
        request,
        cases.list_cases,
        services(request).db,
        principal(request),
        remote(request),
        limit=int_param(request, "limit", 50, 1, 500),
        offset=int_param(request, "offset", 0, 0, 10_000_000),
        status=status,
    )
    return web.json_response({"cases": items})


@routes.get("/api/v1/cases/{id}")
async def get_case(request: web.Request) -> web.Response:
    data = await run(
        request,
        cases.detail,
        services(request).db,
        principal(request),
        path_id(request),
        remote(request),
        services(request).settings,  # a reader's view renews their lease
    )
    return web.json_response(data)


@routes.post("/api/v1/cases/{id}/complete")
async def mark_complete(request: web.Request) -> web.Response:
    data = await run(
        request,
        cases.mark_complete,
        services(request).db,
        principal(request),
        path_id(request),
        remote(request),
    )
    request.app[WORK_QUEUED]()
    return web.json_response(data)
