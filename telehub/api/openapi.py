"""The OpenAPI 3.1 document of the HTTP API, served at /api/v1/openapi.json."""

from __future__ import annotations

from typing import Any

from aiohttp import web

routes = web.RouteTableDef()

_ERROR = {"$ref": "#/components/schemas/Error"}


def _responses(ok: dict[str, Any], *errors: int, ok_status: str = "200") -> dict[str, Any]:
    out: dict[str, Any] = {
        ok_status: {"description": "OK", "content": {"application/json": {"schema": ok}}}
    }
    for code in errors:
        out[str(code)] = {
            "description": "error",
            "content": {"application/json": {"schema": _ERROR}},
        }
    return out


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
_PAGE = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
]

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "telehub API",
        "version": "1",
        "description": "Remote diagnosis for medical consortia: cases, worklists, reports.",
    },
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}],
    "paths": {
        "/healthz": {
            "get": {
                "summary": "Health check",
                "security": [],
                "responses": _responses({"type": "object"}, 503),
            }
        },
        "/api/v1/auth/login": {
            "post": {
                "summary": "Exchange username and password for a bearer token",
                "security": [],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["username", "password"],
                                "properties": {
                                    "username": {"type": "string"},
                                    "password": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": _responses({"$ref": "#/components/schemas/Login"}, 400, 401),
            }
        },
        "/api/v1/auth/logout": {
            "post": {
                "summary": "Revoke the token used for this request",
                "responses": _responses({"type": "object"}, 401),
            }
        },
        "/api/v1/worklist": {
            "get": {
                "summary": "Cases waiting for the reader's reading centre, most urgent first",
                "parameters": _PAGE,
                "responses": _responses({"$ref": "#/components/schemas/CaseList"}, 400, 401, 403),
            }
        },
        "/api/v1/cases": {
            "get": {
                "summary": "Cases the caller may see (a clinic: its own facility's)",
                "parameters": [
                    *_PAGE,
                    {"name": "status", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": _responses({"$ref": "#/components/schemas/CaseList"}, 400, 401),
            }
        },
        "/api/v1/cases/{id}": {
            "get": {
                "summary": "One case with studies, reports, timeline and turnaround times",
                "parameters": [_ID],
                "responses": _responses({"$ref": "#/components/schemas/CaseDetail"}, 401, 404),
            }
        },
        "/api/v1/cases/{id}/claim": {
            "post": {
                "summary": "Claim a routed case for the calling reader",
                "parameters": [_ID],
                "responses": _responses({"$ref": "#/components/schemas/Case"}, 401, 403, 404, 409),
            }
        },
        "/api/v1/cases/{id}/reports": {
            "post": {
                "summary": "Add a preliminary or final report to a claimed case",
                "parameters": [_ID],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["text", "status"],
                                "properties": {
                                    "text": {"type": "string"},
                                    "status": {"enum": ["preliminary", "final"]},
                                },
                            }
                        }
                    },
                },
                "responses": _responses(
                    {"type": "object"}, 400, 401, 403, 404, 409, ok_status="201"
                ),
            }
        },
        "/api/v1/ecg": {
            "post": {
                "summary": "Upload an ECG (WFDB files, HL7 aECG or vendor XML, or a zip of them); "
                "creates a case for the origin's ECG reading centre",
                "requestBody": {
                    "required": True,
                    "content": {
                        "multipart/form-data": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "file": {
                                        "type": "array",
                                        "items": {"type": "string", "format": "binary"},
                                    },
                                    "priority": {"enum": ["stat", "urgent", "routine"]},
                                    "clinical_question": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": _responses(
                    {
                        "type": "object",
                        "properties": {
                            "case_id": {"type": "integer"},
                            "ecg_id": {"type": "integer"},
                        },
                    },
                    400,
                    401,
                    403,
                    413,
                    ok_status="201",
                ),
            }
        },
        "/api/v1/ecg/{id}": {
            "get": {
                "summary": "ECG metadata and its automated (unconfirmed) analysis",
                "parameters": [_ID],
                "responses": _responses({"type": "object"}, 401, 404),
            }
        },
        "/api/v1/ecg/{id}/waveform": {
            "get": {
                "summary": "Samples in mV for the viewer, min/max-decimated on request",
                "parameters": [
                    _ID,
                    {"name": "max_points", "in": "query", "schema": {"type": "integer"}},
                    {"name": "leads", "in": "query", "schema": {"type": "string"}},
                    {"name": "start", "in": "query", "schema": {"type": "number"}},
                    {"name": "end", "in": "query", "schema": {"type": "number"}},
                ],
                "responses": _responses({"type": "object"}, 400, 401, 404),
            }
        },
        "/api/v1/ecg/{id}/ecg.svg": {
            "get": {
                "summary": "12-lead rendering on ECG paper (25 mm/s, 10 mm/mV), SVG",
                "parameters": [_ID],
                "responses": {
                    "200": {"description": "SVG", "content": {"image/svg+xml": {}}},
                    "404": {"description": "not found"},
                },
            }
        },
        "/api/v1/ecg/{id}/ecg.png": {
            "get": {
                "summary": "12-lead rendering on ECG paper, PNG",
                "parameters": [_ID],
                "responses": {
                    "200": {"description": "PNG", "content": {"image/png": {}}},
                    "404": {"description": "not found"},
                },
            }
        },
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "message"],
                "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
            },
            "Login": {
                "type": "object",
                "properties": {
                    "token": {"type": "string"},
                    "expires_in": {"type": "integer"},
                    "user": {"type": "object"},
                },
            },
            "Case": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "kind": {"type": "string"},
                    "priority": {"enum": ["stat", "urgent", "routine"]},
                    "status": {"type": "string"},
                    "origin": {"type": "object"},
                    "centre": {"type": ["object", "null"]},
                    "reader": {"type": ["object", "null"]},
                    "patient": {"type": ["object", "null"]},
                    "study_instance_uids": {"type": "array", "items": {"type": "string"}},
                    "arrived_at": {"type": "string", "format": "date-time"},
                    "critical_findings": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "automated, unconfirmed ECG findings",
                    },
                },
            },
            "CaseList": {
                "type": "object",
                "properties": {
                    "cases": {"type": "array", "items": {"$ref": "#/components/schemas/Case"}}
                },
            },
            "CaseDetail": {
                "allOf": [
                    {"$ref": "#/components/schemas/Case"},
                    {
                        "type": "object",
                        "properties": {
                            "studies": {"type": "array"},
                            "reports": {"type": "array"},
                            "timeline": {"type": "array"},
                            "tat": {
                                "type": "object",
                                "description": "seconds; null until reached",
                                "properties": {
                                    k: {"type": ["number", "null"]}
                                    for k in (
                                        "first_instance_to_complete",
                                        "complete_to_routed",
                                        "routed_to_claimed",
                                        "claimed_to_final",
                                        "complete_to_final",
                                    )
                                },
                            },
                        },
                    },
                ]
            },
        },
    },
}


@routes.get("/api/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(SPEC)
