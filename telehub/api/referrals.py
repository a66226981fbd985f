"""Two-way referral: refer a case's patient up or down, the receiver moves it on, lists."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from telehub import referrals
from telehub.analytics import instant, zone
from telehub.api.common import int_param, json_body, path_id, principal, remote, run, services
from telehub.api.schema import ID, PAGE, json_request, query, responses
from telehub.db.models import ReferralDirection, ReferralStatus
from telehub.errors import Invalid

routes = web.RouteTableDef()


def _text(body: dict[str, Any], name: str, required: bool = True) -> str:
    value = body.get(name, None if required else "")
    if not isinstance(value, str):
        raise Invalid(f'body needs "{name}" as a string', "bad_referral")
    return value


@routes.post("/api/v1/cases/{id}/referrals")
async def create(request: web.Request) -> web.Response:
    body = await json_body(request)
    data = await run(
        request,
        referrals.create,
        services(request).db,
        principal(request),
        path_id(request),
        _text(body, "direction"),
        _text(body, "to_facility"),
        _text(body, "reason"),
        referrals.parse_booking(body.get("booking")),
        remote(request),
    )
    return web.json_response(data, status=201)


@routes.get("/api/v1/referrals")
async def list_referrals(request: web.Request) -> web.Response:
    params = request.query
    direction, status, box = params.get("direction"), params.get("status"), params.get("box")
    if direction and direction not in {d.value for d in ReferralDirection}:
        raise Invalid(f"unknown direction {direction!r}", "bad_parameter")
    if status and status not in {s.value for s in ReferralStatus}:
        raise Invalid(f"unknown status {status!r}", "bad_parameter")
    if box and box not in ("incoming", "outgoing"):
        raise Invalid("box must be incoming or outgoing", "bad_parameter")
    tz = zone(params.get("tz") or "UTC")
    start = instant(params["from"], "from", tz) if params.get("from") else None
    end = instant(params["to"], "to", tz, end_of_day=True) if params.get("to") else None
    case_id = int_param(request, "case", 0, 1, 2**62) if params.get("case") else None
    items = await run(
        request,
        referrals.list_referrals,
        services(request).db,
        principal(request),
        remote(request),
        direction=direction or None,
        status=status or None,
        box=box or None,
        case_id=case_id,
        start=start,
        end=end,
        limit=int_param(request, "limit", 100, 1, 500),
        offset=int_param(request, "offset", 0, 0, 10_000_000),
    )
    return web.json_response({"referrals": items})


@routes.get("/api/v1/referrals/{id}")
async def get(request: web.Request) -> web.Response:
    data = await run(
        request,
        referrals.get,
        services(request).db,
        principal(request),
        path_id(request),
        remote(request),
    )
    return web.json_response(data)


@routes.post("/api/v1/referrals/{id}")
async def update(request: web.Request) -> web.Response:
    body = await json_body(request)
    data = await run(
        request,
        referrals.update,
        services(request).db,
        principal(request),
        path_id(request),
        _text(body, "status"),
        referrals.parse_booking(body.get("booking")),
        _text(body, "note", required=False),
        remote(request),
    )
    return web.json_response(data)


_BOOKING = {
    "type": "object",
    "required": ["kind", "at"],
    "properties": {
        "kind": {"enum": ["appointment", "exam", "bed"]},
        "at": {"type": "string", "format": "date-time"},
        "ref": {"type": "string", "maxLength": 100},
    },
}
_REFERRAL = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "case_id": {"type": "integer"},
        "direction": {"enum": ["up", "down"]},
        "status": {"enum": [s.value for s in ReferralStatus]},
        "reason": {"type": "string"},
        "from": {"type": "object"},
        "to": {"type": "object"},
        "booking": {"oneOf": [_BOOKING, {"type": "null"}]},
        "incoming": {"type": "boolean"},
        "outgoing": {"type": "boolean"},
        "case": {"type": "object", "description": "the case summary (create and detail only)"},
    },
}

OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/cases/{id}/referrals": {
        "post": {
            "summary": "Refer the case's patient up (to a higher tier) or down (to a lower tier), "
            "with a reason; with a booking (green channel) it is booked at once",
            "parameters": [ID],
            "requestBody": json_request(
                {
                    "type": "object",
                    "required": ["direction", "to_facility", "reason"],
                    "properties": {
                        "direction": {"enum": ["up", "down"]},
                        "to_facility": {"type": "string", "description": "facility code"},
                        "reason": {"type": "string"},
                        "booking": _BOOKING,
                    },
                }
            ),
            "responses": responses(_REFERRAL, 400, 401, 404, 409, ok_status="201"),
        }
    },
    "/api/v1/referrals": {
        "get": {
            "summary": "Incoming and outgoing referrals of the caller's facility (admins: all), "
            "newest first",
            "parameters": [
                query("direction", {"enum": ["up", "down"]}),
                query("status", {"enum": [s.value for s in ReferralStatus]}),
                query("box", {"enum": ["incoming", "outgoing"]}),
                query("case", {"type": "integer"}),
                query("from", {"type": "string"}, "created at or after (date or ISO time)"),
                query("to", {"type": "string"}, "created before (a date includes that day)"),
                query("tz", {"type": "string"}),
                *PAGE,
            ],
            "responses": responses(
                {
                    "type": "object",
                    "properties": {"referrals": {"type": "array", "items": _REFERRAL}},
                },
                400,
                401,
            ),
        }
    },
    "/api/v1/referrals/{id}": {
        "get": {
            "summary": "A referral with the summary of its case",
            "parameters": [ID],
            "responses": responses(_REFERRAL, 401, 404),
        },
        "post": {
            "summary": "Move a referral on: the receiving facility accepts, books (with the "
            "booking), completes or declines; the referring side cancels",
            "parameters": [ID],
            "requestBody": json_request(
                {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": {
                            "enum": ["accepted", "booked", "completed", "declined", "cancelled"]
                        },
                        "booking": _BOOKING,
                        "note": {"type": "string"},
                    },
                }
            ),
            "responses": responses(_REFERRAL, 400, 401, 403, 404, 409),
        },
    },
}
