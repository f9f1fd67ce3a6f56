"""WHEP playback: POST {base}/whep/{name} plays what is published under the name (whip.py), on any box
of the cluster, in both modes players use:

- the player offers (the WHEP draft since -01, and RFC 9725's shape): 201 with the box's answer;
- the POST is empty (draft-ietf-wish-whep-00, which Cloudflare's example player speaks): 201 with the
  box's offer, and the player PATCHes its answer to the resource.

Video layers: `?layer=<rid>` pins a simulcast layer; without it the box follows the player's
bandwidth, as for Calls pulls. The bearer token is the app's secret or a play token for the name;
none when the app plays in public ([[apps]] public_playback).
"""
from __future__ import annotations

from aiohttp import web

from .auth import APP
from .calls import find_remote, sfu_call, sfu_now, sfu_of
from .errors import ApiError
from .stream_tokens import access, stream_name, streams_of
from . import wish
from .wish import admitted, closing_on_error, created, label, sdp_body


async def play(request: web.Request) -> web.Response:
    sfu = sfu_of(request)
    cluster = streams_of(request)
    name = stream_name(request)
    offer = await sdp_body(request)
    record = await cluster.streams.find(request[APP], name)
    if record is None or not await cluster.session_live(record.session):
        raise ApiError(404, "not_found", f"nothing is published under {name!r} now")
    layer = request.query.get("layer")
    items: list[dict] = [{"location": "remote", "sessionId": record.session, "trackName": track}
                         for track in record.tracks]
    if layer:
        for item in items:
            item["simulcast"] = {"preferredRid": layer}
    await find_remote(request, items)
    admitted(request, sfu)
    now = sfu_now()
    session = sfu.new_session(request[APP], now, label=label("whep", name))
    with closing_on_error(sfu, session):
        if offer:
            description, results = sfu_call(sfu.pull_with_offer, session, offer, items, now)
        else:
            description, results = sfu_call(sfu.pull, session, items, now)
        if description is None or all("errorCode" in result for result in results):
            failure = results[0] if results else {"errorCode": "not_found", "errorDescription": "no tracks"}
            status = 404 if failure["errorCode"] == "not_found_track_error" else 422
            raise ApiError(status, failure["errorCode"], f"nothing of {name!r} can be played: "
                                                         f"{failure['errorDescription']}")
    return created(request, "whep", name, session, description["sdp"])


def add_routes(router: web.UrlDispatcher) -> None:
    wish.add_routes(router, "whep", play, access("play"))
