"""Consortium administration: the whole definition (GET, or POST a TOML/JSON one to check and
apply), and list/create/update for facilities, reading centres, reading links, users and routing
rules (delete for links and rules, reorder for rules). Facilities and centres may be listed by
anyone signed in; everything else is for administrators."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from telehub import consortium, consortium_admin, passwords
from telehub.api.common import json_body, path_id, principal, remote, run, services
from telehub.api.schema import ID, json_request, query, responses
from telehub.errors import Invalid, UnsupportedMediaType

routes = web.RouteTableDef()

TOML_TYPES = ("application/toml", "text/toml", "text/plain")
Handler = Callable[[web.Request], Awaitable[web.Response]]


def _dry_run(request: web.Request) -> bool:
    value = request.query.get("dry_run", "false").lower()
    if value not in {"true", "false", "1", "0"}:
        raise Invalid("query parameter dry_run must be true or false", "bad_parameter")
    return value in {"true", "1"}


@routes.get("/api/v1/consortium")
async def get_definition(request: web.Request) -> web.Response:
    data = await run(request, consortium_admin.definition, services(request).db, principal(request))
    return web.json_response(data)


@routes.post("/api/v1/consortium")
async def post_definition(request: web.Request) -> web.Response:
    who = principal(request)
    consortium_admin.require_admin(who)  # refuse before reading the body
    dry_run = _dry_run(request)
    if request.content_type in TOML_TYPES:
        try:
            text = await request.text()
        except UnicodeDecodeError as exc:
            raise Invalid("the TOML body is not UTF-8", "bad_toml") from exc
        body: Any = consortium.parse_toml(text)
    elif request.content_type == "application/json":
        body = await json_body(request)
    else:
        raise UnsupportedMediaType("send application/toml or application/json")
    svc = services(request)
    policy = passwords.Policy.from_settings(svc.settings)
    data = await run(
        request, consortium_admin.load, svc.db, who, body, dry_run, remote(request), policy
    )
    return web.json_response(data)


@routes.post("/api/v1/consortium/rules/order")
async def reorder_rules(request: web.Request) -> web.Response:
    who = principal(request)
    consortium_admin.require_admin(who)
    body = await json_body(request)
    items = await run(
        request,
        consortium_admin.reorder_rules,
        services(request).db,
        who,
        body.get("order"),
        remote(request),
    )
    return web.json_response({"rules": items})


def _list(kind: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        items = await run(
            request, consortium_admin.list_items, services(request).db, principal(request), kind
        )
        return web.json_response({kind: items})

    return handler


def _create(kind: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        who = principal(request)
        consortium_admin.require_admin(who)
        body = await json_body(request)
        svc = services(request)
        policy = passwords.Policy.from_settings(svc.settings)
        data = await run(
            request, consortium_admin.create, svc.db, who, kind, body, remote(request), policy
        )
        return web.json_response(data, status=201)

    return handler


def _update(kind: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        who = principal(request)
        consortium_admin.require_admin(who)
        row_id = path_id(request)
        body = await json_body(request)
        data = await run(
            request,
            consortium_admin.update,
            services(request).db,
            who,
            kind,
            row_id,
            body,
            remote(request),
            passwords.Policy.from_settings(services(request).settings),
        )
        return web.json_response(data)

    return handler


def _delete(kind: str) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        await run(
            request,
            consortium_admin.delete,
            services(request).db,
            principal(request),
            kind,
            path_id(request),
            remote(request),
        )
        return web.json_response({})

    return handler


for _kind in consortium_admin.KINDS:
    routes.get(f"/api/v1/consortium/{_kind}")(_list(_kind))
    routes.post(f"/api/v1/consortium/{_kind}")(_create(_kind))
    routes.patch(rf"/api/v1/consortium/{_kind}/{{id:\d+}}")(_update(_kind))
    if _kind in consortium_admin.DELETABLE:
        routes.delete(rf"/api/v1/consortium/{_kind}/{{id:\d+}}")(_delete(_kind))


# ----- OpenAPI ---------------------------------------------------------------------------------
_STR = {"type": "string"}
_STRS = {"type": "array", "items": _STR}
_BOOL = {"type": "boolean"}
_INT = {"type": "integer"}
_FIELDS: dict[str, dict[str, Any]] = {
    "facilities": {
        "code": _STR,
        "name": _STR,
        "tier": {"enum": ["village", "township", "county", "tertiary"]},
        "parent": {"type": ["string", "null"], "description": "code of its grid lead"},
        "ae_title": {"type": ["string", "null"]},
        "dicom_networks": _STR,
    },
    "centres": {
        "code": _STR,
        "facility": _STR,
        "service": {"enum": ["imaging", "ecg"]},
        "name": _STR,
        "modalities": _STRS,
        "subspecialties": _STRS,
        "service_hours": {"type": "string", "examples": ["mon-fri 08:00-17:30; sat 08:00-12:00"]},
        "timezone": {"type": "string", "examples": ["Asia/Shanghai"]},
    },
    "links": {"origin": _STR, "centre": _STR, "modality": {"type": ["string", "null"]}},
    "users": {
        "username": _STR,
        "display_name": _STR,
        "role": {"enum": ["clinic", "reader", "admin"]},
        "facility": _STR,
        "centre": {"type": ["string", "null"]},
        "qualifications": _STRS,
        "may_sign_final": _BOOL,
        "max_open_cases": {"type": ["integer", "null"]},
        "on_duty": _BOOL,
        "active": _BOOL,
        "password": {"type": "string", "description": "create: required; update: resets it"},
    },
    "rules": {
        "name": _STR,
        "position": _INT,
        "enabled": _BOOL,
        "kinds": _STRS,
        "modalities": _STRS,
        "body_parts": _STRS,
        "subspecialties": _STRS,
        "priorities": _STRS,
        "origins": {**_STRS, "description": "origin facility codes"},
        "origin_tiers": _STRS,
        "centre": _STR,
    },
}
_DEFINITION = {
    "type": "object",
    "description": "A consortium definition (docs/consortium.md), the same as the TOML file",
    "properties": {
        section: {"type": "array", "items": {"type": "object"}} for section in consortium.SECTIONS
    },
}
_OUTCOME = {
    "type": "object",
    "properties": {
        "applied": _BOOL,
        "changes": {"type": "array", "items": {"type": "object"}},
        "notes": _STRS,
    },
}


def _item(kind: str) -> dict[str, Any]:
    props = {k: v for k, v in _FIELDS[kind].items() if k != "password"}
    return {"type": "object", "properties": {"id": _INT, **props}}


def _paths(kind: str) -> dict[str, Any]:
    who = "anyone signed in" if kind in consortium_admin.PUBLIC_KINDS else "administrators"
    body = {"type": "object", "properties": _FIELDS[kind]}
    one = {
        "get": {
            "summary": f"List {kind} ({who})",
            "responses": responses(
                {"type": "object", "properties": {kind: {"type": "array", "items": _item(kind)}}},
                401,
                403,
            ),
        },
        "post": {
            "summary": f"Create one of the {kind} (administrators; checked like a file load)",
            "requestBody": json_request(body),
            "responses": responses(_item(kind), 400, 401, 403, 409, ok_status="201"),
        },
    }
    item: dict[str, Any] = {
        "patch": {
            "summary": f"Update one of the {kind}: the fields sent (its key cannot change)",
            "parameters": [ID],
            "requestBody": json_request(body),
            "responses": responses(_item(kind), 400, 401, 403, 404, 409),
        }
    }
    if kind in consortium_admin.DELETABLE:
        item["delete"] = {
            "summary": f"Delete one of the {kind}",
            "parameters": [ID],
            "responses": responses({"type": "object"}, 401, 403, 404),
        }
    return {f"/api/v1/consortium/{kind}": one, f"/api/v1/consortium/{kind}/{{id}}": item}


OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/consortium": {
        "get": {
            "summary": "The whole consortium as a definition (administrators)",
            "responses": responses(_DEFINITION, 401, 403),
        },
        "post": {
            "summary": "Check and apply a consortium definition, TOML or JSON, in one "
            "transaction (administrators); 400 lists every problem, nothing changed",
            "parameters": [query("dry_run", _BOOL, "check and list the changes only")],
            "requestBody": {
                "required": True,
                "content": {
                    "application/toml": {"schema": _STR},
                    "application/json": {"schema": _DEFINITION},
                },
            },
            "responses": responses(_OUTCOME, 400, 401, 403, 409, 415),
        },
    },
    "/api/v1/consortium/rules/order": {
        "post": {
            "summary": "Reorder the routing rules: those listed first, in that order",
            "requestBody": json_request(
                {
                    "type": "object",
                    "required": ["order"],
                    "properties": {"order": {"type": "array", "items": _INT}},
                }
            ),
            "responses": responses(
                {
                    "type": "object",
                    "properties": {"rules": {"type": "array", "items": _item("rules")}},
                },
                400,
                401,
                403,
            ),
        }
    },
}
for _kind in consortium_admin.KINDS:
    OPENAPI_PATHS.update(_paths(_kind))
