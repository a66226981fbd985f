"""Mount the DICOMweb services on the hub's aiohttp app, behind its authentication."""

from __future__ import annotations

from aiohttp import web

from dicom.web import cors, qido, stow, wado

PREFIX = "/dicomweb"


def setup(app: web.Application) -> None:
    for module in (stow, qido, wado):
        app.add_routes(module.routes)
    cors.setup(app, PREFIX)  # last: its OPTIONS catch-all must not shadow a service's route
