"""Routing over HTTP: escalation and second opinion by readers, priority changes, an admin's
manual routing and the rule preview."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from telehub import escalation, routing
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

routes = web.RouteTableDef()


async def _escalate(request: web.Request, second_opinion: bool) -> web.Response:
    body = await json_body(request)
    svc = services(request)
    data = await run(
        request,
        escalation.escalate,
        svc.db,
        svc.settings,
        principal(request),
        path_id(request),
        body.get("reason"),
        second_opinion=second_opinion,
        remote=remote(request),
    )
    request.app[WORK_QUEUED]()
    return web.json_response(data)


@routes.post("/api/v1/cases/{id}/escalate")
async def escalate(request: web.Request) -> web.Response:
    return await _escalate(request, second_opinion=False)


@routes.post("/api/v1/cases/{id}/second-opinion")
async def second_opinion(request: web.Request) -> web.Response:
    return await _escalate(request, second_opinion=True)


@routes.post("/api/v1/cases/{id}/priority")
async def change_priority(request: web.Request) -> web.Response:
    body = await json_body(request)
    svc = services(request)
    data = await run(
        request,
        escalation.change_priority,
        svc.db,
        svc.settings,
        principal(request),
        path_id(request),
        body.get("priority"),
        remote(request),
    )
    return web.json_response(data)


@routes.post("/api/v1/cases/{id}/route")
async def manual_route(request: web.Request) -> web.Response:
    body = await json_body(request)
    svc = services(request)
    data = await run(
        request,
        routing.manual_route,
        svc.db,
        svc.settings,
        principal(request),
        path_id(request),
        body.get("centre_code"),
        remote(request),
    )
    request.app[WORK_QUEUED]()
    return web.json_response(data)


@routes.post("/api/v1/routing/preview")
async def preview(request: web.Request) -> web.Response:
    body = await json_body(request)
    data = await run(request, routing.preview, services(request).db, principal(request), body)
    return web.json_response(data)


_CASE = {"$ref": "#/components/schemas/Case"}
_REASON = {
    "type": "object",
    "required": ["reason"],
    "properties": {"reason": {"type": "string", "minLength": 1}},
}
_PRIORITY = {"type": "string", "enum": ["stat", "urgent", "routine"]}

OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/cases/{id}/escalate": {
        "post": {
            "summary": "Send a case up a tier (the grid lead's centre for the same service), "
            "releasing the claim; by the reader holding it, or a reader of its centre while "
            "unclaimed. 409 top_tier when nothing higher can read it",
            "parameters": [ID],
            "requestBody": json_request(_REASON),
            "responses": responses(_CASE, 400, 401, 403, 404, 409),
        }
    },
    "/api/v1/cases/{id}/second-opinion": {
        "post": {
            "summary": "Ask the tier above for a second opinion: the same move as escalation, "
            "the case marked second_opinion, preliminary reports kept",
            "parameters": [ID],
            "requestBody": json_request(_REASON),
            "responses": responses(_CASE, 400, 401, 403, 404, 409),
        }
    },
    "/api/v1/cases/{id}/priority": {
        "post": {
            "summary": "Change a case's priority (origin clinic, a reader of the case, an "
            "admin); the SLA deadline is recomputed from the case's completion",
            "parameters": [ID],
            "requestBody": json_request(
                {
                    "type": "object",
                    "required": ["priority"],
                    "properties": {"priority": _PRIORITY},
                }
            ),
            "responses": responses(_CASE, 400, 401, 403, 404, 409),
        }
    },
    "/api/v1/cases/{id}/route": {
        "post": {
            "summary": "Admin: route an unroutable or misrouted (unclaimed) case to a centre",
            "parameters": [ID],
            "requestBody": json_request(
                {
                    "type": "object",
                    "required": ["centre_code"],
                    "properties": {"centre_code": {"type": "string"}},
                }
            ),
            "responses": responses(_CASE, 400, 401, 403, 404, 409),
        }
    },
    "/api/v1/routing/preview": {
        "post": {
            "summary": "Admin: which centre and rule a case with these attributes would get",
            "requestBody": json_request(
                {
                    "type": "object",
                    "properties": {
                        "origin": {"type": "string", "description": "facility code"},
                        "origin_facility_id": {"type": "integer"},
                        "kind": {"type": "string", "enum": ["imaging", "ecg", "consultation"]},
                        "modalities": {"type": "array", "items": {"type": "string"}},
                        "modality": {"type": "string"},
                        "body_part": {"type": "string"},
                        "subspecialty": {"type": "string"},
                        "priority": _PRIORITY,
                    },
                }
            ),
            "responses": responses(
                {
                    "type": "object",
                    "properties": {
                        "routable": {"type": "boolean"},
                        "centre": {"type": ["object", "null"]},
                        "rule": {"type": "string"},
                        "rule_id": {"type": ["integer", "null"]},
                    },
                },
                400,
                401,
                403,
            ),
        }
    },
}
