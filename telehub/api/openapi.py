"""The OpenAPI 3.1 document of the HTTP API, served at /api/v1/openapi.json."""

from __future__ import annotations

import functools
import importlib
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
_UPLOAD_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_PAGE = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
]

_DICOM_JSON = {"application/dicom+json": {"schema": {"type": "array", "items": {"type": "object"}}}}
_QIDO = {
    "get": {
        "summary": "QIDO-RS search (PS3.18 10.6): attribute=value by keyword or tag, wildcards, "
        "UID lists, date/time ranges, includefield, limit, offset; visible studies only",
        "parameters": [
            {"name": "includefield", "in": "query", "schema": {"type": "string"}},
            *_PAGE,
        ],
        "responses": {
            "200": {"description": "matches (an empty array for none)", "content": _DICOM_JSON},
            **{
                k: v
                for k, v in _responses({}, 400, 401, 404).items()
                if k != "200"  # 404: a study or series in the path the caller cannot see
            },
        },
    }
}
_STOW = {
    "post": {
        "summary": "STOW-RS store instances (PS3.18 10.5), as the calling clinic's facility",
        "requestBody": {
            "required": True,
            "content": {'multipart/related; type="application/dicom"': {}},
        },
        "responses": {
            **{
                str(code): {
                    "description": meaning,
                    "content": {"application/dicom+json": {"schema": {"type": "object"}}},
                }
                for code, meaning in (
                    (200, "all stored"),
                    (202, "some stored, FailedSOPSequence lists the others"),
                    (409, "none stored"),
                )
            },
            **{k: v for k, v in _responses({}, 400, 401, 403, 413, 415).items() if k != "200"},
        },
    }
}
_STUDY_UID = {"name": "study", "in": "path", "required": True, "schema": {"type": "string"}}
_SERIES_UID = {"name": "series", "in": "path", "required": True, "schema": {"type": "string"}}
_DICOMWEB_STOW_QIDO: dict[str, Any] = {
    "/dicomweb/studies": {**_QIDO, **_STOW},
    "/dicomweb/studies/{study}": {
        "post": {**_STOW["post"], "parameters": [_STUDY_UID]},
    },
    "/dicomweb/series": _QIDO,
    "/dicomweb/instances": _QIDO,
    "/dicomweb/studies/{study}/series": {
        "get": {**_QIDO["get"], "parameters": [_STUDY_UID, *_QIDO["get"]["parameters"]]}
    },
    "/dicomweb/studies/{study}/instances": {
        "get": {**_QIDO["get"], "parameters": [_STUDY_UID, *_QIDO["get"]["parameters"]]}
    },
    "/dicomweb/studies/{study}/series/{series}/instances": {
        "get": {
            **_QIDO["get"],
            "parameters": [_STUDY_UID, _SERIES_UID, *_QIDO["get"]["parameters"]],
        }
    },
}

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
        "/api/v1/uploads": {
            "post": {
                "summary": "Open a resumable upload (tus 1.0 creation; JSON or Upload-Length and "
                "Upload-Metadata headers) of a STOW-RS multipart/related body or a zip of DICOM "
                "files (application/zip); metadata priority and clinical_question go to the "
                "case(s) the upload creates",
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["size", "content_type"],
                                "properties": {
                                    "size": {"type": "integer"},
                                    "content_type": {"type": "string"},
                                    "sha256": {"type": "string"},
                                    "metadata": {
                                        "type": "object",
                                        "properties": {
                                            "priority": {"enum": ["stat", "urgent", "routine"]},
                                            "clinical_question": {"type": "string"},
                                        },
                                    },
                                },
                            }
                        }
                    }
                },
                "responses": _responses(
                    {"$ref": "#/components/schemas/Upload"}, 400, 401, 413, 415, ok_status="201"
                ),
            }
        },
        "/api/v1/uploads/{id}": {
            "head": {
                "summary": "The upload's offset (Upload-Offset, Upload-Length headers)",
                "parameters": [_UPLOAD_ID],
                "responses": {"200": {"description": "OK"}, "404": {"description": "not found"}},
            },
            "get": {
                "summary": "The upload: offset, state and, once processed, the STOW-RS answer",
                "parameters": [_UPLOAD_ID],
                "responses": _responses({"$ref": "#/components/schemas/Upload"}, 401, 404),
            },
            "patch": {
                "summary": "Append a chunk at Upload-Offset (application/offset+octet-stream); "
                "fsynced before the new offset is answered; the last chunk processes the body",
                "parameters": [
                    _UPLOAD_ID,
                    {
                        "name": "Upload-Offset",
                        "in": "header",
                        "required": True,
                        "schema": {"type": "integer"},
                    },
                ],
                "responses": {
                    "204": {"description": "stored; Upload-Offset is the new offset"},
                    **_responses({}, 400, 401, 404, 409, 415, 423),
                },
            },
            "delete": {
                "summary": "Abandon the upload (tus termination)",
                "parameters": [_UPLOAD_ID],
                "responses": {
                    "204": {"description": "deleted"},
                    "404": {"description": "not found"},
                },
            },
        },
        "/api/v1/uploads/{id}/complete": {
            "post": {
                "summary": "The processing answer, the same every time (202 while processing)",
                "parameters": [_UPLOAD_ID],
                "responses": _responses({"$ref": "#/components/schemas/Upload"}, 401, 404, 409),
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
        "/api/v1/dicom-nodes": {
            "get": {
                "summary": "C-MOVE destinations (admin only)",
                "responses": _responses({"type": "object"}, 401, 403),
            },
            "post": {
                "summary": "Register a C-MOVE destination of a facility (admin only)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["ae_title", "host", "port", "facility_id"],
                                "properties": {
                                    "ae_title": {"type": "string", "maxLength": 16},
                                    "host": {"type": "string"},
                                    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                                    "facility_id": {"type": "integer"},
                                    "description": {"type": "string", "maxLength": 200},
                                },
                            }
                        }
                    },
                },
                "responses": _responses({"type": "object"}, 400, 401, 403, 409, ok_status="201"),
            },
        },
        "/api/v1/dicom-nodes/{id}": {
            "delete": {
                "summary": "Remove a C-MOVE destination (admin only)",
                "parameters": [_ID],
                "responses": _responses({"type": "object"}, 401, 403, 404),
            }
        },
        **_DICOMWEB_STOW_QIDO,
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Upload": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "url": {"type": "string"},
                    "size": {"type": "integer"},
                    "offset": {"type": "integer"},
                    "content_type": {"type": "string"},
                    "state": {"enum": ["receiving", "processing", "done"]},
                    "expires_at": {"type": "string", "format": "date-time"},
                    "status": {"type": ["integer", "null"]},
                    "result": {
                        "type": ["object", "null"],
                        "description": "stow: the STOW-RS DICOM JSON answer; failures: the "
                        "hub's reason per refused instance; or error and message",
                    },
                },
            },
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


#: API modules that declare their own paths as ``OPENAPI_PATHS`` (see telehub.api.schema).
PATH_MODULES = (
    "telehub.api.ops",
    "telehub.api.consortium",
    "telehub.api.routing",
    "telehub.api.worklist",
    "telehub.api.assignment",
    "telehub.api.events",
    "telehub.api.reports",
    "telehub.api.notifications",
    "telehub.api.analytics",
    "telehub.api.audit",
    "telehub.api.referrals",
    "telehub.api.priors",
    "telehub.api.consults",
)


@functools.cache
def spec() -> dict[str, Any]:
    """SPEC plus every module's fragment; a path declared twice is a programming error."""
    document = {**SPEC, "paths": dict(SPEC["paths"])}
    for name in PATH_MODULES:
        for path, operations in importlib.import_module(name).OPENAPI_PATHS.items():
            merged = document["paths"].setdefault(path, {})
            clash = set(merged) & set(operations)
            assert not clash, f"{path}: {sorted(clash)} declared twice"
            merged.update(operations)
    return document


@routes.get("/api/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(spec())
