"""Notifications (each user's own) and outgoing webhooks (admins only)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from telehub import notifications, webhooks
from telehub.api.common import (
    WORK_QUEUED,
    int_param,
    json_body,
    path_id,
    principal,
    remote,
    run,
    services,
)
from telehub.api.schema import ID, PAGE, json_request, query, responses
from telehub.errors import Invalid

routes = web.RouteTableDef()


def _flag(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "0").lower()
    if raw not in ("0", "1", "true", "false"):
        raise Invalid(f"query parameter {name} must be 1 or 0", "bad_parameter")
    return raw in ("1", "true")


# ----- in-app notifications --------------------------------------------------------------------
@routes.get("/api/v1/notifications")
async def list_notifications(request: web.Request) -> web.Response:
    data = await run(
        request,
        notifications.list_own,
        services(request).db,
        principal(request),
        unread_only=_flag(request, "unread"),
        limit=int_param(request, "limit", 50, 1, 500),
        offset=int_param(request, "offset", 0, 0, 10_000_000),
        after_id=int_param(request, "after_id", 0, 0, 2**62),
    )
    return web.json_response(data)


@routes.post("/api/v1/notifications/read-all")
async def read_all(request: web.Request) -> web.Response:
    marked = await run(
        request, notifications.mark_all_read, services(request).db, principal(request)
    )
    return web.json_response({"marked": marked})


@routes.post(r"/api/v1/notifications/{id:\d+}/read")
async def read_one(request: web.Request) -> web.Response:
    data = await run(
        request,
        notifications.mark_read,
        services(request).db,
        principal(request),
        path_id(request),
    )
    return web.json_response(data)


# ----- webhooks (admin) ------------------------------------------------------------------------
@routes.get("/api/v1/webhooks")
async def list_webhooks(request: web.Request) -> web.Response:
    items = await run(request, webhooks.list_webhooks, services(request).db, principal(request))
    return web.json_response({"webhooks": items})


@routes.post("/api/v1/webhooks")
async def create_webhook(request: web.Request) -> web.Response:
    body = await json_body(request)
    data = await run(
        request,
        webhooks.create_webhook,
        services(request).db,
        principal(request),
        body,
        remote(request),
    )
    return web.json_response(data, status=201)


@routes.get("/api/v1/webhooks/deliveries")
async def list_deliveries(request: web.Request) -> web.Response:
    webhook_id = request.query.get("webhook_id")
    data = await run(
        request,
        webhooks.list_deliveries,
        services(request).db,
        principal(request),
        status=request.query.get("status"),
        webhook_id=int_param(request, "webhook_id", 0, 1, 2**62) if webhook_id else None,
        limit=int_param(request, "limit", 50, 1, 500),
        offset=int_param(request, "offset", 0, 0, 10_000_000),
    )
    return web.json_response(data)


@routes.post(r"/api/v1/webhooks/deliveries/{id:\d+}/retry")
async def retry_delivery(request: web.Request) -> web.Response:
    data = await run(
        request,
        webhooks.retry_delivery,
        services(request).db,
        principal(request),
        path_id(request),
        remote(request),
    )
    request.app[WORK_QUEUED]()
    return web.json_response(data)


@routes.get(r"/api/v1/webhooks/{id:\d+}")
async def get_webhook(request: web.Request) -> web.Response:
    data = await run(
        request, webhooks.get_webhook, services(request).db, principal(request), path_id(request)
    )
    return web.json_response(data)


@routes.patch(r"/api/v1/webhooks/{id:\d+}")
async def update_webhook(request: web.Request) -> web.Response:
    body = await json_body(request)
    data = await run(
        request,
        webhooks.update_webhook,
        services(request).db,
        principal(request),
        path_id(request),
        body,
        remote(request),
    )
    return web.json_response(data)


@routes.delete(r"/api/v1/webhooks/{id:\d+}")
async def delete_webhook(request: web.Request) -> web.Response:
    webhook_id = path_id(request)
    await run(
        request,
        webhooks.delete_webhook,
        services(request).db,
        principal(request),
        webhook_id,
        remote(request),
    )
    return web.json_response({"deleted": webhook_id})


@routes.post(r"/api/v1/webhooks/{id:\d+}/test")
async def test_webhook(request: web.Request) -> web.Response:
    data = await run(
        request,
        webhooks.send_test,
        services(request).db,
        principal(request),
        path_id(request),
        remote(request),
    )
    return web.json_response(data)


# ----- OpenAPI ---------------------------------------------------------------------------------
_NOTIFICATION = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "kind": {"enum": list(notifications.KINDS)},
        "case_id": {"type": ["integer", "null"]},
        "title": {"type": "string"},
        "body": {"type": "string"},
        "detail": {"type": "object"},
        "created_at": {"type": "string", "format": "date-time"},
        "read_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
_WEBHOOK_FIELDS = {
    "name": {"type": "string", "maxLength": 100},
    "kind": {"enum": ["json", "wecom", "dingtalk"]},
    "url": {"type": "string", "format": "uri", "description": "http(s) only"},
    "events": {
        "type": "array",
        "items": {"enum": list(notifications.KINDS)},
        "description": "notification kinds it receives; empty: all",
    },
    "facility_id": {
        "type": ["integer", "null"],
        "description": "only cases sent from or read at this facility; null: all",
    },
    "include_patient_name": {"type": "boolean", "default": False},
    "active": {"type": "boolean", "default": True},
}
_WEBHOOK_IN = {
    "type": "object",
    "properties": {
        **_WEBHOOK_FIELDS,
        "secret": {
            "type": "string",
            "description": "HMAC key (json) or DingTalk signing secret; never returned",
        },
    },
}
_WEBHOOK = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        **_WEBHOOK_FIELDS,
        "url": {"type": "string", "description": "query values masked"},
        "secret": {"enum": ["set", "unset"]},
        "created_at": {"type": "string", "format": "date-time"},
    },
}
_DELIVERY = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "webhook": {"type": "object"},
        "kind": {"type": "string"},
        "case_id": {"type": ["integer", "null"]},
        "status": {"enum": ["pending", "delivered", "failed"]},
        "attempts": {"type": "integer"},
        "last_error": {"type": "string"},
        "payload": {"type": "object", "description": "exactly what is sent"},
        "created_at": {"type": "string", "format": "date-time"},
        "delivered_at": {"type": ["string", "null"], "format": "date-time"},
    },
}
_ADMIN = "Admins only (others: 403)."

OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/notifications": {
        "get": {
            "summary": "The caller's own notifications, newest first",
            "parameters": [
                query("unread", {"enum": ["0", "1"]}, "1: unread only"),
                query("after_id", {"type": "integer"}, "only newer than this id (polling)"),
                *PAGE,
            ],
            "responses": responses(
                {
                    "type": "object",
                    "properties": {
                        "notifications": {"type": "array", "items": _NOTIFICATION},
                        "unread": {"type": "integer"},
                    },
                },
                400,
                401,
            ),
        }
    },
    "/api/v1/notifications/{id}/read": {
        "post": {
            "summary": "Mark one of the caller's notifications read",
            "parameters": [ID],
            "responses": responses(_NOTIFICATION, 401, 404),
        }
    },
    "/api/v1/notifications/read-all": {
        "post": {
            "summary": "Mark all the caller's notifications read",
            "responses": responses({"type": "object"}, 401),
        }
    },
    "/api/v1/webhooks": {
        "get": {
            "summary": "Outgoing webhooks. " + _ADMIN,
            "responses": responses({"type": "object"}, 401, 403),
        },
        "post": {
            "summary": "Add a webhook (generic JSON, WeCom or DingTalk robot). " + _ADMIN,
            "requestBody": json_request({**_WEBHOOK_IN, "required": ["name", "kind", "url"]}),
            "responses": responses(_WEBHOOK, 400, 401, 403, 409, ok_status="201"),
        },
    },
    "/api/v1/webhooks/{id}": {
        "get": {
            "summary": "One webhook. " + _ADMIN,
            "parameters": [ID],
            "responses": responses(_WEBHOOK, 401, 403, 404),
        },
        "patch": {
            "summary": 'Change a webhook; an omitted secret is kept, "" clears it. ' + _ADMIN,
            "parameters": [ID],
            "requestBody": json_request(_WEBHOOK_IN),
            "responses": responses(_WEBHOOK, 400, 401, 403, 404, 409),
        },
        "delete": {
            "summary": "Remove a webhook and its delivery history. " + _ADMIN,
            "parameters": [ID],
            "responses": responses({"type": "object"}, 401, 403, 404),
        },
    },
    "/api/v1/webhooks/{id}/test": {
        "post": {
            "summary": "Send a test message now and answer how it went. " + _ADMIN,
            "parameters": [ID],
            "responses": responses(_DELIVERY, 401, 403, 404),
        }
    },
    "/api/v1/webhooks/deliveries": {
        "get": {
            "summary": "Deliveries, newest first (status=failed: what never arrived). " + _ADMIN,
            "parameters": [
                query("status", {"enum": ["pending", "delivered", "failed"]}),
                query("webhook_id", {"type": "integer"}),
                *PAGE,
            ],
            "responses": responses(
                {
                    "type": "object",
                    "properties": {
                        "deliveries": {"type": "array", "items": _DELIVERY},
                        "total": {"type": "integer"},
                    },
                },
                400,
                401,
                403,
            ),
        }
    },
    "/api/v1/webhooks/deliveries/{id}/retry": {
        "post": {
            "summary": "Send a failed delivery again, attempts counted afresh. " + _ADMIN,
            "parameters": [ID],
            "responses": responses(_DELIVERY, 401, 403, 404, 409),
        }
    },
}
