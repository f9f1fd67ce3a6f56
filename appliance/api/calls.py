"""The Calls-compatible SFU API (CALLS_API.md section 1), under /v1/apps/{appId}/ and /apps/{appId}/.

Every route is guarded (auth.py): a handler runs only for the app its route names, with that app's token.
Batches answer 200 with per-item errors; whole-request failures carry errorCode and errorDescription.
"""
from __future__ import annotations

import asyncio
import functools
import time
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from aiohttp import web

from ..sfu.datachannels import SERVER_EVENTS
from ..sfu.errors import SfuError
from .auth import APP, APPS, guarded
from .body import read_body, read_json
from .errors import ApiError
from .forwarding import Forwarder
from .health import BOX
from .limits import LIMITS
from .meet import ROOM, room_access

if TYPE_CHECKING:
    from ..cluster.nodes import NodeRecord
    from ..sfu.sfu import Sfu

# CALLS_API.md 4: at most 64 tracks per API call.
MAX_TRACKS = 64


@runtime_checkable
class SfuHost(Protocol):
    """What this API asks of the SFU service (sfu/service.py's SfuService): the SFU it hosts."""

    sfu: Sfu


@runtime_checkable
class ClusterHost(Protocol):
    """What this API asks of the cluster service (cluster/service.py's ClusterService)."""

    async def owner_of(self, session_id: str) -> NodeRecord | None: ...

    async def settled(self) -> None: ...

    async def find_tracks(self, items: list) -> None: ...

    async def arriving(self, session_id: str) -> None: ...


# The cluster's request forwarder (forwarding.py), when the box has a cluster part.
FORWARDER = web.AppKey("forwarder", Forwarder)


def cluster_of(request: web.Request) -> ClusterHost | None:
    service = request.app[BOX].service("cluster")
    return service if isinstance(service, ClusterHost) else None


def sfu_of(request: web.Request) -> Sfu:
    service = request.app[BOX].service("sfu")
    if not isinstance(service, SfuHost):
        raise ApiError(503, "temporarily_unavailable_error", "the SFU is not enabled on this box")
    return service.sfu


def session_of(request: web.Request):
    sfu = sfu_of(request)
    try:
        session = sfu.session(request[APP], request.match_info["sessionId"])
    except SfuError as e:
        raise ApiError(e.status, e.code, e.description) from None
    if ROOM in request and session.label != room_label(request[ROOM]):
        # A room token reaches its room's sessions only; any other is reported as missing.
        raise ApiError(410, "session_error", f"session {session.id!r} does not exist, has expired or was closed")
    return sfu, session


def room_label(room: str) -> str:
    return f"room/{room}"


def _description(body: dict, required_type: str | None = None):
    description = body.get("sessionDescription")
    if description is None:
        return None
    if not isinstance(description, dict) or not isinstance(description.get("sdp"), str):
        raise ApiError(400, "decoding_error", "sessionDescription: expected {\"type\", \"sdp\"}")
    if required_type and description.get("type") != required_type:
        raise ApiError(400, "invalid_session_description",
                       f"sessionDescription.type: expected {required_type!r}, found {description.get('type')!r}")
    return description


def _items(body: dict, key: str) -> list:
    items = body.get(key, [])
    if not isinstance(items, list):
        raise ApiError(400, "decoding_error", f"{key}: expected an array")
    if len(items) > MAX_TRACKS:
        raise ApiError(400, "invalid_params", f"{key}: at most {MAX_TRACKS} per call")
    return items


def _negotiated(response: dict, description: dict | None) -> web.Response:
    """A response that carries the SFU's offer or answer when there is one."""
    if description is not None:
        response["sessionDescription"] = description
    return web.json_response(response)


# CALLS_API.md 4: an operation that needs a connected PeerConnection waits this long for it, then 425.
CONNECT_WAIT = 5.0


async def _ready(session) -> None:
    """Renegotiating a session whose first negotiation has not connected yet waits for the connection
    (up to CONNECT_WAIT), so changes never race the handshake; then 425 session_error."""
    if session.remote is None or session.connected_at is not None:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CONNECT_WAIT
    while session.connected_at is None and not session.closed and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if session.connected_at is None:
        raise ApiError(425, "session_error", f"the session's PeerConnection has not connected within "
                                             f"{CONNECT_WAIT:g} s; retry once it is connected")


