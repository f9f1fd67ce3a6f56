"""/healthz and /metrics."""
from __future__ import annotations

import asyncio
import hmac
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__
from ..control import status
from ..workers.metrics import merge
from ..workers.plan import WorkerPlan
from .auth import bearer
from .errors import ApiError

if TYPE_CHECKING:
    from ..runner import Box

BOX: web.AppKey[Box] = web.AppKey("box")
SIBLING_TIMEOUT = 2.0  # how long /metrics waits for the box's other workers' own


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
    body = generate_latest(box.registry)
    worker = box.source.worker
    if worker is not None and request.query.get("worker") != "only":
        body = await _every_worker(box, worker, body, request.headers.get("Authorization"))
    response = web.Response(body=body)
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def _every_worker(box: Box, worker: WorkerPlan, own: bytes, authorization: str | None) -> bytes:
    """The box's metrics when it runs workers: this one's and those the others answer within
    SIBLING_TIMEOUT on their own addresses (workers/metrics.py); one that does not is left out."""
    cluster = box.service("cluster")
    nodes = getattr(getattr(cluster, "membership", None), "nodes", {})
    siblings = {index: record.api for node, record in nodes.items()
                if (index := worker.sibling(node)) is not None and index != worker.index}
    headers = {"Authorization": authorization} if authorization else {}
    timeout = aiohttp.ClientTimeout(total=SIBLING_TIMEOUT)

    async def fetch(api: str) -> str | None:
        try:
            async with session.get(f"http://{api}/metrics?worker=only", headers=headers) as answer:
                return await answer.text() if answer.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError):
            return None

    async with aiohttp.ClientSession(timeout=timeout) as session:
        answers = await asyncio.gather(*(fetch(api) for api in siblings.values()))
    texts = {str(worker.index): own.decode()}
    texts.update({str(index): text for index, text in zip(siblings, answers) if text is not None})
    return merge(texts)
