"""WHIP ingest (RFC 9725): POST {base}/whip/{name} with the publisher's SDP offer publishes its audio
and video as ordinary Calls tracks ("audio", "video", then "video-2"...) of a new session, under the
stream name, which players (WHEP) and Calls sessions on any box of the cluster pull. The app's secret
or a publish token for the name (stream_tokens.py) is the bearer token, as OBS sends it.

Errors as RFC 9725 and HTTP have them: 400 for an offer that does not parse, 401 without a valid
token, 404 for an unknown app or resource, 409 while another live session publishes the name, 415 for
a body that is not SDP, 422 for an offer none of whose media the box can take.
"""
from __future__ import annotations

from aiohttp import web

from ..cluster.streams import StreamRecord
from ..sfu import sdp
from .auth import APP
from .calls import sfu_call, sfu_now, sfu_of
from .errors import ApiError
from .stream_tokens import access, stream_name, streams_of
from . import wish
from .wish import admitted, closing_on_error, created, label, sdp_body


def track_names(offer: sdp.RemoteDescription) -> list[dict]:
    """A push item for each m-section that sends audio or video: named by its kind, then numbered."""
    items, seen = [], {"audio": 0, "video": 0}
    for section in offer.sections:
        if section.kind in seen and section.direction in ("sendonly", "sendrecv") and not section.rejected:
            seen[section.kind] += 1
            count = seen[section.kind]
            name = section.kind if count == 1 else f"{section.kind}-{count}"
            items.append({"location": "local", "mid": section.mid, "trackName": name})
    return items


async def publish(request: web.Request) -> web.Response:
    sfu = sfu_of(request)
    cluster = streams_of(request)
    name = stream_name(request)
    offer = await sdp_body(request)
    if not offer:
        raise ApiError(400, "invalid_session_description", "a WHIP POST carries the publisher's SDP offer")
    try:
        items = track_names(sdp.parse(offer, "offer"))
    except sdp.SdpError as e:
        raise ApiError(400, e.code, str(e)) from None
    if not items:
        raise ApiError(422, "invalid_session_description", "the offer sends no audio or video")
    admitted(request, sfu)
    now = sfu_now()
    session = sfu.new_session(request[APP], now, label=label("whip", name))
    with closing_on_error(sfu, session):
        answer, results = sfu_call(sfu.push, session, offer, items, False, now)
        for result in results:
            if "errorCode" in result:
                raise ApiError(422, result["errorCode"], f"track {result['trackName']!r}: {result['errorDescription']}")
        record = StreamRecord(session.id, [result["trackName"] for result in results])
        if not await cluster.streams.claim(request[APP], name, record, cluster.session_live):
            raise ApiError(409, "invalid_params", f"another session publishes {name!r}: DELETE its resource, "
                                                  f"or publish under another name")
    return created(request, "whip", name, session, answer["sdp"])


def add_routes(router: web.UrlDispatcher) -> None:
    wish.add_routes(router, "whip", publish, access("publish"))
