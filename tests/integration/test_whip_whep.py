"""WHIP ingest and WHEP playback on a loopback box, with aiortc as the publisher and the players."""
import asyncio

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from appliance.sfu import sdpfrag
from tests.lab.appliance import box_config, free_port
from tests.lab.calls_api import AsyncApi, connected
from tests.lab.wish import http, resource_url, whep_play, whip_publish

PUBLIC = """
[[apps]]
id = "public-app"
secret = "public-app-secret"
public_playback = true
"""


@pytest.fixture
def box(appliance):
    return appliance(box_config(free_port("tcp"), free_port("udp"), free_port("udp", "tcp"), PUBLIC))


async def frames(tracks: dict) -> set:
    """The kinds of which a frame arrives (each within 10 s)."""
    for _ in range(200):
        if len(tracks) == 2:
            break
        await asyncio.sleep(0.05)
    return {kind for kind, track in tracks.items() if await asyncio.wait_for(track.recv(), 10)}


async def test_a_whip_publisher_is_played_by_whep_players_of_both_modes_and_pulled_by_calls(box):
    publisher, published = await whip_publish(box, "launch")
    players = []
    try:
        assert published.status == 201, published
        assert published.headers["Content-Type"].startswith("application/sdp")
        location = published.headers["Location"]
        session_id = location.rsplit("/", 1)[1]
        assert location == f"/v1/apps/test-app/whip/launch/{session_id}"
        assert published.headers["ETag"].startswith('"')
        links = published.links
        assert any(link.startswith("<stun:127.0.0.1:") for link in links), links
        turn = [link for link in links if link.startswith("<turn:")]
        assert turn and all('username="' in link and 'credential="' in link for link in turn), links
        assert ":test-app:whip:launch" in turn[0]  # the credential's customIdentifier says what it is for
        await connected(publisher)

        for client_offer in (True, False):
            player, tracks, played = await whep_play(box, "launch", client_offer=client_offer)
            players.append(player)
            assert played.status == 201, played
            assert played.headers["Location"].startswith("/v1/apps/test-app/whep/launch/")
            await connected(player)
            assert await frames(tracks) == {"audio", "video"}, client_offer

        # The stream is an ordinary Calls track: a Calls session pulls it by the names the box gave.
        api = AsyncApi(box)
        status, stream = await api("GET", "/streams/launch")
        assert status == 200 and stream["sessionId"] == session_id, stream
        assert [t["trackName"] for t in stream["tracks"]] == ["audio", "video"]
        calls = RTCPeerConnection()
        players.append(calls)
        tracks = {}
        calls.on("track", lambda track: tracks.setdefault(track.kind, track))
        _, created = await api("POST", "/sessions/new")
        status, pulled = await api("POST", f"/sessions/{created['sessionId']}/tracks/new", {"tracks": stream["tracks"]})
        assert status == 200, pulled
        await calls.setRemoteDescription(RTCSessionDescription(**pulled["sessionDescription"]))
        await calls.setLocalDescription(await calls.createAnswer())
        status, _ = await api("PUT", f"/sessions/{created['sessionId']}/renegotiate",
                              {"sessionDescription": {"type": "answer", "sdp": calls.localDescription.sdp}})
        assert status == 200
        assert await frames(tracks) == {"audio", "video"}

        # DELETE ends the publisher's session and frees the name.
        assert (await http("DELETE", resource_url(box, published))).status == 200
        assert (await whep_play(box, "launch"))[2].status == 404
        again, republished = await whip_publish(box, "launch")
        players.append(again)
        assert republished.status == 201, republished
    finally:
        for pc in (publisher, *players):
            await pc.close()


