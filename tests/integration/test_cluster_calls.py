"""One call across boxes, with real parts on loopback: appliance processes clustered through a real
nats-server (JetStream), aiortc clients with real ICE, DTLS and SRTP, media between boxes on SRTP
trunks. A publisher's session is on box A, a subscriber's on box B: B pulls the track over a trunk
and its subscriber decodes it; each box's API answers for the other's sessions."""
from __future__ import annotations

import asyncio
import json
import tomllib

import aiohttp

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from prometheus_client.parser import text_string_to_metric_families

from tests.lab.appliance import box_config, free_port, healthz
from tests.lab.calls_api import AsyncApi as Api
from tests.lab.calls_api import connected, publish, subscribe
from tests.lab.nats import nats_servers
from tests.lab.wish import http, resource_url, whep_play, whip_publish

__all__ = ["nats_servers"]  # the fixture, used below by name

SECRET = "a cluster secret for the loopback lab"


ADMIN = "cluster-admin-token"


def clustered(node: str, nats_url: str, workers: int = 1) -> str:
    api = free_port("tcp")
    text = box_config(api, free_port("udp"), free_port("udp", "tcp"),
                      f'\n[cluster]\nnats = ["{nats_url}"]\nsecret = "{SECRET}"\n\n[meet]\napp = "test-app"\n', workers)
    text = text.replace(f'listen = "127.0.0.1:{api}"', f'listen = "127.0.0.1:{api}"\nadmin_token = "{ADMIN}"')
    return text.replace('id = "test-box"', f'id = "{node}"', 1)


@pytest.fixture
def boxes(nats_servers, appliance, tmp_path):  # NATS stops last
    nats = nats_servers(1)
    a = appliance(clustered("box-a", nats.urls[0]).replace("edgecall-test-state", str(tmp_path / "a")))
    b = appliance(clustered("box-b", nats.urls[0]).replace("edgecall-test-state", str(tmp_path / "b")))
    return a, b


def metric(box, name: str, **labels: str) -> float:
    families = {f.name: f for f in text_string_to_metric_families(box.get("/metrics")[1].decode())}
    samples = families[name].samples if name in families else []
    return sum(s.value for s in samples if all(s.labels.get(k) == v for k, v in labels.items()))


async def test_a_subscriber_on_one_box_receives_a_track_published_on_another(boxes):
    box_a, box_b = boxes
    api_a, api_b = Api(box_a), Api(box_b)
    publisher, subscriber = RTCPeerConnection(), RTCPeerConnection()
    try:
        pub_id = await publish(api_a, publisher, {"a": AudioStreamTrack(), "v": VideoStreamTrack()})
        await connected(publisher)

        # Box B's API answers for A's session exactly as A does (the request went to A).
        assert await api_b("GET", f"/sessions/{pub_id}") == await api_a("GET", f"/sessions/{pub_id}")

        received = {}
        subscriber.on("track", lambda track: received.setdefault(track.kind, track))
        _, created = await api_b("POST", "/sessions/new")
        sub_id = created["sessionId"]
        status, pulled = await api_b("POST", f"/sessions/{sub_id}/tracks/new", {"tracks": [
            {"location": "remote", "sessionId": pub_id, "trackName": "a"},
            {"location": "remote", "sessionId": pub_id, "trackName": "v"}]})
        assert status == 200 and all("errorCode" not in t for t in pulled["tracks"]), pulled
        await subscriber.setRemoteDescription(RTCSessionDescription(**pulled["sessionDescription"]))
        await subscriber.setLocalDescription(await subscriber.createAnswer())
        status, _ = await api_a("PUT", f"/sessions/{sub_id}/renegotiate",  # through A: forwarded to B
                                {"sessionDescription": {"type": "answer", "sdp": subscriber.localDescription.sdp}})
        assert status == 200
        await connected(subscriber)
        frames = {kind: await asyncio.wait_for(track.recv(), 10) for kind, track in received.items()}
        assert set(frames) == {"audio", "video"}
        status, state = await api_b("GET", f"/sessions/{sub_id}")
        assert [(t["trackName"], t["status"]) for t in state["tracks"]] == [("a", "active"), ("v", "active")]
        # Both boxes see each other; B's /healthz shows what it receives and from where.
        cluster = healthz(box_b)["details"]["cluster"]
        assert cluster["nodes"] == ["box-a", "box-b"] and cluster["store_connected"]
        assert sorted((t["track"], t["from"]) for t in cluster["trunks"]["receiving"]) == [("a", "box-a"), ("v", "box-a")]
        # The media crossed on a trunk from A to B: A forwarded to no subscriber of its own.
        assert metric(box_a, "edgecall_sfu_legs") == 0
        assert metric(box_a, "edgecall_cluster_trunk_packets_out") > 0
        assert metric(box_b, "edgecall_cluster_trunk_packets_in") > 0

        # The publisher leaves: the subscriber's pulls end on B too.
        status, _ = await api_b("PUT", f"/sessions/{pub_id}/tracks/close",
                                {"tracks": [{"mid": "0"}, {"mid": "1"}], "force": True})
        assert status == 200
        for _ in range(100):
            status, state = await api_b("GET", f"/sessions/{sub_id}")
            if [t["status"] for t in state["tracks"]] == ["inactive", "inactive"]:
                break
            await asyncio.sleep(0.05)
        assert [t["status"] for t in state["tracks"]] == ["inactive", "inactive"]
    finally:
        await publisher.close()
        await subscriber.close()


