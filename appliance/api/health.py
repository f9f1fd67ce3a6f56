"""/healthz and /metrics."""
from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__

BOX = web.AppKey("box", object)


async def healthz(request: web.Request) -> web.Response:
    box = request.app[BOX]
    report = box.health()
    failing = {name: reason for name, reason in report.items() if reason}
    body = {
        "status": "failing" if failing else "ok",
        "node": box.config.node.id,
        "version": __version__,
        "services": {name: reason or "ok" for name, reason in report.items()},
    }
    return web.json_response(body, status=503 if failing else 200)


async def metrics(request: web.Request) -> web.Response:
    box = request.app[BOX]
    box.health()  # refresh edgecall_service_up before it is read
    response = web.Response(body=generate_latest(box.registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
