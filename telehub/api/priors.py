"""Priors: the patient's other cases from anywhere in the consortium (检查结果互认)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from telehub import priors
from telehub.api.common import int_param, path_id, principal, remote, run, services
from telehub.api.schema import ID, query, responses

routes = web.RouteTableDef()


@routes.get("/api/v1/cases/{id}/priors")
async def case_priors(request: web.Request) -> web.Response:
    data = await run(
        request,
        priors.priors,
        services(request).db,
        principal(request),
        path_id(request),
        services(request).settings.patient_match,
        remote(request),
        limit=int_param(request, "limit", 100, 1, 500),
    )
    return web.json_response(data)


OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/cases/{id}/priors": {
        "get": {
            "summary": "The patient's other cases, newest first, from any facility: facility, "
            "date, modalities, kind, final report, study UIDs (matching: settings.patient_match)",
            "parameters": [ID, query("limit", {"type": "integer", "minimum": 1, "maximum": 500})],
            "responses": responses(
                {
                    "type": "object",
                    "properties": {
                        "case_id": {"type": "integer"},
                        "match": {"enum": ["issuer", "id"]},
                        "patient": {"type": ["object", "null"]},
                        "priors": {"type": "array", "items": {"type": "object"}},
                    },
                },
                400,
                401,
                404,
            ),
        }
    },
}