async def test_a_session_whose_box_is_gone_is_410_on_every_box(boxes):
    box_a, box_b = boxes
    api_a, api_b = Api(box_a), Api(box_b)
    _, created = await api_a("POST", "/sessions/new")
    session_id = created["sessionId"]
    assert (await api_b("GET", f"/sessions/{session_id}"))[0] == 200
    box_a.stop()
    for _ in range(200):  # until B hears that A is gone (its heartbeats stop)
        status, answer = await api_b("GET", f"/sessions/{session_id}")
        if status == 410:
            break
        await asyncio.sleep(0.05)
    assert status == 410 and answer["errorCode"] == "session_error"


def media_port(box) -> int:
    return int(tomllib.loads(box.config_path.read_text())["sfu"]["udp"].rpartition(":")[2])


def to_port_of(box_a, box_b):
    """An SDP edit: the candidates of box A's media port point at box B's, as when the router
    hashes a client's media flow to another box than its API requests."""
    return lambda sdp: sdp.replace(f" {media_port(box_a)} typ host", f" {media_port(box_b)} typ host")


async def test_media_that_reaches_another_box_than_the_api_connects_there(boxes):
    """As anycast does when a router hashes the API's flow to one box and the media's to another:
    the answer comes from A, the client's checks go to B's port; B takes the session over."""
    box_a, box_b = boxes
    api_a = Api(box_a)
    publisher, subscriber = RTCPeerConnection(), RTCPeerConnection()
    try:
        pub_id = await publish(api_a, publisher, {"v": VideoStreamTrack()}, to_port_of(box_a, box_b))
        await connected(publisher)
        assert metric(box_b, "edgecall_cluster_handover", event="taken") == 1
        assert metric(box_a, "edgecall_cluster_handover", event="given") == 1
        # The session is B's now, and A's API still answers for it.
        assert metric(box_b, "edgecall_sfu_sessions") == 1 and metric(box_a, "edgecall_sfu_sessions") == 0
        assert (await api_a("GET", f"/sessions/{pub_id}"))[0] == 200

        received = []
        subscriber.on("track", received.append)
        _, created = await api_a("POST", "/sessions/new")
        sub_id = created["sessionId"]
        status, pulled = await api_a("POST", f"/sessions/{sub_id}/tracks/new", {"tracks": [
            {"location": "remote", "sessionId": pub_id, "trackName": "v"}]})
        assert status == 200 and "errorCode" not in pulled["tracks"][0], pulled
        await subscriber.setRemoteDescription(RTCSessionDescription(**pulled["sessionDescription"]))
        await subscriber.setLocalDescription(await subscriber.createAnswer())
        status, _ = await api_a("PUT", f"/sessions/{sub_id}/renegotiate",
                                {"sessionDescription": {"type": "answer", "sdp": subscriber.localDescription.sdp}})
        assert status == 200
        await connected(subscriber)
        frame = await asyncio.wait_for(received[0].recv(), 10)
        assert frame.width > 0
    finally:
        await publisher.close()
        await subscriber.close()


async def test_a_pull_whose_media_goes_to_another_box_is_answered_throughout_the_takeover(boxes):
    """The SFU offers (a pull); the client's checks start as soon as it sets its answer and reach B,
    which takes the session while the client's requests still go to A: every one of them is
    answered for the session as it is, never 410."""
    box_a, box_b = boxes
    api_a = Api(box_a)
    publisher, subscriber = RTCPeerConnection(), RTCPeerConnection()
    try:
        pub_id = await publish(api_a, publisher, {"v": VideoStreamTrack()})
        await connected(publisher)

        received = []
        subscriber.on("track", received.append)
        _, created = await api_a("POST", "/sessions/new")
        sub_id = created["sessionId"]
        _, pulled = await api_a("POST", f"/sessions/{sub_id}/tracks/new", {"tracks": [
            {"location": "remote", "sessionId": pub_id, "trackName": "v"}]})
        offer = to_port_of(box_a, box_b)(pulled["sessionDescription"]["sdp"])
        await subscriber.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await subscriber.setLocalDescription(await subscriber.createAnswer())
        statuses = [(await api_a("GET", f"/sessions/{sub_id}"))[0] for _ in range(60)]
        status, _ = await api_a("PUT", f"/sessions/{sub_id}/renegotiate",
                                {"sessionDescription": {"type": "answer", "sdp": subscriber.localDescription.sdp}})
        assert set(statuses) == {200} and status == 200, statuses
        await connected(subscriber)
        assert metric(box_b, "edgecall_cluster_handover", event="taken") == 1
        frame = await asyncio.wait_for(received[0].recv(), 10)
        assert frame.width > 0
    finally:
        await publisher.close()
        await subscriber.close()


