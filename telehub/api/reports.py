"""Reports on a case: write (preliminary, final, addendum), co-sign, export."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from telehub import reports
from telehub.api.common import json_body, path_id, principal, remote, run, services
from telehub.api.schema import ID, json_request, responses
from telehub.errors import Invalid

routes = web.RouteTableDef()


@routes.post("/api/v1/cases/{id}/reports")
async def add_report(request: web.Request) -> web.Response:
    body = await json_body(request)
    text, status = body.get("text"), body.get("status")
    if not isinstance(text, str) or not isinstance(status, str):
        raise Invalid('body needs "text" and "status" strings', "bad_report")
    data = await run(
        request,
        reports.add_report,
        services(request).db,
        principal(request),
        path_id(request),
        text,
        status,
        remote(request),
    )
    return web.json_response(data, status=201)


OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/cases/{id}/reports": {
        "post": {
            "summary": "Add a preliminary or final report to a claimed case",
            "parameters": [ID],
            "requestBody": json_request(
                {
                    "type": "object",
                    "required": ["text", "status"],
                    "properties": {
                        "text": {"type": "string"},
                        "status": {"enum": ["preliminary", "final"]},
                    },
                }
            ),
            "responses": responses({"type": "object"}, 400, 401, 403, 404, 409, ok_status="201"),
        }
    },
}
