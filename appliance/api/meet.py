"""The meeting page (/meet/{room}) and what it asks of the box: a room token (POST /meet/{room}/join,
no secret needed: anyone who can open the page may join, as with any meeting link) and the room's
WebSocket (GET /meet/{room}/ws?token=...), over which the page says who it is and what it publishes
and hears the roster of the room. Media goes through the Calls API of the [meet] app, which takes the
room token in place of the app's secret for sessions of that room (calls.py).

WebSocket messages: the page sends {"type": "update", "name", "sessionId", "tracks": [{"trackName",
"kind", "source", "muted"}]}; the box sends {"type": "welcome", "participant", "room"}, {"type":
"roster", "participants": [...]} whenever the room changes, and {"type": "error", "reason"} for an
update it refuses.
"""
from __future__ import annotations

import asyncio
import secrets
import time
from pathlib import Path

from aiohttp import WSMsgType, web

from ..rooms import tokens
from ..rooms.roster import Participant
from ..rooms.service import RoomService
from .auth import APPS, SECRETS
from .errors import ApiError
from .health import BOX
from .limits import LIMITS
from .names import path_name
from .turn_credentials import app_ice_servers

PAGE = Path(__file__).with_name("static") / "meet" / "index.html"
ROOM = web.RequestKey("room", str)  # set when a room token let a Calls request in: the room it acts for
# A WebSocket message larger than this is refused (an update is a few hundred bytes).
MAX_MESSAGE = 16 * 1024


def _meet_app(request: web.Request) -> str:
    app = request.app[BOX].config.meet.app
    if app is None:
        raise ApiError(404, "not_found", "this box serves no meeting page ([meet] app is not set)")
    return app


def _room(request: web.Request) -> str:
    return path_name(request, "room", "room")


def _rooms(request: web.Request) -> RoomService:
    service = request.app[BOX].service("rooms")
    if not isinstance(service, RoomService):
        raise ApiError(503, "temporarily_unavailable_error", "the room service is not running")
    return service


def room_access(request: web.Request, app: str, token: bytes | None) -> bool:
    """Whether a Calls request carries a room token of the meeting app (auth.Access); the room it
    acts for goes on the request, so that it reaches only that room's sessions."""
    if token is None or request.app[BOX].config.meet.app != app:
        return False
    checked = tokens.check(request.app[SECRETS][APPS][app], app, token, time.time())
    if checked is None:
        return False
    request[ROOM] = checked.room
    return True


async def page(request: web.Request) -> web.StreamResponse:
    _meet_app(request)
    _room(request)
    return web.FileResponse(PAGE, headers={"Cache-Control": "no-cache"})


async def join(request: web.Request) -> web.Response:
    app = _meet_app(request)
    room = _room(request)
    rooms = _rooms(request)
    request.app[LIMITS].request(app, time.monotonic())
    config = request.app[BOX].config.meet
    if rooms.count(app, room) >= config.max_participants:
        raise ApiError(429, "retryable_transient_error", f"room {room!r} is full ({config.max_participants} people, "
                                                         f"meet.max_participants)", {"Retry-After": "10"})
    participant = secrets.token_hex(8)
    expiry = int(time.time()) + config.token_ttl
    token = tokens.mint(request.app[SECRETS][APPS][app], app, room, participant, expiry)
    return web.json_response({"token": token, "participant": participant, "room": room, "appId": app,
                              "expires": expiry, "iceServers": app_ice_servers(request, app, f"meet:{app}:{room}")}, status=201)


async def socket(request: web.Request) -> web.StreamResponse:
    app = _meet_app(request)
    room = _room(request)
    rooms = _rooms(request)
    checked = tokens.check(request.app[SECRETS][APPS][app], app, request.query.get("token", ""), time.time())
    if checked is None or checked.room != room:
        raise ApiError(401, "unauthorized", f"expected a room token for {room!r} in ?token= (POST /meet/{room}/join)")
    ws = web.WebSocketResponse(heartbeat=10.0, max_msg_size=MAX_MESSAGE)
    await ws.prepare(request)
    participant = Participant(app, room, checked.participant, time.time())
    await ws.send_json({"type": "welcome", "participant": participant.id, "room": room})
    entered = rooms.enter(participant, ws)
    sender = asyncio.create_task(rooms.serve(entered))
    try:
        async for message in ws:
            if message.type != WSMsgType.TEXT:
                continue
            try:
                update = message.json()
                if not isinstance(update, dict) or update.get("type") != "update":
                    raise ValueError("expected {\"type\": \"update\", ...}")
                rooms.update(entered, update)
            except ValueError as e:
                await ws.send_json({"type": "error", "reason": str(e)})
    finally:
        rooms.leave(entered)
        sender.cancel()
    return ws


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/meet/{room}", page, allow_head=False)
    router.add_post("/meet/{room}/join", join)
    router.add_get("/meet/{room}/ws", socket, allow_head=False)