async def test_a_whip_stream_published_through_one_box_plays_on_another(boxes):
    """WHIP's POST reaches A, the publisher's media B (B takes the session over); a WHEP player on A
    finds the name in the store and plays through a trunk from B; the resource's PATCH and DELETE
    sent to A reach B."""
    box_a, box_b = boxes
    publisher, published = await whip_publish(box_a, "across", edit=to_port_of(box_a, box_b))
    players = []
    try:
        assert published.status == 201, published
        await connected(publisher)
        assert metric(box_b, "edgecall_cluster_handover", event="taken") == 1
        for box in (box_a, box_b):
            for client_offer in (True, False):
                player, tracks, played = await whep_play(box, "across", client_offer=client_offer)
                players.append(player)
                assert played.status == 201, played
                await connected(player)
                for _ in range(100):
                    if len(tracks) == 2:
                        break
                    await asyncio.sleep(0.05)
                assert {kind for kind, track in tracks.items() if await asyncio.wait_for(track.recv(), 10)} == {
                    "audio", "video"}
        # A second publisher under the name is refused on either box while B's session lives.
        second, conflict = await whip_publish(box_b, "across")
        players.append(second)
        assert conflict.status == 409
        restarted = await http("PATCH", resource_url(box_a, published),
                               "a=ice-ufrag:newU\r\na=ice-pwd:0123456789abcdefghijklmn\r\n",
                               content_type="application/trickle-ice-sdpfrag", headers={"If-Match": "*"})
        assert restarted.status == 200 and restarted.headers["ETag"] != published.headers["ETag"], restarted
        assert (await http("DELETE", resource_url(box_a, published))).status == 200
        assert metric(box_b, "edgecall_sfu_sessions") == 2  # its two players: the publisher's session ended
        late, refused = (await whep_play(box_a, "across"))[::2]
        players.append(late)
        assert refused.status == 404
    finally:
        await publisher.close()
        for player in players:
            await player.close()


async def test_a_rooms_pages_on_two_boxes_hear_each_other(boxes):
    """Each box holds its own pages' WebSockets; the roster crosses through the store, and a page
    that leaves one box is gone from the other's roster."""
    box_a, box_b = boxes
    async with aiohttp.ClientSession() as http:
        pages = []
        for box, name in ((box_a, "Ann"), (box_b, "Ben")):
            async with http.post(box.url("/meet/across/join")) as answer:
                joined = await answer.json()
            ws = await http.ws_connect(box.url(f"/meet/across/ws?token={joined['token']}"))
            await ws.send_json({"type": "update", "name": name})
            pages.append(ws)

        async def names(ws, expected):
            for _ in range(50):
                message = json.loads((await asyncio.wait_for(ws.receive(), 10)).data)
                if message["type"] == "roster" and sorted(p["name"] for p in message["participants"]) == expected:
                    return
            raise AssertionError(f"the roster never showed {expected}")

        await names(pages[0], ["Ann", "Ben"])
        await names(pages[1], ["Ann", "Ben"])
        await pages[1].close()
        await names(pages[0], ["Ann"])
        await pages[0].close()


async def test_usage_asked_of_one_box_covers_the_cluster(boxes):
    """A publisher on A and a subscriber on B: the usage API of either box has both boxes' figures
    (scope=box, the box's own)."""
    box_a, box_b = boxes
    api_a, api_b = Api(box_a), Api(box_b)
    publisher, subscriber = RTCPeerConnection(), RTCPeerConnection()
    try:
        pub_id = await publish(api_a, publisher, {"v": VideoStreamTrack()})
        await connected(publisher)
        received = []
        subscriber.on("track", received.append)
        await subscribe(api_b, subscriber, [{"sessionId": pub_id, "trackName": "v"}])
        await connected(subscriber)
        await asyncio.wait_for(received[0].recv(), 10)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as http:
            async def usage(box, query):
                async with http.get(box.url(f"/v1/usage?{query}")) as answer:
                    assert answer.status == 200, await answer.text()
                    return await answer.json()

            for box in (box_a, box_b):
                by_box = await usage(box, "by=box&step=60")
                assert by_box["missing"] == [] and {line["box"] for line in by_box["series"]} == {"box-a", "box-b"}
                sessions = {line["box"]: max(p["sessions"] for p in line["points"]) for line in by_box["series"]}
                assert sessions == {"box-a": 1, "box-b": 1}, sessions
                by_app = await usage(box, "by=app&app=test-app&step=60")
                assert [line["app"] for line in by_app["series"]] == ["test-app"]
                assert max(p["sessions"] for p in by_app["series"][0]["points"]) == 2  # one session on each box
            own = await usage(box_a, "by=box&scope=box")
            assert [line["box"] for line in own["series"]] == ["box-a"] and "missing" not in own
    finally:
        await publisher.close()
        await subscriber.close()
