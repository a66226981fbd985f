"""Pieces for the OpenAPI fragments each API module declares as ``OPENAPI_PATHS``."""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}
ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
PAGE = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
]


def responses(ok: dict[str, Any], *errors: int, ok_status: str = "200") -> dict[str, Any]:
    """A JSON success answer plus the listed error statuses (all ``Error`` objects)."""
    out: dict[str, Any] = {
        ok_status: {"description": "OK", "content": {"application/json": {"schema": ok}}}
    }
    for code in errors:
        out[str(code)] = {
            "description": "error",
            "content": {"application/json": {"schema": ERROR}},
        }
    return out


def json_request(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "schema": schema}
    if description:
        param["description"] = description
    return param
