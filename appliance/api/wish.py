"""What WHIP ingest (RFC 9725) and WHEP playback share: SDP bodies, the ICE servers a client is told of
in Link headers, and the resource a POST creates, with its PATCH (trickle ICE, ICE restart, and the
player's answer in WHEP's server-offer mode) and DELETE.

A resource is a Calls session labelled with what made it ("whip/<name>" or "whep/<name>"): its URL is
{endpoint}/{sessionId}, so a request for it reaches the box that holds the session as any Calls request
does (calls.at_owner), and acts only on a session of its own kind and name (a stream token for one name
cannot touch another's resource, nor a Calls session).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from aiohttp import web
from multidict import CIMultiDict

from ..rtc.ice import new_credentials
from ..sfu import sdpfrag
from ..sfu.sdp import SdpError
from ..sfu.session import CallSession
from ..sfu.sfu import Sfu
from .auth import APP, APPS, Access, Handler, guarded
from .body import read_body
from .calls import at_owner, counted, session_of, sfu_call, sfu_now
from .errors import ApiError
from .limits import LIMITS
from .stream_tokens import stream_name, streams_of
from .turn_credentials import app_ice_servers

SDP = "application/sdp"
TRICKLE = "application/trickle-ice-sdpfrag"
# Bodies that are an SDP whatever their label: the early WHEP player PATCHes its answer as fetch()'s
# default text/plain.
_SDP_ALIKE = ("text/plain", "application/octet-stream")


def label(kind: str, name: str) -> str:
    return f"{kind}/{name}"


async def sdp_body(request: web.Request) -> str:
    """The request's SDP ("" when it has none); 415 for a body of another type."""
    raw = await read_body(request)
    if not raw.strip():
        return ""
    if request.content_type != SDP:
        raise ApiError(415, "invalid_params", f"expected a body of type {SDP}, found {request.content_type}",
                       {"Accept-Post": SDP})
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "decoding_error", "the SDP is not UTF-8 text") from None


def ice_links(request: web.Request, kind: str, name: str) -> list[str]:
    """Link header values of the box's STUN and TURN servers (RFC 9725 4.6)."""
    links = []
    for server in app_ice_servers(request, request[APP], f"{request[APP]}:{kind}:{name}"):
        credentials = (f'; username="{server["username"]}"; credential="{server["credential"]}"; '
                       f'credential-type="password"' if "username" in server else "")
        links += [f'<{url}>; rel="ice-server"{credentials}' for url in server["urls"]]
    return links


def etag(session: CallSession) -> str:
    """The resource's entity tag: its ICE session (RFC 9725 4.3.1), which a restart changes."""
    return f'"{session.ufrag}"'


def created(request: web.Request, kind: str, name: str, session: CallSession, sdp: str) -> web.Response:
    """201 with the answer (or the box's offer), the resource's URL, and the ICE servers."""
    base = request.path.rsplit("/", 2)[0]
    headers = CIMultiDict({"Location": f"{base}/{kind}/{name}/{session.id}", "ETag": etag(session),
                           "Accept-Patch": TRICKLE})
    for link in ice_links(request, kind, name):
        headers.add("Link", link)
    return web.Response(status=201, text=sdp, content_type=SDP, headers=headers)


def resource(request: web.Request, kind: str) -> tuple[Sfu, CallSession]:
    """The session behind a resource URL; 404 when there is none of this kind and name."""
    name = stream_name(request)
    try:
        sfu, session = session_of(request)
    except ApiError as e:
        if e.status != 410:
            raise
        session = None
    if session is None or session.label != label(kind, name):
        raise ApiError(404, "not_found", f"no {kind.upper()} resource {request.match_info['sessionId']!r} "
                                         f"for {name!r} (ended, or never made)")
    return sfu, session


