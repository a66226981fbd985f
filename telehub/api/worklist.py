"""Worklists over HTTP: the reader's own (``/api/v1/worklist``) and a reading centre's."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from telehub import worklist as worklists
from telehub.api.common import int_param, path_id, principal, remote, run, services
from telehub.api.schema import ID, PAGE, query, responses

routes = web.RouteTableDef()


def _filters(request: web.Request) -> worklists.Filters:
    q = request.query
    return worklists.Filters(
        modality=q.get("modality") or None,
        status=q.get("status") or None,
        origin=q.get("origin") or None,
        priority=q.get("priority") or None,
        arrived_from=worklists.parse_time(q.get("from"), "from"),
        arrived_to=worklists.parse_time(q.get("to"), "to", end=True),
        q=q.get("q") or None,
    )


def _page(request: web.Request) -> dict[str, Any]:
    return {
        "limit": int_param(request, "limit", 100, 1, 500),
        "offset": int_param(request, "offset", 0, 0, 10_000_000),
        "count": request.query.get("count", "").lower() in ("1", "true", "yes"),
    }


@routes.get("/api/v1/worklist")
async def worklist(request: web.Request) -> web.Response:
    data = await run(
        request,
        worklists.worklist,
        services(request).db,
        principal(request),
        remote(request),
        scope=request.query.get("scope") or None,
        centre=request.query.get("centre") or None,
        filters=_filters(request),
        **_page(request),
    )
    return web.json_response(data)


@routes.get("/api/v1/centres/{id}/worklist")
async def centre_worklist(request: web.Request) -> web.Response:
    data = await run(
        request,
        worklists.centre_worklist,
        services(request).db,
        principal(request),
        remote(request),
        path_id(request),
        filters=_filters(request),
        **_page(request),
    )
    return web.json_response(data)


FILTER_PARAMS = [
    query("modality", {"type": "string"}, 'DICOM modality code, or "ECG"'),
    query("status", {"type": "string"}, "case status"),
    query("origin", {"type": "string"}, "origin facility id or code"),
    query("priority", {"enum": ["stat", "urgent", "routine"]}),
    query("from", {"type": "string"}, "arrived at or after (ISO date or date-time, UTC)"),
    query("to", {"type": "string"}, "arrived before (a bare date: the whole day)"),
    query("q", {"type": "string"}, "patient name or ID, accession, clinical question"),
    query("count", {"type": "boolean"}, "also answer the total number of matches"),
    *PAGE,
]
WORKLIST = {
    "type": "object",
    "properties": {
        "cases": {"type": "array", "items": {"$ref": "#/components/schemas/Case"}},
        "total": {"type": "integer", "description": "with count=1 only"},
    },
}
OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/worklist": {
        "get": {
            "summary": "The reader's worklist: the centre's unclaimed cases and the reader's own, "
            "by priority, then SLA deadline; admins choose a centre",
            "parameters": [
                query("scope", {"enum": ["worklist", "mine", "centre", "all"]}),
                query("centre", {"type": "string"}, "admins: centre id or code"),
                *FILTER_PARAMS,
            ],
            "responses": responses(WORKLIST, 400, 401, 403),
        }
    },
    "/api/v1/centres/{id}/worklist": {
        "get": {
            "summary": "Every open case of a reading centre, held or not (its readers, admins)",
            "parameters": [ID, *FILTER_PARAMS],
            "responses": responses(WORKLIST, 400, 401, 403, 404),
        }
    },
}
