"""The reader's worklist."""

from __future__ import annotations

from aiohttp import web

from telehub import worklist as worklists
from telehub.api.common import int_param, principal, remote, run, services

routes = web.RouteTableDef()


@routes.get("/api/v1/worklist")
async def worklist(request: web.Request) -> web.Response:
    items = await run(
        request,
        worklists.worklist,
        services(request).db,
        principal(request),
        remote(request),
        limit=int_param(request, "limit", 100, 1, 500),
        offset=int_param(request, "offset", 0, 0, 10_000_000),
    )
    return web.json_response({"cases": items})
