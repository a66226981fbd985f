"""Live updates as server-sent events (``GET /api/v1/events``), and the one-time tickets that
let a browser's EventSource (which cannot send an Authorization header) open the stream."""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response

from telehub import auth, live
from telehub.api.common import PRINCIPAL_KEY, Handler, principal, public, remote, run, services
from telehub.api.schema import query, responses
from telehub.errors import Unauthorized

routes = web.RouteTableDef()

#: A comment line this often keeps proxies from closing an idle stream (and finds dead peers).
HEARTBEAT_SECONDS = 15.0
#: How often an idle stream checks that its client and the server are still there.
CHECK_SECONDS = 1.0


def stream_auth(handler: Handler) -> Handler:
    """The event stream's authentication, checked here and nowhere else: a one-time
    ``?ticket=`` (from ``POST /api/v1/events/ticket``) or, for non-browser clients, the usual
    bearer token. The handler is marked public so the token middleware hands it to this check;
    without either credential the answer is 401, as on every other route."""

    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.StreamResponse:
        db = services(request).db
        ticket = request.query.get("ticket")
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if ticket:
            request[PRINCIPAL_KEY] = await run(request, live.redeem_ticket, db, ticket)
        elif scheme.lower() == "bearer" and token.strip():
            request[PRINCIPAL_KEY] = await run(request, auth.authenticate, db, token.strip())
        else:
            raise Unauthorized(
                "the event stream needs ?ticket= (POST /api/v1/events/ticket) or a bearer token",
                "no_token",
            )
        return await handler(request)

    return public(checked)


@routes.post("/api/v1/events/ticket")
async def ticket(request: web.Request) -> web.Response:
    value = await run(request, live.issue_ticket, services(request).db, principal(request))
    return web.json_response(
        {
            "ticket": value,
            "expires_in": live.TICKET_SECONDS,
            "url": f"/api/v1/events?ticket={value}",
        }
    )


def _gone(request: web.Request) -> bool:
    """The client went away, or the server is shutting down (aiohttp marks the connection
    closing; a stream would otherwise hold the shutdown for its whole timeout)."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return True
    return bool(getattr(request.protocol, "_close", False))


@routes.get("/api/v1/events")
@stream_auth
async def events(request: web.Request) -> web.StreamResponse:
    resume = live.parse_event_id(
        request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
    )
    hub = live.hub_for(services(request).db)
    listener = await hub.subscribe(principal(request), resume, remote(request))
    try:
        if _gone(request):  # closed while we subscribed: nothing to prepare a stream on
            return web.Response(status=499)
        async with sse_response(request, ping_interval=HEARTBEAT_SECONDS) as stream:
            who = principal(request)
            hello = {"user": who.username, "role": who.role, "resumed": resume is not None}
            await stream.send(json.dumps(hello), id=listener.hello_id, event="hello", retry=3000)
            for message in listener.backfill:
                await stream.send(message.json(), id=message.sse_id, event=message.kind)
            while stream.is_connected() and not listener.overflowed:
                try:
                    message = await asyncio.wait_for(listener.queue.get(), CHECK_SECONDS)
                except TimeoutError:
                    if _gone(request):
                        break
                    continue
                if not listener.already_sent(message):
                    await stream.send(message.json(), id=message.sse_id, event=message.kind)
        return stream
    except ConnectionError:
        return web.Response(status=499)  # the client left mid-write; nobody reads this
    finally:
        hub.unsubscribe(listener)


OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/events": {
        "get": {
            "summary": "Live updates (text/event-stream): `case` events (timeline changes of "
            "cases the caller may see, with the case's status, priority, centre and reader) "
            "and `notification` events (the caller's new notifications); a `hello` event "
            "first. Each message's id resumes the stream through Last-Event-ID. Heartbeat "
            "comments every 15 s.",
            "security": [{"bearer": []}, {}],
            "parameters": [
                query("ticket", {"type": "string"}, "one-time ticket (for EventSource)"),
                query("last_event_id", {"type": "string"}, "as the Last-Event-ID header"),
            ],
            "responses": {
                "200": {
                    "description": "the event stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **{k: v for k, v in responses({}, 401).items() if k != "200"},
            },
        }
    },
    "/api/v1/events/ticket": {
        "post": {
            "summary": f"A one-time ticket for the event stream, valid {live.TICKET_SECONDS} s",
            "responses": responses(
                {
                    "type": "object",
                    "properties": {
                        "ticket": {"type": "string"},
                        "expires_in": {"type": "integer"},
                        "url": {"type": "string"},
                    },
                },
                401,
            ),
        }
    },
}
