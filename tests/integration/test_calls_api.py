"""The Calls-compatible SFU API over a real box: status codes, error codes, and the push/pull flow
driven by aiortc (a second WebRTC stack beside Chromium)."""
import asyncio
import json
import re

import pytest
from prometheus_client.parser import text_string_to_metric_families
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from appliance.api.body import MAX_BODY_BYTES
from appliance.sfu import sdp
from tests.lab.appliance import request
from tests.lab.calls_api import Api, connected
from tests.unit.sfu import test_offer_limits as limits


@pytest.fixture
def api(appliance):
    box = appliance()
    return Api(box), box


def test_session_status_and_error_codes(api):
    api, box = api
    status, created = api("POST", "/sessions/new")
    assert status == 201 and re.fullmatch(r"[0-9a-f]{32}", created["sessionId"])
    sid = created["sessionId"]
    assert api("GET", f"/sessions/{sid}") == (200, {"tracks": [], "dataChannels": []})
    status, error = api("GET", "/sessions/0123456789abcdef0123456789abcdef")
    assert status == 410 and error["errorCode"] == "session_error"
    other = Api(box, "other-app", "other-app-secret")
    assert other("GET", f"/sessions/{sid}")[0] == 410  # another app never reaches this session
    status, result = api("POST", f"/sessions/{sid}/tracks/new",
                         {"tracks": [{"location": "remote", "sessionId": "nope", "trackName": "cam"}]})
    assert status == 200 and result["requiresImmediateRenegotiation"] is False
    (item,) = result["tracks"]
    assert item["mid"] == "" and item["errorCode"] == "not_found_track_error"
    status, error = api("PUT", f"/sessions/{sid}/renegotiate", {"sessionDescription": {"type": "answer", "sdp": "v=0"}})
    assert status == 400 and error["errorCode"] == "invalid_session_description"
    status, error = api("POST", f"/sessions/{sid}/tracks/new",
                        {"sessionDescription": {"type": "offer", "sdp": "v=0\r\nnonsense"}, "tracks": []})
    assert status == 400 and error["errorCode"] == "invalid_session_description"
    status, error = api("POST", f"/sessions/{sid}/tracks/new", {"tracks": "all"})
    assert status == 400 and error["errorCode"] == "decoding_error"
    status, error = api("PUT", f"/sessions/{sid}/tracks/close", {"tracks": [{"mid": "5"}], "force": True})
    assert status == 200 and error["tracks"][0]["errorCode"] == "close_track_error"


async def test_aiortc_pushes_and_pulls_through_the_sfu(api):
    api, box = api
    loop = asyncio.get_running_loop()
    call = lambda *args: loop.run_in_executor(None, api, *args)  # noqa: E731  (urllib blocks)

    publisher = RTCPeerConnection()
    subscriber = RTCPeerConnection()
    try:
        _, created = await call("POST", "/sessions/new")
        pub_id = created["sessionId"]
        audio = publisher.addTransceiver(AudioStreamTrack(), direction="sendonly")
        video = publisher.addTransceiver(VideoStreamTrack(), direction="sendonly")
        await publisher.setLocalDescription(await publisher.createOffer())
        status, pushed = await call("POST", f"/sessions/{pub_id}/tracks/new", {
            "sessionDescription": {"type": "offer", "sdp": publisher.localDescription.sdp},
            "tracks": [{"location": "local", "mid": audio.mid, "trackName": "a"},
                       {"location": "local", "mid": video.mid, "trackName": "v"}],
        })
        assert status == 200, pushed
        await publisher.setRemoteDescription(RTCSessionDescription(**pushed["sessionDescription"]))
        await connected(publisher)

        received = {}
        subscriber.on("track", lambda track: received.setdefault(track.kind, track))
        _, created = await call("POST", "/sessions/new")
        sub_id = created["sessionId"]
        status, pulled = await call("POST", f"/sessions/{sub_id}/tracks/new", {"tracks": [
            {"location": "remote", "sessionId": pub_id, "trackName": "a"},
            {"location": "remote", "sessionId": pub_id, "trackName": "v"}]})
        assert status == 200 and pulled["requiresImmediateRenegotiation"]
        status, error = await call("POST", f"/sessions/{sub_id}/tracks/new",
                                   {"tracks": [{"location": "remote", "sessionId": pub_id, "trackName": "a"}]})
        assert status == 406  # the SFU's offer is still waiting for its answer
        await subscriber.setRemoteDescription(RTCSessionDescription(**pulled["sessionDescription"]))
        await subscriber.setLocalDescription(await subscriber.createAnswer())
        status, _ = await call("PUT", f"/sessions/{sub_id}/renegotiate",
                               {"sessionDescription": {"type": "answer", "sdp": subscriber.localDescription.sdp}})
        assert status == 200
        await connected(subscriber)
        frames = {kind: await asyncio.wait_for(track.recv(), 10) for kind, track in received.items()}
        assert set(frames) == {"audio", "video"}
        status, state = await call("GET", f"/sessions/{sub_id}")
        assert [(t["location"], t["trackName"], t["status"]) for t in state["tracks"]] == [
            ("remote", "a", "active"), ("remote", "v", "active")]
        metrics = {f.name: f for f in text_string_to_metric_families(box.get("/metrics")[1].decode())}
        assert metrics["edgecall_sfu_forwarded_packets"].samples[0].value > 0
        assert metrics["edgecall_sfu_legs"].samples[0].value == 2
    finally:
        await publisher.close()
        await subscriber.close()


