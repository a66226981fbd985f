"""QIDO-RS. (Stub: filled in by the DICOMweb work.)"""

from __future__ import annotations

from aiohttp import web

routes = web.RouteTableDef()
