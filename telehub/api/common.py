"""What every API handler shares: the caller, the thread pool, JSON in and out."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from aiohttp import web

from telehub.auth import Principal
from telehub.errors import Invalid, NotFound
from telehub.params import bounded_int
from telehub.services import Services

P = ParamSpec("P")
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVICES = web.AppKey("services", Services)
#: Called after a handler committed outbox work, so the relay publishes it at once.
WORK_QUEUED = web.AppKey("work_queued", Callable[[], None])
PRINCIPAL_KEY = "telehub.principal"


def public(handler: Handler) -> Handler:
    """Mark a handler as reachable without a token (health checks and login only)."""
    handler.telehub_public = True  # type: ignore[attr-defined]
    return handler


def services(request: web.Request) -> Services:
    return request.app[SERVICES]


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL_KEY]


def remote(request: web.Request) -> str:
    """The client's address for the audit trail and throttling: the peer, or behind trusted
    reverse proxies the right-most X-Forwarded-For entry that is not one of them (entries
    left of it were written by the client and prove nothing)."""
    peer = request.remote or ""
    proxies = request.app[SERVICES].settings.trusted_proxy_networks
    if not proxies or not _within(peer, proxies):
        return peer
    hops = [h.strip() for h in ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")]
    for hop in reversed([h for h in hops if h]):
        if not _within(hop, proxies):
            return hop if _is_ip(hop) else peer
    return peer


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _within(address: str, networks: tuple[Any, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


async def run(request: web.Request, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a synchronous service call in the app's thread pool (the services use blocking
    SQLAlchemy, shared with the DICOM threads and the Celery workers)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))


async def json_body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise Invalid("expected a JSON body (Content-Type: application/json)", "not_json")
    try:
        body = await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Invalid(f"body is not valid JSON: {exc}", "bad_json") from exc
    if not isinstance(body, dict):
        raise Invalid("body must be a JSON object", "bad_json")
    return body


def int_param(request: web.Request, name: str, default: int, lo: int = 0, hi: int = 1000) -> int:
    value = bounded_int(request.query, name, default, lo, hi)
    assert value is not None
    return value


def path_id(request: web.Request, name: str = "id") -> int:
    try:
        value = int(request.match_info[name])
    except ValueError as exc:
        raise Invalid(f"{name} must be an integer", "bad_parameter") from exc
    if not -(2**63) <= value < 2**63:  # beyond a database integer: no such row
        raise NotFound(f"no {name} {value}", "not_found")
    return value