async def test_push_without_an_offer_then_pull_with_a_client_offer(api):
    """The third-party flow's push (the SFU offers, `kind` given) and a WHEP player's pull (the client offers)."""
    api, _ = api
    loop = asyncio.get_running_loop()
    call = lambda *args: loop.run_in_executor(None, api, *args)  # noqa: E731

    publisher, player = RTCPeerConnection(), RTCPeerConnection()
    try:
        _, created = await call("POST", "/sessions/new")
        pub_id = created["sessionId"]
        status, offered = await call("POST", f"/sessions/{pub_id}/tracks/new",
                                     {"tracks": [{"location": "local", "trackName": "gen", "kind": "audio"}]})
        assert status == 200 and offered["requiresImmediateRenegotiation"]
        assert offered["tracks"] == [{"trackName": "gen", "mid": "0"}]
        status, state = await call("GET", f"/sessions/{pub_id}")  # named, not yet published
        assert status == 200 and state["tracks"] == [
            {"location": "local", "mid": "0", "trackName": "gen", "status": "inactive"}]
        await publisher.setRemoteDescription(RTCSessionDescription(**offered["sessionDescription"]))
        (transceiver,) = publisher.getTransceivers()
        transceiver.direction = "sendonly"
        transceiver.sender.replaceTrack(AudioStreamTrack())
        await publisher.setLocalDescription(await publisher.createAnswer())
        status, _ = await call("PUT", f"/sessions/{pub_id}/renegotiate",
                               {"sessionDescription": {"type": "answer", "sdp": publisher.localDescription.sdp}})
        assert status == 200
        await connected(publisher)

        received = []
        player.on("track", received.append)
        player.addTransceiver("audio", direction="recvonly")
        await player.setLocalDescription(await player.createOffer())
        _, created = await call("POST", "/sessions/new")
        status, answered = await call("POST", f"/sessions/{created['sessionId']}/tracks/new", {
            "sessionDescription": {"type": "offer", "sdp": player.localDescription.sdp},
            "tracks": [{"location": "remote", "sessionId": pub_id, "trackName": "gen"}]})
        assert status == 200 and answered["requiresImmediateRenegotiation"] is False
        assert answered["tracks"] == [{"sessionId": pub_id, "trackName": "gen", "mid": "0"}]
        await player.setRemoteDescription(RTCSessionDescription(**answered["sessionDescription"]))
        await connected(player)
        frame = await asyncio.wait_for(received[0].recv(), 10)
        assert frame.sample_rate == 48000
    finally:
        await publisher.close()
        await player.close()


async def test_bidirectional_stream_carries_a_pulled_track_back(api):
    """The third-party relay's shape: a local track pushed without an offer with bidirectionalMediaStream,
    then a pull with mid "#<that track>" that comes back on the same m-section."""
    api, _ = api
    loop = asyncio.get_running_loop()
    call = lambda *args: loop.run_in_executor(None, api, *args)  # noqa: E731

    source, relay = RTCPeerConnection(), RTCPeerConnection()
    try:
        _, created = await call("POST", "/sessions/new")
        source_id = created["sessionId"]
        source.addTransceiver(AudioStreamTrack(), direction="sendonly")
        await source.setLocalDescription(await source.createOffer())
        _, pushed = await call("POST", f"/sessions/{source_id}/tracks/new", {
            "sessionDescription": {"type": "offer", "sdp": source.localDescription.sdp},
            "tracks": [{"location": "local", "mid": "0", "trackName": "voice"}]})
        await source.setRemoteDescription(RTCSessionDescription(**pushed["sessionDescription"]))

        _, created = await call("POST", "/sessions/new")
        relay_id = created["sessionId"]
        _, offered = await call("POST", f"/sessions/{relay_id}/tracks/new", {"tracks": [
            {"location": "local", "trackName": "mic-1", "kind": "audio", "bidirectionalMediaStream": True}]})
        assert "a=sendrecv" in offered["sessionDescription"]["sdp"]
        received = []
        relay.on("track", received.append)
        await relay.setRemoteDescription(RTCSessionDescription(**offered["sessionDescription"]))
        (transceiver,) = relay.getTransceivers()
        transceiver.direction = "sendrecv"
        transceiver.sender.replaceTrack(AudioStreamTrack())
        await relay.setLocalDescription(await relay.createAnswer())
        await call("PUT", f"/sessions/{relay_id}/renegotiate",
                   {"sessionDescription": {"type": "answer", "sdp": relay.localDescription.sdp}})
        status, back = await call("POST", f"/sessions/{relay_id}/tracks/new", {"tracks": [
            {"location": "remote", "mid": "#mic-1", "sessionId": source_id, "trackName": "voice", "kind": "audio"}]})
        assert status == 200 and back["tracks"] == [{"sessionId": source_id, "trackName": "voice", "mid": "0"}]
        await relay.setRemoteDescription(RTCSessionDescription(**back["sessionDescription"]))
        await relay.setLocalDescription(await relay.createAnswer())
        await call("PUT", f"/sessions/{relay_id}/renegotiate",
                   {"sessionDescription": {"type": "answer", "sdp": relay.localDescription.sdp}})
        await connected(relay)
        frame = await asyncio.wait_for(received[0].recv(), 10)
        assert frame.sample_rate == 48000
        _, state = await call("GET", f"/sessions/{relay_id}")
        assert state["tracks"][0]["trackName"] == "mic-1"
    finally:
        await source.close()
        await relay.close()


