"""Authentication and error middlewares: every route needs a bearer token unless marked public,
and every failure leaves as JSON ``{"error": code, "message": text}``."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from sqlalchemy.exc import OperationalError

from telehub import auth
from telehub.api.common import PRINCIPAL_KEY, Handler, run, services
from telehub.errors import TelehubError, Unauthorized

log = logging.getLogger(__name__)


def error_json(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except TelehubError as exc:
        if exc.http_status >= 500 or exc.http_status == 401:
            log.info("%s %s -> %s %s", request.method, request.path, exc.http_status, exc.code)
        return error_json(exc.http_status, exc.code, exc.message)
    except web.HTTPRequestEntityTooLarge as exc:
        return error_json(413, "too_large", exc.text or "request body too large")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = exc.reason.lower().replace(" ", "_")
        return error_json(exc.status, code, exc.reason)
    except BadHttpMessage as exc:  # a malformed body part read by the handler (multipart)
        return error_json(400, "bad_request", f"malformed request body: {exc.message}")
    except OperationalError as exc:  # database down or restarting: say so, and that it passes
        log.warning("database unavailable in %s %s: %s", request.method, request.path, exc)
        response = error_json(503, "database_unavailable", "the database is not reachable; retry")
        response.headers["Retry-After"] = "5"
        return response
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_json(500, "internal_error", "internal error; the hub has logged it")


def _is_public(request: web.Request) -> bool:
    route = request.match_info.route
    if isinstance(route.resource, web.StaticResource):
        return True  # the web front-end's files: no patient data, needed to show the login
    handler = getattr(route, "handler", None)
    return bool(getattr(handler, "telehub_public", False))


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "OPTIONS" or _is_public(request):
        return await handler(request)
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("missing bearer token (Authorization: Bearer <token>)", "no_token")
    request[PRINCIPAL_KEY] = await run(
        request, auth.authenticate, services(request).db, token.strip()
    )
    return await handler(request)
