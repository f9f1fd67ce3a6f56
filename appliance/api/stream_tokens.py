"""Per-stream tokens: an app mints a token for one stream name, to publish it (WHIP) or to play it
(WHEP), so a broadcaster's encoder or a viewer's page never holds the app's secret (RFC 9725 6
leaves the token's form to the service).

A token is checked on any box with nothing but the app's secret, which every box of a cluster has
from its configuration: `ecs1.<kind>.<expiry>.<mac>`, the MAC over the app, the name, the kind and
the expiry under a key derived from the secret. Changing the app's secret revokes them all.

Routes (the app's secret only): POST {base}/streams/{name}/tokens mints one; GET {base}/streams/{name}
says which session and tracks publish the name, so a Calls session can pull them.
"""
from __future__ import annotations

import time
from typing import Protocol, runtime_checkable

from aiohttp import web

from ..cluster.streams import StreamDirectory
from ..plumbing import signed
from .auth import APP, APPS, SECRETS, Access, guarded
from .body import read_json
from .errors import ApiError
from .health import BOX
from .names import path_name

PREFIX = "ecs1"
PURPOSE = b"edgecall stream tokens"
KINDS = ("publish", "play")
DEFAULT_TTL = 86400
MAX_TTL = 30 * 86400


@runtime_checkable
class Streams(Protocol):
    """What the WHIP and WHEP routes ask of the cluster service: its directory of stream names."""

    streams: StreamDirectory

    async def session_live(self, session_id: str) -> bool: ...


def mint(secret: bytes, app: str, name: str, kind: str, expiry: int) -> str:
    return f"{PREFIX}.{kind}.{expiry}.{signed.mac(secret, PURPOSE, app, name, kind, str(expiry))}"


def valid(secret: bytes, app: str, name: str, kind: str, token: bytes, wall: float) -> bool:
    """Whether `token` lets its bearer `kind` the stream `name` of `app` at `wall`."""
    try:
        prefix, token_kind, expiry, mac = token.decode("ascii").split(".")
    except (UnicodeDecodeError, ValueError):
        return False
    if prefix != PREFIX or token_kind != kind or signed.in_force(expiry, wall) is None:
        return False
    return signed.verified(mac, secret, PURPOSE, app, name, kind, expiry)


def stream_name(request: web.Request) -> str:
    return path_name(request, "name", "stream name")


def access(kind: str) -> Access:
    """Who may `kind` a stream besides the app's secret: a token for that stream, and anyone when
    the app plays in public."""
    def allows(request: web.Request, app: str, token: bytes | None) -> bool:
        if kind == "play" and any(a.id == app and a.public_playback for a in request.app[BOX].config.apps):
            return True
        secret = request.app[SECRETS][APPS][app]
        return token is not None and valid(secret, app, request.match_info["name"], kind, token, time.time())
    return allows


async def new_token(request: web.Request) -> web.Response:
    name = stream_name(request)
    body = await read_json(request)
    kind = body.get("kind")
    if kind not in KINDS:
        raise ApiError(400, "invalid_params", f"kind: expected \"publish\" or \"play\", found {kind!r}")
    ttl = body.get("ttl", DEFAULT_TTL)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl <= MAX_TTL:
        raise ApiError(400, "invalid_params", f"ttl: expected seconds from 1 to {MAX_TTL}, found {ttl!r}")
    app = request[APP]
    expiry = int(time.time()) + ttl
    token = mint(request.app[SECRETS][APPS][app], app, name, kind, expiry)
    return web.json_response({"token": token, "kind": kind, "name": name, "expires": expiry}, status=201)


def streams_of(request: web.Request) -> Streams:
    service = request.app[BOX].service("cluster")
    if not isinstance(service, Streams):
        raise ApiError(503, "temporarily_unavailable_error", "streams need the cluster service, which is not running")
    return service


async def describe_stream(request: web.Request) -> web.Response:
    name = stream_name(request)
    cluster = streams_of(request)
    record = await cluster.streams.find(request[APP], name)
    if record is None or not await cluster.session_live(record.session):
        raise ApiError(404, "not_found", f"nothing is published under {name!r}")
    return web.json_response({"name": name, "sessionId": record.session, "tracks": [
        {"location": "remote", "sessionId": record.session, "trackName": track} for track in record.tracks]})


def add_routes(router: web.UrlDispatcher) -> None:
    for base in ("/v1/apps/{appId}", "/apps/{appId}"):
        router.add_post(f"{base}/streams/{{name}}/tokens", guarded(APPS, new_token))
        router.add_get(f"{base}/streams/{{name}}", guarded(APPS, describe_stream), allow_head=False)