def sfu_now() -> float:
    """The SFU's clock: the event loop's, as the media port's."""
    return asyncio.get_running_loop().time()


def sfu_call(operation, *args):
    try:
        return operation(*args)
    except SfuError as e:
        raise ApiError(e.status, e.code, e.description) from None


async def new_session(request: web.Request) -> web.Response:
    body = await read_json(request)
    sfu = sfu_of(request)
    now = sfu_now()
    # CALLS_API.md 1.1: a session relaying to a third-party WebRTC endpoint, where the SFU is
    # the full ICE agent.
    thirdparty = request.query.get("thirdparty", "").lower() in ("true", "1")
    request.app[LIMITS].new_session(request[APP], sfu.live[request[APP]], time.monotonic())
    session = sfu.new_session(request[APP], now, thirdparty, label=room_label(request[ROOM]) if ROOM in request else "")
    answer = {"sessionId": session.id}
    offer = _description(body, "offer")
    if offer is not None:
        try:
            description, _ = sfu_call(sfu.push, session, offer["sdp"], [], False, now)
        except ApiError:
            sfu.close_session(session)
            raise
        answer["sessionDescription"] = description
    return web.json_response(answer, status=201)


async def new_tracks(request: web.Request) -> web.Response:
    body = await read_json(request)
    sfu, session = session_of(request)
    items = _items(body, "tracks")
    description = _description(body)
    await _ready(session)
    local = [t for t in items if isinstance(t, dict) and t.get("location") == "local"]
    remote = [t for t in items if not (isinstance(t, dict) and t.get("location") == "local")]
    await find_remote(request, remote)
    now = sfu_now()
    if description is not None:
        if description.get("type") != "offer":
            raise ApiError(400, "invalid_session_description", "tracks/new takes an offer; answers go to renegotiate")
        if remote and local:
            raise ApiError(400, "invalid_params", "one call with an offer pushes local tracks or pulls remote ones, "
                                                  "not both")
        if remote:
            answer, results = sfu_call(sfu.pull_with_offer, session, description["sdp"], remote, now)
            return web.json_response({"requiresImmediateRenegotiation": False, "tracks": results,
                                      "sessionDescription": answer})
        answer, results = sfu_call(sfu.push, session, description["sdp"], local, bool(body.get("autoDiscover")), now)
        return web.json_response({"requiresImmediateRenegotiation": False, "tracks": results,
                                  "sessionDescription": answer})
    if local and remote:
        raise ApiError(400, "invalid_params", "one call without an offer pushes local tracks or pulls remote ones, "
                                              "not both")
    if not items:
        raise ApiError(400, "invalid_params", "tracks: expected at least one track")
    operation = sfu.offer_push if local else sfu.pull
    offer, results = sfu_call(operation, session, local or remote, now)
    return _negotiated({"requiresImmediateRenegotiation": offer is not None, "tracks": results}, offer)


async def renegotiate(request: web.Request) -> web.Response:
    body = await read_json(request)
    sfu, session = session_of(request)
    description = _description(body, "answer")
    if description is None:
        raise ApiError(400, "invalid_session_description", "sessionDescription: expected the client's answer")
    sfu_call(sfu.renegotiate, session, description["sdp"], sfu_now())
    return web.json_response({})


async def close_tracks(request: web.Request) -> web.Response:
    body = await read_json(request)
    sfu, session = session_of(request)
    items = _items(body, "tracks")
    if not items:
        raise ApiError(400, "invalid_params", "tracks: expected at least one {\"mid\"}")
    force = bool(body.get("force", False))
    description = _description(body, "offer")
    if not force and description is None:
        raise ApiError(400, "invalid_session_description", "a close without force needs the client's offer")
    if not force:
        await _ready(session)
    mids = [item.get("mid") if isinstance(item, dict) else None for item in items]
    answer, results = sfu_call(sfu.close_tracks, session, mids, None if description is None else description["sdp"],
                            force, sfu_now())
    return _negotiated({"requiresImmediateRenegotiation": False, "tracks": results}, answer)


async def update_tracks(request: web.Request) -> web.Response:
    body = await read_json(request)
    sfu, session = session_of(request)
    items = _items(body, "tracks")
    if not items:
        raise ApiError(400, "invalid_params", "tracks: expected at least one track")
    await find_remote(request, items)
    results = sfu_call(sfu.update, session, items, sfu_now())
    return web.json_response({"requiresImmediateRenegotiation": False, "tracks": results})


