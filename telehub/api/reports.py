"""Reports on a case: templates, write (preliminary, final, addendum), co-sign, export."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from aiohttp import web

from telehub import report_templates, reports
from telehub.api.common import WORK_QUEUED, json_body, path_id, principal, remote, run, services
from telehub.api.schema import ID, json_request, query, responses
from telehub.exports import service as exports

routes = web.RouteTableDef()
T = TypeVar("T")

VERSION = r"{version:\d+}"
REPORT = f"/api/v1/cases/{{id}}/reports/{VERSION}"


def _version(request: web.Request) -> int:
    return path_id(request, "version")


# ----- templates ----------------------------------------------------------------------------
@routes.get("/api/v1/report-templates")
async def list_templates(request: web.Request) -> web.Response:
    items = await run(
        request,
        report_templates.list_templates,
        services(request).db,
        principal(request),
        request.query.get("kind") or None,
        request.query.get("modality") or None,
    )
    return web.json_response({"templates": items})


@routes.post("/api/v1/report-templates")
async def create_template(request: web.Request) -> web.Response:
    body = await json_body(request)
    data = await run(
        request, report_templates.create_template, services(request).db, principal(request), body
    )
    return web.json_response(data, status=201)


@routes.patch("/api/v1/report-templates/{id}")
async def update_template(request: web.Request) -> web.Response:
    body = await json_body(request)
    data = await run(
        request,
        report_templates.update_template,
        services(request).db,
        principal(request),
        path_id(request),
        body,
    )
    return web.json_response(data)


# ----- versions -----------------------------------------------------------------------------
@routes.post("/api/v1/cases/{id}/reports")
async def add_report(request: web.Request) -> web.Response:
    body = await json_body(request)
    svc = services(request)
    data = await run(
        request,
        reports.write_report,
        svc.db,
        svc.settings,
        principal(request),
        path_id(request),
        body.get("status"),
        remote(request),
        text=body.get("text"),
        sections=body.get("sections"),
        template=body.get("template"),
    )
    request.app[WORK_QUEUED]()  # a signed version left an SR task in the outbox
    return web.json_response(data, status=201)


@routes.get("/api/v1/cases/{id}/reports")
async def list_reports(request: web.Request) -> web.Response:
    items = await run(
        request,
        reports.list_reports,
        services(request).db,
        principal(request),
        path_id(request),
        remote(request),
    )
    return web.json_response({"reports": items})


@routes.get(REPORT)
async def get_report(request: web.Request) -> web.Response:
    data = await run(
        request,
        reports.get_report,
        services(request).db,
        principal(request),
        path_id(request),
        _version(request),
        remote(request),
    )
    return web.json_response(data)


@routes.post(REPORT + "/cosign")
async def cosign(request: web.Request) -> web.Response:
    body = await json_body(request) if request.can_read_body else {}
    data = await run(
        request,
        reports.cosign,
        services(request).db,
        principal(request),
        path_id(request),
        _version(request),
        remote(request),
        comment=body.get("comment"),
    )
    return web.json_response(data, status=201)


# ----- exports ------------------------------------------------------------------------------
async def _exported(request: web.Request, export: Callable[..., T]) -> T:
    """One export of the version in the path, for the caller (access checked and audited by
    the export service)."""
    return await run(
        request,
        export,
        services(request),
        principal(request),
        path_id(request),
        _version(request),
        remote(request),
    )


def _filename(request: web.Request, ext: str) -> str:
    return f"report-case{path_id(request)}-v{_version(request)}.{ext}"


@routes.get(REPORT + ".pdf")
@routes.get(REPORT + "/pdf")
async def report_pdf(request: web.Request) -> web.Response:
    data = await _exported(request, exports.export_pdf)
    return web.Response(
        body=data,
        content_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{_filename(request, "pdf")}"'},
    )


@routes.get(REPORT + "/fhir")
async def report_fhir(request: web.Request) -> web.Response:
    resource = await _exported(request, exports.export_fhir)
    return web.Response(
        text=json.dumps(resource, ensure_ascii=False),
        content_type="application/fhir+json",
        charset="utf-8",
    )


@routes.get(REPORT + "/sr")
async def report_sr(request: web.Request) -> web.Response:
    data = await _exported(request, exports.export_sr)
    return web.Response(
        body=data,
        content_type="application/dicom",
        headers={"Content-Disposition": f'attachment; filename="{_filename(request, "dcm")}"'},
    )


# ----- OpenAPI ------------------------------------------------------------------------------
VERSION_PARAM = {"name": "version", "in": "path", "required": True, "schema": {"type": "integer"}}
_SECTION = {
    "type": "object",
    "required": ["key", "title"],
    "properties": {
        "key": {"type": "string"},
        "title": {"type": "string"},
        "text": {"type": "string"},
    },
}
_TEMPLATE = {
    "type": "object",
    "properties": {
        "code": {"type": "string"},
        "name": {"type": "string"},
        "kind": {"enum": list(report_templates.TEMPLATE_KINDS)},
        "modality": {"type": ["string", "null"]},
        "language": {"type": "string"},
        "sections": {"type": "array", "items": _SECTION},
        "active": {"type": "boolean"},
    },
}
_REPORT = {
    "type": "object",
    "properties": {
        "version": {"type": "integer"},
        "status": {"enum": ["preliminary", "final", "addendum"]},
        "text": {"type": "string"},
        "template": {"type": ["string", "null"]},
        "sections": {"type": ["object", "null"]},
        "author": {"type": "object"},
        "created_at": {"type": "string", "format": "date-time"},
        "cosignatures": {"type": "array"},
        "links": {"type": "object"},
    },
}


def _binary(media: str, summary: str) -> dict[str, Any]:
    out = responses({"type": "object"}, 401, 404)
    out["200"] = {"description": "OK", "content": {media: {"schema": {"type": "string"}}}}
    return {"get": {"summary": summary, "parameters": [ID, VERSION_PARAM], "responses": out}}


OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/report-templates": {
        "get": {
            "summary": "Report templates (for a modality: its own and the generic ones)",
            "parameters": [
                query("kind", {"enum": list(report_templates.TEMPLATE_KINDS)}),
                query("modality", {"type": "string"}, "DICOM modality code, e.g. CT"),
            ],
            "responses": responses(
                {"type": "object", "properties": {"templates": {"type": "array"}}}, 400, 401, 403
            ),
        },
        "post": {
            "summary": "Create a report template (admin)",
            "requestBody": json_request(_TEMPLATE),
            "responses": responses(_TEMPLATE, 400, 401, 403, 409, ok_status="201"),
        },
    },
    "/api/v1/report-templates/{id}": {
        "patch": {
            "summary": "Change a report template (admin; its code stays)",
            "parameters": [ID],
            "requestBody": json_request(_TEMPLATE),
            "responses": responses(_TEMPLATE, 400, 401, 403, 404),
        }
    },
    "/api/v1/cases/{id}/reports": {
        "post": {
            "summary": "Write a preliminary, final or addendum version (new immutable row)",
            "parameters": [ID],
            "requestBody": json_request(
                {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": {"enum": ["preliminary", "final", "addendum"]},
                        "text": {"type": "string"},
                        "sections": {
                            "type": "object",
                            "additionalProperties": {"type": "string"},
                            "description": "{section key: text}; the text is composed from them",
                        },
                        "template": {"type": "string", "description": "template code"},
                    },
                }
            ),
            "responses": responses(_REPORT, 400, 401, 403, 404, 409, ok_status="201"),
        },
        "get": {
            "summary": "The case's report versions (a clinic sees signed ones only)",
            "parameters": [ID],
            "responses": responses(
                {"type": "object", "properties": {"reports": {"type": "array", "items": _REPORT}}},
                401,
                404,
            ),
        },
    },
    "/api/v1/cases/{id}/reports/{version}": {
        "get": {
            "summary": "One report version",
            "parameters": [ID, VERSION_PARAM],
            "responses": responses(_REPORT, 401, 404),
        }
    },
    "/api/v1/cases/{id}/reports/{version}/cosign": {
        "post": {
            "summary": "Co-sign a final report or addendum (tertiary reader)",
            "parameters": [ID, VERSION_PARAM],
            "requestBody": json_request(
                {"type": "object", "properties": {"comment": {"type": "string"}}}, required=False
            ),
            "responses": responses({"type": "object"}, 400, 401, 403, 404, 409, ok_status="201"),
        }
    },
    "/api/v1/cases/{id}/reports/{version}.pdf": _binary(
        "application/pdf", "The version as a PDF (also at .../{version}/pdf)"
    ),
    "/api/v1/cases/{id}/reports/{version}/pdf": _binary("application/pdf", "The version as PDF"),
    "/api/v1/cases/{id}/reports/{version}/fhir": _binary(
        "application/fhir+json", "The version as a FHIR R4 DiagnosticReport"
    ),
    "/api/v1/cases/{id}/reports/{version}/sr": _binary(
        "application/dicom", "The version as a DICOM Basic Text SR"
    ),
}
