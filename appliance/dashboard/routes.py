"""The operator's routes, behind `[api] admin_token`: the usage API (GET /v1/usage), the dashboard's
live snapshots (GET /dashboard/events, server-sent events), and the page itself (GET /dashboard: public,
it shows nothing until given the token). The usage sampler runs with the HTTP service."""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

from aiohttp import web

from ..api.auth import bearer
from ..api.errors import ApiError
from ..api.health import BOX
from ..logs import get_logger
from .cluster_usage import gather, merge
from .query import QueryError, parse
from .readings import read
from .snapshot import Snapshots
from .usage import Sampler

log = get_logger("dashboard")

PAGE = Path(__file__).resolve().parents[1] / "api" / "static" / "dashboard"
FILES = {"app.js": "text/javascript", "app.css": "text/css"}
SNAPSHOT_INTERVAL = 2.0
# Dashboards open at once: each costs a snapshot every SNAPSHOT_INTERVAL.
MAX_STREAMS = 16

SAMPLER = web.AppKey("usage_sampler", Sampler)
# One event per open dashboard stream: set, it ends the stream (the service is stopping).
STREAMS = web.AppKey("dashboard_streams", set)


def add_routes(app: web.Application) -> None:
    """The routes, the sampler (fed while the HTTP service runs) and the streams' ending at shutdown."""
    box = app[BOX]
    app[SAMPLER] = Sampler(box.config.turn.metrics_identifiers, time.time())
    app[STREAMS] = set()
    app.router.add_get("/dashboard", page)
    for name in FILES:
        app.router.add_get(f"/dashboard/{name}", asset)
    app.router.add_get("/dashboard/events", events)
    app.router.add_get("/v1/usage", usage)
    app.cleanup_ctx.append(_sampling)
    app.on_shutdown.append(_end_streams)


def admit(request: web.Request, token: bytes | None) -> None:
    """Pass a request that carries the admin token; 401 saying what is missing otherwise."""
    expected = request.app[BOX].config.api.admin_token
    challenge = {"WWW-Authenticate": 'Bearer realm="edgecall admin"'}
    if expected is None:
        raise ApiError(401, "unauthorized", "the dashboard and the usage API are off on this box: "
                                            "set [api] admin_token in its configuration", challenge)
    if token is None:
        raise ApiError(401, "unauthorized", "an Authorization: Bearer <[api] admin_token> header is required", challenge)
    if not hmac.compare_digest(token, expected.encode()):
        raise ApiError(401, "unauthorized", "the bearer token is not this box's [api] admin_token", challenge)


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGE / "index.html", headers={"Cache-Control": "no-cache"})


async def asset(request: web.Request) -> web.FileResponse:
    name = request.path.rsplit("/", 1)[1]
    return web.FileResponse(PAGE / name, headers={"Content-Type": FILES[name], "Cache-Control": "no-cache"})


async def usage(request: web.Request) -> web.Response:
    """Usage in buckets, per app, TURN issuer, customIdentifier or box; the last bucket ends now.

    ?since=&until= (Unix seconds; the last hour), step= (seconds, a multiple of 10; 60), by= (app, issuer,
    customIdentifier, box; app), and the dimension's own name to keep one key (by=app&app=demo) ->
    {"by", "since", "until", "step", "series": [{"<by>": key, "points": [{"t", "ingressBytes", "egressBytes",
    "sessions", "allocations"}]}]}: bytes in the bucket [t, t + step), the most sessions and allocations at once.
    SFU figures are media on the wire; TURN's, the application data relayed (ingress: from clients)."""
    admit(request, bearer(request))
    now = time.time()
    try:
        query = parse({name: request.query.getall(name) for name in request.query}, now)
    except QueryError as e:
        raise ApiError(400, "invalid_params", str(e)) from None
    sampler = request.app[SAMPLER]
    live = sampler.preview(read(request.app[BOX]), now)
    series = sampler.query(query.by, query.since, query.until, query.step, query.key, live)
    mine = [{query.by: key, "points": [point.json() for point in points]} for key, points in series.items()]
    answer: dict = {"by": query.by, "since": query.since, "until": query.until, "step": query.step, "scope": query.scope}
    others = _other_boxes(request) if query.scope == "cluster" else {}
    if others:
        # The same query of each box's own figures (buckets start at multiples of the step on every box).
        params = {**request.query, "scope": "box"}
        answered, missing = await gather(others, f"/v1/usage?{urlencode(params)}", request.headers["Authorization"])
        answer["series"] = merge(query.by, [mine, *answered])
        answer["missing"] = missing
    else:
        answer["series"] = mine
    return web.json_response(answer)


def _other_boxes(request: web.Request) -> dict[str, str]:
    """The other live boxes of the cluster: node id -> where their API answers."""
    cluster = request.app[BOX].service("cluster")
    membership = getattr(cluster, "membership", None)
    me = request.app[BOX].config.node.id
    return {} if membership is None else {node: r.api for node, r in membership.nodes.items() if node != me}


async def events(request: web.Request) -> web.StreamResponse:
    """A snapshot now and every SNAPSHOT_INTERVAL seconds. EventSource cannot send headers, so this
    route alone also takes the token as ?token=."""
    given = request.query.get("token")
    admit(request, bearer(request) or (given.encode() if given else None))
    streams = request.app[STREAMS]
    if len(streams) >= MAX_STREAMS:
        raise ApiError(503, "temporarily_unavailable_error", f"{MAX_STREAMS} dashboards are open on this box already")
    ended = asyncio.Event()
    streams.add(ended)
    try:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                               "X-Accel-Buffering": "no"})
        await response.prepare(request)
        box, snapshots, loop = request.app[BOX], Snapshots(), asyncio.get_running_loop()
        while not ended.is_set():
            snapshot = snapshots.build(box, loop.time(), time.time())
            await response.write(b"data: " + json.dumps(snapshot, separators=(",", ":")).encode() + b"\n\n")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(ended.wait(), SNAPSHOT_INTERVAL)
    except ConnectionError:  # the dashboard went away
        pass
    finally:
        streams.discard(ended)
    return response


async def _sampling(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_sample(app))
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _sample(app: web.Application) -> None:
    sampler, box = app[SAMPLER], app[BOX]
    while True:
        await asyncio.sleep(min(sampler.tick, max(0.0, sampler.get_timer() - time.time())))
        now, due = time.time(), sampler.get_timer()
        # Due, or the wall clock stepped back more than a tick (the sampler then starts afresh).
        if due - sampler.tick <= now < due:
            continue
        try:
            sampler.sample(read(box), now)
        except Exception:  # one failed reading must not end the figures for the service's lifetime
            log.exception("usage not sampled")


async def _end_streams(app: web.Application) -> None:
    for ended in app[STREAMS]:
        ended.set()