async def test_rfc_9725_errors(box):
    endpoint = box.url("/v1/apps/test-app/whip/errors")
    publisher, published = await whip_publish(box, "errors")
    others = []
    try:
        assert published.status == 201
        assert (await http("POST", endpoint, "v=0\r\n", token=None)).status == 401
        assert (await http("POST", endpoint, "v=0\r\n", token="wrong")).status == 401
        assert (await http("POST", box.url("/v1/apps/no-app/whip/errors"), "v=0\r\n")).status == 404
        assert (await http("POST", endpoint, "not an sdp")).status == 400
        assert (await http("POST", endpoint, "")).status == 400
        unsupported = await http("POST", endpoint, "v=0\r\n", content_type="application/json")
        assert unsupported.status == 415 and unsupported.headers["Accept-Post"] == "application/sdp"
        wrong_method = await http("GET", endpoint)
        assert wrong_method.status == 405 and "POST" in wrong_method.headers["Allow"]
        assert (await http("PUT", resource_url(box, published))).status == 405
        # The name is taken while its publisher lives.
        second, conflict = await whip_publish(box, "errors")
        others.append(second)
        assert conflict.status == 409, conflict
        # An offer that sends nothing.
        receiver = RTCPeerConnection()
        others.append(receiver)
        receiver.addTransceiver("video", direction="recvonly")
        await receiver.setLocalDescription(await receiver.createOffer())
        assert (await http("POST", box.url("/v1/apps/test-app/whip/other"), receiver.localDescription.sdp)).status == 422

        resource = resource_url(box, published)
        trickle = "application/trickle-ice-sdpfrag"
        assert (await http("PATCH", resource.rsplit("/", 1)[0] + "/0123", "a=end-of-candidates\r\n",
                           content_type=trickle)).status == 404
        # A resource answers only under its own name (a token for another name cannot reach it).
        assert (await http("DELETE", resource.replace("/errors/", "/other/"))).status == 404
        await connected(publisher)
        assert (await http("PATCH", resource, "a=end-of-candidates\r\n", content_type=trickle,
                           headers={"If-Match": published.headers["ETag"]})).status == 204
        assert (await http("PATCH", resource, "a=end-of-candidates\r\n", content_type=trickle,
                           headers={"If-Match": '"stale"'})).status == 412
        wrong_ice = "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwxyz\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n"
        assert (await http("PATCH", resource, wrong_ice, content_type=trickle)).status == 422
        assert (await http("PATCH", resource, "a=bogus\r\n", content_type=trickle)).status == 400
        assert (await http("PATCH", resource, "v=0\r\n", content_type="application/sdp")).status == 415
        assert (await http("POST", box.url("/v1/apps/test-app/whep/nothing-here"), "")).status == 404
    finally:
        for pc in (publisher, *others):
            await pc.close()


async def test_an_ice_restart_by_patch_gives_new_credentials(box):
    publisher, published = await whip_publish(box, "restart")
    try:
        await connected(publisher)
        resource = resource_url(box, published)
        fragment = "a=ice-ufrag:newU\r\na=ice-pwd:0123456789abcdefghijklmn\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
        restarted = await http("PATCH", resource, fragment, content_type="application/trickle-ice-sdpfrag",
                               headers={"If-Match": "*"})
        assert restarted.status == 200, restarted
        answer = sdpfrag.parse(restarted.body)
        assert answer.ufrag and answer.pwd and answer.candidates and answer.end_of_candidates
        assert f'"{answer.ufrag}"' == restarted.headers["ETag"] != published.headers["ETag"]
        # The old ICE session's tag no longer matches; the new one does.
        trickle = "application/trickle-ice-sdpfrag"
        assert (await http("PATCH", resource, "a=end-of-candidates\r\n", content_type=trickle,
                           headers={"If-Match": published.headers["ETag"]})).status == 412
        assert (await http("PATCH", resource, "a=end-of-candidates\r\n", content_type=trickle,
                           headers={"If-Match": restarted.headers["ETag"]})).status == 204
    finally:
        await publisher.close()


async def test_stream_tokens_publish_and_play_only_their_stream(box):
    api = AsyncApi(box)
    status, publish = await api("POST", "/streams/tokened/tokens", {"kind": "publish", "ttl": 600})
    assert status == 201 and publish["kind"] == "publish", publish
    status, play = await api("POST", "/streams/tokened/tokens", {"kind": "play"})
    assert status == 201
    assert (await api("POST", "/streams/tokened/tokens", {"kind": "admin"}))[0] == 400
    publisher, published = await whip_publish(box, "tokened", token=publish["token"])
    pcs = [publisher]
    try:
        assert published.status == 201, published
        elsewhere = await whip_publish(box, "another", token=publish["token"])
        pcs.append(elsewhere[0])
        assert elsewhere[1].status == 401
        wrong_kind = await whep_play(box, "tokened", token=publish["token"])
        pcs.append(wrong_kind[0])
        assert wrong_kind[2].status == 401
        await connected(publisher)
        player, tracks, played = await whep_play(box, "tokened", token=play["token"])
        pcs.append(player)
        assert played.status == 201, played
        assert await frames(tracks) == {"audio", "video"}
        # The resource's own requests take the same token.
        assert (await http("DELETE", resource_url(box, played), token=play["token"])).status == 200
    finally:
        for pc in pcs:
            await pc.close()


async def test_a_public_app_plays_without_a_token(box):
    publisher, published = await whip_publish(box, "open", token="public-app-secret", app="public-app")
    pcs = [publisher]
    try:
        assert published.status == 201
        await connected(publisher)
        player, tracks, played = await whep_play(box, "open", token=None, app="public-app")
        pcs.append(player)
        assert played.status == 201, played
        assert await frames(tracks) == {"audio", "video"}
        refused = await whip_publish(box, "open-too", token=None, app="public-app")
        pcs.append(refused[0])
        assert refused[1].status == 401  # publishing still takes a token
    finally:
        for pc in pcs:
            await pc.close()
