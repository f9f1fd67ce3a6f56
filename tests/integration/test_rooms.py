"""Rooms on a loopback box: a page joins (a room token, no secret), says who it is over the room's
WebSocket and hears the roster; the room token works on the meeting app's Calls API for its own room's
sessions only. Two boxes of a cluster share rosters through the store."""
import asyncio
import json

import aiohttp
import pytest

from tests.lab.appliance import box_config, free_port

MEET = '\n[meet]\napp = "test-app"\n'


@pytest.fixture
def box(appliance):
    return appliance(box_config(free_port("tcp"), free_port("udp"), free_port("udp", "tcp"), MEET))


async def join(http: aiohttp.ClientSession, box, room: str) -> dict:
    async with http.post(box.url(f"/meet/{room}/join")) as answer:
        assert answer.status == 201, await answer.text()
        return await answer.json()


async def roster(ws, condition, rounds: int = 50) -> list:
    """The roster messages' participants until `condition` holds for one (bounded)."""
    for _ in range(rounds):
        message = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
        if message["type"] == "roster" and condition(message["participants"]):
            return message["participants"]
    raise AssertionError("the roster never came to the expected state")


async def test_pages_of_a_room_hear_each_other_join_update_and_leave(box):
    async with aiohttp.ClientSession() as http:
        alice, bob = await join(http, box, "standup"), await join(http, box, "standup")
        assert alice["participant"] != bob["participant"] and alice["appId"] == "test-app"
        assert any(s.get("username") for s in alice["iceServers"]), alice["iceServers"]
        async with http.ws_connect(box.url(f"/meet/standup/ws?token={alice['token']}")) as a:
            welcome = json.loads((await a.receive()).data)
            assert welcome == {"type": "welcome", "participant": alice["participant"], "room": "standup"}
            await a.send_json({"type": "update", "name": "Alice", "sessionId": "a" * 32,
                               "tracks": [{"trackName": "cam", "kind": "video", "source": "camera"}]})
            async with http.ws_connect(box.url(f"/meet/standup/ws?token={bob['token']}")) as b:
                await b.receive()  # welcome
                seen = await roster(b, lambda people: len(people) == 2)
                assert [p["name"] for p in seen] == ["Alice", ""]
                assert seen[0]["tracks"] == [{"trackName": "cam", "kind": "video", "source": "camera", "muted": False}]
                await b.send_json({"type": "update", "name": "Bob"})
                await roster(a, lambda people: [p["name"] for p in people] == ["Alice", "Bob"])
                await b.send_json({"type": "update", "tracks": [{"trackName": "x", "kind": "smell"}]})
                error = await roster_error(b)
                assert "kind" in error
            # Bob's page closed: Alice hears it at once.
            assert [p["name"] for p in await roster(a, lambda people: len(people) == 1)] == ["Alice"]
        # A token for another room, or none, opens no socket.
        async with http.get(box.url(f"/meet/other/ws?token={alice['token']}")) as refused:
            assert refused.status == 401
        async with http.get(box.url("/meet/standup/ws")) as refused:
            assert refused.status == 401


async def roster_error(ws) -> str:
    for _ in range(10):
        message = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
        if message["type"] == "error":
            return message["reason"]
    raise AssertionError("no error message")


async def test_a_room_token_reaches_its_rooms_sessions_only(box):
    async with aiohttp.ClientSession() as http:
        ours, theirs = await join(http, box, "ours"), await join(http, box, "theirs")
        base = box.url("/v1/apps/test-app")

        async def call(method, path, token, body=None):
            async with http.request(method, base + path, json=body, headers={"Authorization": f"Bearer {token}"}) as r:
                return r.status, await r.json()

        status, created = await call("POST", "/sessions/new", ours["token"])
        assert status == 201, created
        assert (await call("GET", f"/sessions/{created['sessionId']}", ours["token"]))[0] == 200
        assert (await call("GET", f"/sessions/{created['sessionId']}", theirs["token"]))[0] == 410
        # The app's own sessions are not a room's either.
        status, plain = await call("POST", "/sessions/new", "test-app-secret")
        assert (await call("GET", f"/sessions/{plain['sessionId']}", ours["token"]))[0] == 410
        # Another app's routes, WHIP and the stream tokens take no room token.
        assert (await call("POST", "/streams/x/tokens", ours["token"], {"kind": "play"}))[0] == 401
        async with http.post(box.url("/v1/apps/other-app/sessions/new"),
                             headers={"Authorization": f"Bearer {ours['token']}"}) as refused:
            assert refused.status == 401
        # A forged or altered token is refused.
        forged = ours["token"].replace("~ours~", "~theirs~")
        assert (await call("POST", "/sessions/new", forged))[0] == 401


async def test_a_box_without_a_meeting_app_has_no_meeting_page(appliance):
    box = appliance()
    async with aiohttp.ClientSession() as http:
        for method, path in (("GET", "/meet/room"), ("POST", "/meet/room/join"), ("GET", "/meet/room/ws")):
            async with http.request(method, box.url(path)) as answer:
                assert answer.status == 404, (method, path)