def _restart(sfu: Sfu, session: CallSession, fragment: sdpfrag.Fragment) -> web.Response:
    if not fragment.ufrag or not fragment.pwd:
        raise ApiError(400, "invalid_params", "an ICE restart (If-Match: *) carries the client's new a=ice-ufrag "
                                              "and a=ice-pwd")
    ufrag, pwd = new_credentials()
    sfu_call(sfu.restart_ice, session, fragment.ufrag, ufrag, pwd)
    first = next(t.section for t in session.transceivers if not t.section.rejected)
    body = sdpfrag.restart_answer(ufrag, pwd, first.mid, first.kind, sfu.host_candidates())
    return web.Response(status=200, text=body, content_type=TRICKLE, headers={"ETag": etag(session)})


def _trickle(sfu: Sfu, session: CallSession, request: web.Request, text: str) -> web.Response:
    try:
        fragment = sdpfrag.parse(text)
    except SdpError as e:
        raise ApiError(400, "decoding_error", f"the trickle ICE fragment: {e}") from None
    match = request.headers.get("If-Match")
    if match == "*":
        return _restart(sfu, session, fragment)
    if match is not None and match != etag(session):
        raise ApiError(412, "invalid_params", f"If-Match {match} is not the resource's ICE session "
                                              f"{etag(session)}: it was restarted since")
    remote = session.remote
    if fragment.ufrag is not None and (remote is None or fragment.ufrag != remote.ufrag):
        raise ApiError(422, "invalid_params", f"the fragment's a=ice-ufrag {fragment.ufrag!r} is not the ICE "
                                              f"session's; restarting ICE takes If-Match: *")
    # The box is ICE-lite: a client's candidates need nothing of it (its checks bring them).
    return web.Response(status=204)


def patch(kind: str):
    """PATCH of a resource: a trickle ICE fragment or an ICE restart (RFC 9725 4.3); for a WHEP
    resource made by an empty POST, also the player's answer to the box's offer."""
    async def handler(request: web.Request) -> web.Response:
        sfu, session = resource(request, kind)
        raw = await read_body(request)
        text = raw.decode("utf-8", "replace")
        if request.content_type == TRICKLE:
            return _trickle(sfu, session, request, text)
        answer = request.content_type == SDP or (request.content_type in _SDP_ALIKE and text.startswith("v=0"))
        if kind == "whep" and answer:
            sfu_call(sfu.renegotiate, session, text, sfu_now())
            return web.Response(status=204)
        accepted = TRICKLE if kind == "whip" else f"{TRICKLE}, {SDP}"
        raise ApiError(415, "invalid_params", f"a {kind.upper()} resource takes a PATCH of {accepted}, "
                                              f"found {request.content_type}", {"Accept-Patch": accepted})
    return handler


def delete(kind: str):
    """DELETE of a resource: the session ends (and a WHIP stream's name is free again)."""
    async def handler(request: web.Request) -> web.Response:
        sfu, session = resource(request, kind)
        sfu.close_session(session)
        if kind == "whip":
            await streams_of(request).streams.release(request[APP], stream_name(request), session.id)
        return web.Response(status=200)
    return handler


def admitted(request: web.Request, sfu: Sfu) -> None:
    """A new session of the request's app may open (its limits; 429 otherwise)."""
    app = request[APP]
    request.app[LIMITS].new_session(app, sfu.live[app], time.monotonic())


@contextlib.contextmanager
def closing_on_error(sfu: Sfu, session: CallSession) -> Iterator[None]:
    """An error inside closes the half-made session before it propagates."""
    try:
        yield
    except BaseException:
        sfu.close_session(session)
        raise


def add_routes(router: web.UrlDispatcher, kind: str, post: Handler, access: Access) -> None:
    """The endpoint ({base}/{kind}/{name}: `post` makes a resource) and its resources' PATCH and
    DELETE, which go to the box that holds the session; under /v1/apps and /apps."""
    for base in ("/v1/apps/{appId}", "/apps/{appId}"):
        router.add_post(f"{base}/{kind}/{{name}}", guarded(APPS, counted(post), access))
        resource = f"{base}/{kind}/{{name}}/{{sessionId}}"
        router.add_patch(resource, guarded(APPS, counted(at_owner(patch(kind))), access))
        router.add_delete(resource, guarded(APPS, counted(at_owner(delete(kind))), access))
