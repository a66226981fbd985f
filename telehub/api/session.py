"""Log in (username and password for a bearer token) and log out (revoke it)."""

from __future__ import annotations

from aiohttp import web

from telehub import auth
from telehub.api.common import json_body, public, remote, run, services
from telehub.errors import Invalid

routes = web.RouteTableDef()


@routes.post("/api/v1/auth/login")
@public
async def login(request: web.Request) -> web.Response:
    body = await json_body(request)
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str) or not username:
        raise Invalid("username and password are required strings", "missing_credentials")
    svc = services(request)
    try:
        token, who = await run(
            request,
            auth.login,
            svc.db,
            username,
            password,
            svc.settings.token_ttl_seconds,
            auth.Lockout.from_settings(svc.settings),
            remote(request),
        )
    except auth.AccountLocked as exc:
        return web.json_response(
            {"error": exc.code, "message": exc.message},
            status=exc.http_status,
            headers={"Retry-After": str(exc.retry_after)},
        )
    return web.json_response(
        {
            "token": token,
            "expires_in": svc.settings.token_ttl_seconds,
            "user": {
                "id": who.user_id,
                "username": who.username,
                "role": who.role,
                "facility_id": who.facility_id,
                "centre_id": who.centre_id,
            },
        }
    )


@routes.post("/api/v1/auth/logout")
async def logout(request: web.Request) -> web.Response:
    token = request.headers["Authorization"].partition(" ")[2].strip()
    await run(request, auth.revoke, services(request).db, token)
    return web.json_response({"revoked": True})
