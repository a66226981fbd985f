"""Admin API for C-MOVE destinations: list, register and remove DICOM nodes."""

from __future__ import annotations

from aiohttp import web

from dicom import nodes
from telehub.api.common import json_body, path_id, principal, remote, run, services

routes = web.RouteTableDef()


@routes.get("/api/v1/dicom-nodes")
async def list_nodes(request: web.Request) -> web.Response:
    items = await run(request, nodes.list_nodes, services(request).db, principal(request))
    return web.json_response({"nodes": items})


@routes.post("/api/v1/dicom-nodes")
async def add_node(request: web.Request) -> web.Response:
    who = principal(request)
    nodes.require_admin(who)  # refuse before reading the body
    body = await json_body(request)
    data = await run(request, nodes.add_node, services(request).db, who, body, remote(request))
    return web.json_response(data, status=201)


@routes.delete("/api/v1/dicom-nodes/{id}")
async def delete_node(request: web.Request) -> web.Response:
    await run(
        request,
        nodes.delete_node,
        services(request).db,
        principal(request),
        path_id(request),
        remote(request),
    )
    return web.json_response({}, status=200)
