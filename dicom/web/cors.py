"""CORS for ``/dicomweb`` so a browser viewer on another origin (OHIF) can call the hub.

Only the origins listed in ``cors_origins`` (``TELEHUB_CORS_ORIGINS``, comma list, ``*`` for
any) get CORS headers; none are listed by default. A preflight (OPTIONS) carries no credentials,
so it is answered without a token (the auth middleware lets OPTIONS through), but only with
headers for an allowed origin. The headers of real responses are added when a response is
prepared, so errors (401, 404, 406) carry them too and the viewer can read them.
"""

from __future__ import annotations

from aiohttp import web

from telehub.api.common import SERVICES, public

ALLOW_METHODS = "GET, HEAD, POST, OPTIONS"
ALLOW_HEADERS = "Authorization, Content-Type, Accept"
EXPOSE_HEADERS = "Content-Type, Content-Length, Content-Location, Location, Warning"
MAX_AGE = "600"


def allowed_origin(request: web.Request) -> str | None:
    """The request's Origin when the settings allow it, else None."""
    origin = request.headers.get("Origin")
    if not origin:
        return None
    allowed = request.app[SERVICES].settings.cors_origin_list
    if "*" in allowed or origin.rstrip("/") in allowed:
        return origin
    return None


@public  # a preflight carries no credentials; it reveals nothing but the CORS policy
async def preflight(request: web.Request) -> web.Response:
    origin = allowed_origin(request)
    if origin is None:
        return web.json_response(
            {"error": "cors_not_allowed", "message": "this origin may not call the hub"},
            status=403,
        )
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": ALLOW_METHODS,
            "Access-Control-Allow-Headers": ALLOW_HEADERS,
            "Access-Control-Max-Age": MAX_AGE,
            "Vary": "Origin",
        },
    )


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: CORS headers on every /dicomweb answer to an allowed origin."""
    if request.method == "OPTIONS" or not request.path.startswith("/dicomweb"):
        return
    origin = allowed_origin(request)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        response.headers.add("Vary", "Origin")


def setup(app: web.Application, prefix: str) -> None:
    app.router.add_route("OPTIONS", prefix + "/{tail:.*}", preflight)
    app.on_response_prepare.append(add_headers)
