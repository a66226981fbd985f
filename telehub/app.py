"""The aiohttp application factory: explicit setup, thin handlers, services injected."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

from aiohttp import web

from dicom.web import routes as dicomweb
from telehub.api import (
    analytics,
    assignment,
    audit,
    cases,
    consortium,
    consults,
    dicom_nodes,
    ecg,
    events,
    health,
    notifications,
    openapi,
    ops,
    priors,
    referrals,
    reports,
    routing,
    session,
    uploads,
    worklist,
)
from telehub.api.common import SERVICES, WORK_QUEUED, public
from telehub.api.middleware import authenticate, errors
from telehub.security_headers import security_headers
from telehub.services import Services

MAX_JSON_BODY = 2 * 1024 * 1024


def web_root() -> Path:
    return Path(str(resources.files("web")))


@public  # the login page itself; no patient data
async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(web_root() / "index.html")


def create_app(
    services: Services, on_work_queued: Callable[[], None] = lambda: None
) -> web.Application:
    app = web.Application(
        middlewares=[security_headers, errors, authenticate], client_max_size=MAX_JSON_BODY
    )
    app[SERVICES] = services
    app[WORK_QUEUED] = on_work_queued
    for module in (
        health,
        ops,
        session,
        worklist,
        cases,
        assignment,
        reports,
        routing,
        consortium,
        consults,
        events,
        notifications,
        analytics,
        audit,
        referrals,
        priors,
        ecg,
        dicom_nodes,
        uploads,
        openapi,
    ):
        app.add_routes(module.routes)
    dicomweb.setup(app)
    ops.setup(app)
    app.router.add_get("/", index)
    app.router.add_static("/static/", web_root(), show_index=False, follow_symlinks=False)
    return app