def test_the_media_port_on_ipv4_and_ipv6(appliance):
    """`[sfu] udp` with two addresses: both answer STUN, and the SFU's SDP offers both candidates."""
    import socket

    from appliance.stun import Attr as StunAttr, Class, Message, Method
    from tests.lab.appliance import box_config, free_port, has_ipv6_loopback

    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    media = free_port("udp")
    box = appliance(box_config(free_port("tcp"), media, free_port("udp", "tcp")).replace(
        f'udp = "127.0.0.1:{media}"', f'udp = ["127.0.0.1:{media}", "[::1]:{media}"]'))
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            request = Message(Method.BINDING, Class.REQUEST)
            sock.sendto(request.encode(), (host, media))
            answer = Message.parse(sock.recv(2048))
            assert answer.transaction_id == request.transaction_id and StunAttr.XOR_MAPPED_ADDRESS in answer
    api = Api(box)
    _, created = api("POST", "/sessions/new")
    _, offered = api("POST", f"/sessions/{created['sessionId']}/tracks/new",
                     {"tracks": [{"location": "local", "trackName": "t", "kind": "audio"}]})
    sdp = offered["sessionDescription"]["sdp"]
    assert f"127.0.0.1 {media} typ host" in sdp and f"::1 {media} typ host" in sdp


def test_a_renegotiation_waits_for_the_first_connection_then_425(api):
    """CALLS_API.md 4: an operation on a negotiated session waits up to 5 s for it to connect."""
    api, _ = api
    _, created = api("POST", "/sessions/new")
    sid = created["sessionId"]
    # A client offer is applied, but the client never connects (nobody answers ICE on this address).
    offer = ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
             "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n"
             "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\na=mid:0\r\na=sendonly\r\n"
             "a=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\na=ssrc:1 cname:x\r\n")
    status, pushed = api("POST", f"/sessions/{sid}/tracks/new", {
        "sessionDescription": {"type": "offer", "sdp": offer}, "tracks": [{"location": "local", "mid": "0", "trackName": "a"}]})
    assert status == 200, pushed
    status, error = api("POST", f"/sessions/{sid}/tracks/new",
                        {"tracks": [{"location": "remote", "sessionId": sid, "trackName": "a"}]})
    assert status == 425 and error["errorCode"] == "session_error"


def test_an_offer_past_the_limits_gets_400_naming_it_and_the_largest_is_accepted(api):
    """Issue 12: one offer of 28,000 tiny m-sections held the box for a minute."""
    api, box = api
    sid = api("POST", "/sessions/new")[1]["sessionId"]
    attack = limits.offer(limits.tiny(10_000))
    status, error = api("POST", f"/sessions/{sid}/tracks/new",
                        {"sessionDescription": {"type": "offer", "sdp": attack}, "tracks": [], "autoDiscover": True})
    assert status == 400 and error["errorCode"] == "invalid_params", error
    assert f"at most {sdp.MAX_SECTIONS} (MAX_SECTIONS)" in error["errorDescription"]
    status, error = api("POST", "/sessions/new", {"sessionDescription": {"type": "offer", "sdp": attack}})
    assert status == 400 and error["errorCode"] == "invalid_params"

    sections = [limits.audio(str(n), ssrc=1000 + n) for n in range(sdp.MAX_SECTIONS)]
    largest = limits.padded(sections, sdp.MAX_SDP_BYTES)
    status, error = api("POST", f"/sessions/{sid}/tracks/new",
                        {"sessionDescription": {"type": "offer", "sdp": largest + "a=x\r\n"}, "tracks": []})
    assert status == 400 and error["errorCode"] == "payload_too_large"
    assert f"at most {sdp.MAX_SDP_BYTES} bytes" in error["errorDescription"]
    status, raw = request("POST", api.base + f"/sessions/{sid}/tracks/new", b" " * (MAX_BODY_BYTES + 1), api.headers)
    error = json.loads(raw)
    assert status == 413 and error["errorCode"] == "payload_too_large" and str(MAX_BODY_BYTES) in error["errorDescription"]

    status, pushed = api("POST", f"/sessions/{sid}/tracks/new",
                         {"sessionDescription": {"type": "offer", "sdp": largest}, "tracks": [], "autoDiscover": True})
    assert status == 200 and len(pushed["tracks"]) == sdp.MAX_SECTIONS
    assert not any("errorCode" in t for t in pushed["tracks"])
