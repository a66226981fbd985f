"""Claiming and assignment: claim, unclaim, lease renewal, admin reassign."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from telehub import cases
from telehub.api.common import path_id, principal, remote, run, services
from telehub.api.schema import ID, responses

routes = web.RouteTableDef()


@routes.post("/api/v1/cases/{id}/claim")
async def claim(request: web.Request) -> web.Response:
    data = await run(
        request,
        cases.claim,
        services(request).db,
        principal(request),
        path_id(request),
        remote(request),
    )
    return web.json_response(data)


OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/cases/{id}/claim": {
        "post": {
            "summary": "Claim a routed case for the calling reader",
            "parameters": [ID],
            "responses": responses({"$ref": "#/components/schemas/Case"}, 401, 403, 404, 409),
        }
    },
}
