"""Analytics: TAT percentiles and SLA compliance (JSON and CSV), and the consortium figures."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from telehub import analytics, figures
from telehub.api.common import principal, remote, run, services
from telehub.api.schema import query, responses
from telehub.tat import SPANS

routes = web.RouteTableDef()


@routes.get("/api/v1/analytics/tat")
async def tat(request: web.Request) -> web.Response:
    q = analytics.parse_tat_query(request.query)
    data = await run(
        request, analytics.tat_report, services(request).db, principal(request), q, remote(request)
    )
    return web.json_response(data)


@routes.get("/api/v1/analytics/tat.csv")
async def tat_csv(request: web.Request) -> web.Response:
    q = analytics.parse_tat_query(request.query)
    data = await run(
        request, analytics.tat_report, services(request).db, principal(request), q, remote(request)
    )
    name = f"tat-{q.group_by or 'all'}-{q.window.start:%Y%m%d}-{q.window.end:%Y%m%d}.csv"
    return web.Response(
        body=analytics.to_csv(data).encode("utf-8"),
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@routes.get("/api/v1/analytics/sla")
async def sla(request: web.Request) -> web.Response:
    window = analytics.parse_window(request.query, default_days=30)
    data = await run(
        request,
        analytics.sla_report,
        services(request).db,
        principal(request),
        window,
        remote(request),
    )
    return web.json_response(data)


@routes.get("/api/v1/analytics/figures")
async def consortium_figures(request: web.Request) -> web.Response:
    window, period = figures.parse(request.query)
    data = await run(
        request,
        figures.figures,
        services(request).db,
        principal(request),
        window,
        period,
        remote(request),
    )
    return web.json_response(data)


_PERIOD = [
    query("from", {"type": "string"}, "YYYY-MM-DD (start of day) or ISO 8601 time, inclusive"),
    query("to", {"type": "string"}, "YYYY-MM-DD (that whole day) or ISO 8601 time, exclusive"),
    query("tz", {"type": "string"}, "IANA zone of dates and periods, default UTC"),
]
_FILTERS = [
    *_PERIOD,
    query("group_by", {"enum": list(analytics.GROUPS)}),
    query("priority", {"enum": ["stat", "urgent", "routine"]}),
    query("kind", {"enum": ["imaging", "ecg", "consultation"]}),
    query("centre", {"type": "string"}, "reading centre id or code"),
    query("origin", {"type": "string"}, "origin facility id or code"),
]
_PCT = {"type": ["number", "null"]}
_SPAN = {
    "type": "object",
    "properties": {"n": {"type": "integer"}, "p50": _PCT, "p90": _PCT, "p95": _PCT},
}
_SLA = {
    "type": "object",
    "properties": {
        "met": {"type": "integer"},
        "breached": {"type": "integer"},
        "pending": {"type": "integer"},
        "compliance": {"type": ["number", "null"]},
    },
}
_FIGURES = {
    "type": "object",
    "properties": {
        "count": {"type": "integer"},
        "tat": {"type": "object", "properties": {name: _SPAN for name, _, _ in SPANS}},
        "sla": _SLA,
    },
}
_GROUP = {"allOf": [_FIGURES, {"properties": {"group": {"type": "object"}}}]}

OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/analytics/tat": {
        "get": {
            "summary": "TAT p50/p90/p95 of each part and the total, and SLA compliance, of the "
            "cases that arrived in the period, per group and overall (seconds)",
            "parameters": _FILTERS,
            "responses": responses(
                {
                    "type": "object",
                    "properties": {
                        "overall": _FIGURES,
                        "groups": {"type": "array", "items": _GROUP},
                    },
                },
                400,
                401,
            ),
        }
    },
    "/api/v1/analytics/tat.csv": {
        "get": {
            "summary": "The same as CSV (UTF-8 with byte order mark, one row per group, then all)",
            "parameters": _FILTERS,
            "responses": {
                "200": {"description": "CSV", "content": {"text/csv": {}}},
                **{k: v for k, v in responses({}, 400, 401).items() if k != "200"},
            },
        }
    },
    "/api/v1/analytics/sla": {
        "get": {
            "summary": "SLA compliance of the cases that arrived in the period, by priority and "
            "by reading centre",
            "parameters": _PERIOD,
            "responses": responses(
                {
                    "type": "object",
                    "properties": {
                        "overall": {"type": "object"},
                        "by_priority": {"type": "array"},
                        "by_centre": {"type": "array"},
                    },
                },
                400,
                401,
            ),
        }
    },
    "/api/v1/analytics/figures": {
        "get": {
            "summary": "Consortium figures per period: remote diagnoses by kind, interactive vs "
            "non-interactive, by origin tier, upward vs downward (escalations, referrals)",
            "parameters": [*_PERIOD, query("period", {"enum": ["month", "quarter", "year"]})],
            "responses": responses(
                {
                    "type": "object",
                    "properties": {"periods": {"type": "array"}, "total": {"type": "object"}},
                },
                400,
                401,
            ),
        }
    },
}
