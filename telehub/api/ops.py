"""Operations endpoints for load balancers and Prometheus: readiness and metrics.

Public like ``/healthz`` (a probe has no token); they show counts and states, never patient
data.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from telehub.api.common import SERVICES, public, run, services
from telehub.metrics import DatabaseCollector
from telehub.readiness import check_all

routes = web.RouteTableDef()
REGISTRY = web.AppKey("metrics_registry", CollectorRegistry)


def setup(app: web.Application) -> None:
    """One registry per app, reading the app's database."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(app[SERVICES].db))
    app[REGISTRY] = registry


@routes.get("/readyz")
@public
async def readyz(request: web.Request) -> web.Response:
    checks = await run(request, check_all, services(request))
    ready = all(c.ok for c in checks)
    body = {
        "status": "ready" if ready else "not_ready",
        "checks": {
            c.name: {
                "ok": c.ok,
                "ms": round(c.seconds * 1000, 1),
                **({"error": c.error} if c.error else {}),
            }
            for c in checks
        },
    }
    return web.json_response(body, status=200 if ready else 503)


@routes.get("/metrics")
@public
async def metrics(request: web.Request) -> web.Response:
    text = await run(request, generate_latest, request.app[REGISTRY])
    return web.Response(body=text, headers={"Content-Type": CONTENT_TYPE_LATEST})


OPENAPI_PATHS: dict[str, Any] = {
    "/readyz": {
        "get": {
            "summary": "Readiness: database, object store, broker and (under serve) the DICOM "
            "receiving processes (no token)",
            "security": [],
            "responses": {
                "200": {"description": "ready"},
                "503": {"description": "a dependency is not reachable; see checks"},
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics, consortium-wide from the database (no token)",
            "security": [],
            "responses": {"200": {"description": "Prometheus text format"}},
        }
    },
}
