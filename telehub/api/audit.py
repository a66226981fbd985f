"""The audit trail for administrators: GET /api/v1/audit with filters and paging."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from telehub import audit_query
from telehub.api.common import principal, remote, run, services
from telehub.api.schema import query, responses

routes = web.RouteTableDef()


@routes.get("/api/v1/audit")
async def list_audit(request: web.Request) -> web.Response:
    q = audit_query.parse(request.query)
    data = await run(
        request, audit_query.search, services(request).db, principal(request), q, remote(request)
    )
    return web.json_response(data)


_STR = {"type": "string"}
_ENTRY = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "at": {"type": "string", "format": "date-time"},
        "user": {"type": ["object", "null"], "description": "id, username, display_name, role"},
        "action": _STR,
        "resource_type": _STR,
        "resource_id": _STR,
        "remote": {"type": "string", "description": "the caller's address"},
        "detail": {"type": "object"},
    },
}

OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/audit": {
        "get": {
            "summary": "The audit trail, newest first (administrators; the read is audited too)",
            "parameters": [
                query("user", _STR, "username or user id"),
                query("action", _STR, "read, write, claim, login, ..."),
                query("case", {"type": "integer"}, "entries about this case (case, report)"),
                query("patient", _STR, "entries about the cases of this Patient ID"),
                query("resource_type", _STR, "case, report, consult, ecg, study, ..."),
                query("resource_id", _STR, "with resource_type"),
                query("from", _STR, "YYYY-MM-DD (start of day) or ISO 8601 time, inclusive"),
                query("to", _STR, "YYYY-MM-DD (that whole day) or ISO 8601 time, exclusive"),
                query("tz", _STR, "IANA zone of from/to dates, default UTC"),
                query("remote", _STR, "caller address prefix"),
                query("limit", {"type": "integer", "minimum": 1, "maximum": 500}),
                query("offset", {"type": "integer", "minimum": 0}),
                query("before", {"type": "integer"}, "keyset paging: entries older than this id"),
            ],
            "responses": responses(
                {
                    "type": "object",
                    "properties": {
                        "entries": {"type": "array", "items": _ENTRY},
                        "limit": {"type": "integer"},
                        "offset": {"type": "integer"},
                        "next_before": {"type": ["integer", "null"]},
                    },
                },
                400,
                401,
                403,
            ),
        }
    }
}
