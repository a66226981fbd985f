"""Placeholder: routes of this part are added by its issue-5 work."""

from __future__ import annotations

from typing import Any

from aiohttp import web

routes = web.RouteTableDef()

OPENAPI_PATHS: dict[str, Any] = {}