async def get_session(request: web.Request) -> web.Response:
    sfu, session = session_of(request)
    return web.json_response(sfu.describe_session(session))


async def establish_datachannel(request: web.Request) -> web.Response:
    body = await read_json(request)
    sfu, session = session_of(request)
    channel = body.get("dataChannel")
    if not isinstance(channel, dict):
        channel = {}
    if (channel.get("location"), channel.get("dataChannelName")) != ("remote", SERVER_EVENTS):
        raise ApiError(400, "invalid_params", f"dataChannel: only {{\"location\": \"remote\", "
                                              f"\"dataChannelName\": \"{SERVER_EVENTS}\"}} can be established")
    offer = _description(body, "offer")
    await _ready(session)
    description, established = sfu_call(sfu.establish, session, None if offer is None else offer["sdp"], sfu_now())
    return _negotiated({"requiresImmediateRenegotiation": description is not None and description["type"] == "offer",
                        "dataChannel": established}, description)


def _datachannels(operation: str):
    """The handler of `datachannels/new`, `close` or `update`: a batch in, per-item results out."""
    async def handler(request: web.Request) -> web.Response:
        body = await read_json(request)
        sfu, session = session_of(request)
        items = _items(body, "dataChannels")
        if operation == "new":
            await _ready(session)
            results = sfu_call(sfu.channels.new, session, items, sfu_now())
        else:
            results = sfu_call(getattr(sfu.channels, operation), session, items)
        return web.json_response({"dataChannels": results})
    return handler


async def find_remote(request: web.Request, items: list) -> None:
    """Tracks published on other boxes a moment ago are found too (the cluster reads the store)."""
    cluster = cluster_of(request)
    if cluster is not None and items:
        await cluster.find_tracks(items)


def at_owner(handler):
    """`handler` for a session of this box; a session another box holds is served by that box
    (forwarding.py). What the handler changed is in the cluster store before the client hears of it."""
    @functools.wraps(handler)
    async def routed(request: web.Request) -> web.StreamResponse:
        cluster = cluster_of(request)
        session_id = request.match_info.get("sessionId")
        forwarder = request.app.get(FORWARDER)
        if cluster is not None and forwarder is not None and session_id is not None:
            sessions = sfu_of(request).sessions
            if session_id not in sessions:
                # It may be on its way here (a takeover this box asked for): wait for it, bounded.
                await cluster.arriving(session_id)
            if session_id not in sessions:
                owner = await cluster.owner_of(session_id)
                if owner is not None and forwarder.may_forward(request, owner.id):
                    return await forwarder.forward(request, owner.api, await read_body(request))
        response = await handler(request)
        if cluster is not None:
            await cluster.settled()
        return response
    return routed



def add_routes(router: web.UrlDispatcher) -> None:
    routes = [
        ("POST", "sessions/new", new_session),
        ("POST", "sessions/{sessionId}/tracks/new", new_tracks),
        ("PUT", "sessions/{sessionId}/renegotiate", renegotiate),
        ("PUT", "sessions/{sessionId}/tracks/close", close_tracks),
        ("PUT", "sessions/{sessionId}/tracks/update", update_tracks),
        ("GET", "sessions/{sessionId}", get_session),
        ("POST", "sessions/{sessionId}/datachannels/establish", establish_datachannel),
        ("POST", "sessions/{sessionId}/datachannels/new", _datachannels("new")),
        ("PUT", "sessions/{sessionId}/datachannels/close", _datachannels("close")),
        ("PUT", "sessions/{sessionId}/datachannels/update", _datachannels("update")),
    ]
    # Cloudflare's own clients also call /apps/... without /v1 (CALLS_API.md 1.1).
    for base in ("/v1/apps/{appId}", "/apps/{appId}"):
        for method, path, handler in routes:
            # The meeting page's room tokens stand in for the meeting app's secret (meet.py).
            router.add_route(method, f"{base}/{path}", guarded(APPS, counted(at_owner(handler)), room_access))


def counted(handler):
    """`handler`, after the request is counted against its app's requests_per_second."""
    @functools.wraps(handler)
    async def counted(request: web.Request) -> web.StreamResponse:
        forwarder = request.app.get(FORWARDER)
        if forwarder is None or not forwarder.forwarded(request):  # counted once, where it arrived
            request.app[LIMITS].request(request[APP], time.monotonic())
        return await handler(request)
    return counted
