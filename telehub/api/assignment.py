"""Claiming and assignment: claim, unclaim, lease heartbeat, admin reassign, going on duty."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from telehub import assignment
from telehub.api.common import (
    WORK_QUEUED,
    json_body,
    path_id,
    principal,
    remote,
    run,
    services,
)
from telehub.api.schema import ID, json_request, responses
from telehub.errors import Invalid

routes = web.RouteTableDef()


@routes.post("/api/v1/cases/{id}/claim")
async def claim(request: web.Request) -> web.Response:
    svc = services(request)
    data = await run(
        request,
        assignment.claim,
        svc.db,
        svc.settings,
        principal(request),
        path_id(request),
        remote(request),
    )
    return web.json_response(data)


@routes.post("/api/v1/cases/{id}/unclaim")
async def unclaim(request: web.Request) -> web.Response:
    svc = services(request)
    data = await run(
        request,
        assignment.unclaim,
        svc.db,
        svc.settings,
        principal(request),
        path_id(request),
        remote(request),
    )
    request.app[WORK_QUEUED]()  # push may offer it to another reader at once
    return web.json_response(data)


@routes.post("/api/v1/cases/{id}/lease")
async def renew_lease(request: web.Request) -> web.Response:
    svc = services(request)
    data = await run(
        request, assignment.renew_lease, svc.db, svc.settings, principal(request), path_id(request)
    )
    return web.json_response(data)


@routes.post("/api/v1/cases/{id}/assign")
async def assign(request: web.Request) -> web.Response:
    body = await json_body(request)
    reader = body.get("reader")
    if not isinstance(reader, str) or not reader:
        raise Invalid('body needs "reader": the username of a reader', "bad_reader")
    svc = services(request)
    data = await run(
        request,
        assignment.reassign,
        svc.db,
        svc.settings,
        principal(request),
        path_id(request),
        reader,
        remote(request),
    )
    return web.json_response(data)


@routes.get("/api/v1/readers/me/duty")
async def get_duty(request: web.Request) -> web.Response:
    data = await run(request, assignment.get_duty, services(request).db, principal(request))
    return web.json_response(data)


@routes.post("/api/v1/readers/me/duty")
async def duty(request: web.Request) -> web.Response:
    body = await json_body(request)
    on_duty = body.get("on_duty")
    if not isinstance(on_duty, bool):
        raise Invalid('body needs "on_duty": true or false', "bad_duty")
    data = await run(
        request, assignment.set_duty, services(request).db, principal(request), on_duty
    )
    return web.json_response(data)


_CASE = {"$ref": "#/components/schemas/Case"}
OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/cases/{id}/claim": {
        "post": {
            "summary": "Claim a routed case for the calling reader (takes a lease); 403 "
            "not_qualified, 409 already_claimed / not_claimable",
            "parameters": [ID],
            "responses": responses(_CASE, 401, 403, 404, 409),
        }
    },
    "/api/v1/cases/{id}/unclaim": {
        "post": {
            "summary": "Give a held case back to the centre's worklist (the holder)",
            "parameters": [ID],
            "responses": responses(_CASE, 401, 403, 404, 409),
        }
    },
    "/api/v1/cases/{id}/lease": {
        "post": {
            "summary": "Heartbeat: renew the holder's lease; 409 not_claimed, claimed_by_other "
            "or lease_expired",
            "parameters": [ID],
            "responses": responses(
                {
                    "type": "object",
                    "properties": {
                        "case_id": {"type": "integer"},
                        "lease_expires_at": {"type": "string", "format": "date-time"},
                        "lease_seconds": {"type": "number"},
                    },
                },
                401,
                403,
                404,
                409,
            ),
        }
    },
    "/api/v1/cases/{id}/assign": {
        "post": {
            "summary": "Admin: (re)assign an open case to a qualified reader of its centre",
            "parameters": [ID],
            "requestBody": json_request(
                {
                    "type": "object",
                    "required": ["reader"],
                    "properties": {"reader": {"type": "string", "description": "username"}},
                }
            ),
            "responses": responses(_CASE, 400, 401, 403, 404, 409),
        }
    },
    "/api/v1/readers/me/duty": {
        "get": {
            "summary": "Whether the calling reader is on duty",
            "responses": responses({"type": "object"}, 401, 403),
        },
        "post": {
            "summary": "The calling reader goes on or off duty (push assignment)",
            "requestBody": json_request(
                {
                    "type": "object",
                    "required": ["on_duty"],
                    "properties": {"on_duty": {"type": "boolean"}},
                }
            ),
            "responses": responses({"type": "object"}, 400, 401, 403),
        },
    },
}
