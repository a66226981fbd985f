"""Health check: the process answers and its database is reachable."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import text

from telehub.api.common import public, run, services

routes = web.RouteTableDef()


def _db_ok(request: web.Request) -> bool:
    try:
        with services(request).db.reader() as session:
            session.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


@routes.get("/healthz")
@public
async def healthz(request: web.Request) -> web.Response:
    db_ok = await run(request, _db_ok, request)
    return web.json_response(
        {"status": "ok" if db_ok else "degraded", "database": db_ok}, status=200 if db_ok else 503
    )
