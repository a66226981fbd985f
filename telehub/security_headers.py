"""Security headers on every HTTP answer: API, static files and errors alike.

The front-end (web/) loads only its own files and sets no inline scripts or styles, so the
Content-Security-Policy allows 'self' alone (plus data:/blob: images and media: rendered ECGs,
consult video). CORS for /dicomweb (dicom/web/cors.py) is left to its own hook. Streams that a
handler prepares itself (SSE, WebSockets) have sent their headers before a middleware sees
them; they carry no cacheable page and get what their handler set.
"""

from __future__ import annotations

from aiohttp import web

from telehub.api.common import SERVICES, Handler

CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": CSP,
}
#: Answers under these prefixes may carry patient data: never kept by a browser or proxy.
NO_STORE_PREFIXES = ("/api/", "/dicomweb")


def came_over_https(request: web.Request) -> bool:
    """TLS to the hub itself, or to a trusted reverse proxy that says so."""
    if request.secure:
        return True
    if not request.app[SERVICES].settings.trust_forwarded_proto:
        return False
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return forwarded.split(",")[0].strip().lower() == "https"


def add(request: web.Request, response: web.StreamResponse) -> None:
    """Set the headers on a response not yet sent (a handler's own values win)."""
    if response.prepared:
        return
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith(NO_STORE_PREFIXES):
        response.headers["Cache-Control"] = "no-store"
    if came_over_https(request):
        max_age = request.app[SERVICES].settings.hsts_max_age
        response.headers["Strict-Transport-Security"] = f"max-age={max_age}; includeSubDomains"


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects and anything the error middleware let pass
        add(request, exc)
        raise
    add(request, response)
    return response
