"""/healthz and /metrics."""
from __future__ import annotations

import hmac
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__
from ..control import status
from .auth import bearer
from .errors import ApiError

if TYPE_CHECKING:
    from ..runner import Box

BOX: web.AppKey[Box] = web.AppKey("box")


async def healthz(request: web.Request) -> web.Response:
    box = request.app[BOX]
    state = status(box)
    failing = any(reason != "ok" for reason in state["services"].values())
    # Draining first: the box still serves, but a load balancer or the health agent must move
    # traffic away, so it is not "ok" either.
    word = "draining" if state["draining"] else "failing" if failing else "ok"
    body = {
        "status": word,
        "node": box.config.node.id,
        "version": __version__,
        "services": state["services"],
        "draining": state["draining"],
        # The health agent's last report: its probes, the announcement, BGP sessions and prefixes.
        "details": {"agent": state["agent"], "cluster": state["cluster"]},
    }
    return web.json_response(body, status=200 if word == "ok" else 503)


async def metrics(request: web.Request) -> web.Response:
    box = request.app[BOX]
    token = box.config.api.metrics_token
    if token is not None:
        # Checked here, on the route: only /metrics has this token.
        given = bearer(request)
        if given is None or not hmac.compare_digest(given, token.encode()):
            raise ApiError(401, "unauthorized", "/metrics needs an Authorization: Bearer <api.metrics_token> header")
    box.health()  # refresh edgecall_service_up before it is read
    response = web.Response(body=generate_latest(box.registry))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
