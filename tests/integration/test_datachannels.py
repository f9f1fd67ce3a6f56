"""Data channels through a real box with aiortc as the client (a WebRTC stack beside Chromium):
the old flow (an offer with only a data channel in sessions/new, then datachannels/new local) for
the publisher, and datachannels/establish without an offer for the subscriber."""
import asyncio

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from tests.lab.calls_api import Api, connected


@pytest.fixture
def api(appliance):
    return Api(appliance())


async def _until(condition, timeout=10.0):
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition never held")


async def test_a_published_message_reaches_a_subscriber(api):
    loop = asyncio.get_running_loop()
    call = lambda *args: loop.run_in_executor(None, api, *args)  # noqa: E731  (urllib blocks)
    publisher, subscriber = RTCPeerConnection(), RTCPeerConnection()
    try:
        # Publisher: an in-band channel only to get an m=application into the offer.
        publisher.createDataChannel("bootstrap")
        await publisher.setLocalDescription(await publisher.createOffer())
        status, created = await call("POST", "/sessions/new", {
            "sessionDescription": {"type": "offer", "sdp": publisher.localDescription.sdp}})
        assert status == 201, created
        pub_id = created["sessionId"]
        assert "m=application" in created["sessionDescription"]["sdp"]
        await publisher.setRemoteDescription(RTCSessionDescription(**created["sessionDescription"]))
        await connected(publisher)
        status, result = await call("POST", f"/sessions/{pub_id}/datachannels/new",
                                    {"dataChannels": [{"location": "local", "dataChannelName": "chat"}]})
        assert status == 200
        (local,) = result["dataChannels"]
        # The SFU is the DTLS server here: its ids are odd, clear of aiortc's in-band even ones.
        assert local == {"dataChannelName": "chat", "location": "local", "id": 1}
        sending = publisher.createDataChannel("chat", negotiated=True, id=local["id"])

        # Subscriber: the SFU offers the m=application (establish without an offer).
        _, created = await call("POST", "/sessions/new")
        sub_id = created["sessionId"]
        status, established = await call("POST", f"/sessions/{sub_id}/datachannels/establish",
                                         {"dataChannel": {"location": "remote", "dataChannelName": "server-events"}})
        assert status == 200 and established["requiresImmediateRenegotiation"] is True
        assert established["dataChannel"] == {"dataChannelName": "server-events", "id": 0}
        status, error = await call("POST", f"/sessions/{sub_id}/datachannels/establish",
                                   {"dataChannel": {"location": "remote", "dataChannelName": "server-events"}})
        assert status == 400 and error["errorCode"] == "decoding_error"
        await subscriber.setRemoteDescription(RTCSessionDescription(**established["sessionDescription"]))
        await subscriber.setLocalDescription(await subscriber.createAnswer())
        status, _ = await call("PUT", f"/sessions/{sub_id}/renegotiate",
                               {"sessionDescription": {"type": "answer", "sdp": subscriber.localDescription.sdp}})
        assert status == 200
        await connected(subscriber)
        status, result = await call("POST", f"/sessions/{sub_id}/datachannels/new", {"dataChannels": [
            {"location": "remote", "sessionId": pub_id, "dataChannelName": "chat"},
            {"location": "remote", "sessionId": pub_id, "dataChannelName": "nope"}]})
        assert status == 200
        remote, missing = result["dataChannels"]
        assert remote == {"dataChannelName": "chat", "location": "remote", "sessionId": pub_id, "id": 1}
        assert missing["errorCode"] == "not_found_track_error" and "id" not in missing
        receiving = subscriber.createDataChannel("chat", negotiated=True, id=remote["id"])
        received = []
        receiving.on("message", received.append)
        await _until(lambda: sending.readyState == receiving.readyState == "open")
        status, state = await call("GET", f"/sessions/{sub_id}")
        assert state["dataChannels"] == [
            {"location": "remote", "dataChannelName": "server-events", "id": 0, "status": "active"},
            {"location": "remote", "dataChannelName": "chat", "id": 1, "status": "active", "sessionId": pub_id}]

        # Text and binary, in order; a large message is reassembled across many SCTP packets.
        big = bytes(range(256)) * 256
        for message in ("hello", b"\x00\x01binary", "", big, "last"):
            sending.send(message)
        await _until(lambda: len(received) == 5)
        assert received == ["hello", b"\x00\x01binary", "", big, "last"]

        # datachannels/update grants canReply: the subscriber's messages reach the publisher.
        replies = []
        sending.on("message", replies.append)
        status, result = await call("PUT", f"/sessions/{sub_id}/datachannels/update",
                                    {"dataChannels": [{"id": remote["id"], "canReply": True}]})
        assert status == 200 and result["dataChannels"] == [
            {"id": 1, "dataChannelName": "chat", "location": "remote", "sessionId": pub_id, "canReply": True}]
        receiving.send("reply")
        await _until(lambda: replies)
        assert replies == ["reply"]

        # waitForAck: nothing reaches the channel until the subscriber's first message, which is consumed.
        status, result = await call("POST", f"/sessions/{sub_id}/datachannels/new", {"dataChannels": [
            {"location": "remote", "sessionId": pub_id, "dataChannelName": "chat", "waitForAck": True}]})
        (acked,) = result["dataChannels"]
        waiting = subscriber.createDataChannel("chat-acked", negotiated=True, id=acked["id"])
        held = []
        waiting.on("message", held.append)
        await _until(lambda: waiting.readyState == "open")
        sending.send("before the ack")
        await _until(lambda: received[-1] == "before the ack")
        assert held == []
        waiting.send("ack")
        await asyncio.sleep(0.3)
        sending.send("after the ack")
        await _until(lambda: held)
        assert held == ["after the ack"] and replies == ["reply"]  # the ack itself went nowhere

        # Closing the publisher's channel ends the subscriber's.
        status, result = await call("PUT", f"/sessions/{pub_id}/datachannels/close",
                                    {"dataChannels": [{"id": 1}, {"id": 9}]})
        assert status == 200 and result["dataChannels"][0] == {"id": 1}
        assert result["dataChannels"][1]["errorCode"] == "close_track_error"
        await _until(lambda: receiving.readyState == "closed")
        _, state = await call("GET", f"/sessions/{sub_id}")
        assert state["dataChannels"][1]["status"] == "inactive"
    finally:
        await publisher.close()
        await subscriber.close()


def test_batch_rules(api):
    _, created = api("POST", "/sessions/new")
    sid = created["sessionId"]
    status, error = api("POST", f"/sessions/{sid}/datachannels/new", {"dataChannels": [
        {"location": "local", "dataChannelName": "a"},
        {"location": "remote", "sessionId": sid, "dataChannelName": "a"}]})
    assert status == 400 and error["errorCode"] == "invalid_params"
    status, result = api("POST", f"/sessions/{sid}/datachannels/new", {"dataChannels": [
        {"location": "local", "dataChannelName": "a"},
        {"location": "local", "dataChannelName": "a"},
        {"location": "local", "dataChannelName": "b", "maxRetransmits": 1, "maxPacketLifeTime": 10}]})
    assert status == 200
    first, repeated, both = result["dataChannels"]
    assert first == {"dataChannelName": "a", "location": "local", "id": 1}
    assert repeated["errorCode"] == "repeated_local_track_error"
    assert both["errorCode"] == "invalid_params"
    status, error = api("POST", f"/sessions/{sid}/datachannels/establish",
                        {"dataChannel": {"location": "remote", "dataChannelName": "other"}})
    assert status == 400 and error["errorCode"] == "invalid_params"
    _, state = api("GET", f"/sessions/{sid}")
    assert state["dataChannels"] == [{"location": "local", "dataChannelName": "a", "id": 1, "status": "initializing"}]


async def test_establish_with_an_offer_answers_it(api):
    loop = asyncio.get_running_loop()
    call = lambda *args: loop.run_in_executor(None, api, *args)  # noqa: E731  (urllib blocks)
    pc = RTCPeerConnection()
    try:
        pc.createDataChannel("server-events", negotiated=True, id=0)
        await pc.setLocalDescription(await pc.createOffer())
        _, created = await call("POST", "/sessions/new")
        sid = created["sessionId"]
        status, result = await call("POST", f"/sessions/{sid}/datachannels/establish", {
            "dataChannel": {"location": "remote", "dataChannelName": "server-events"},
            "sessionDescription": {"type": "offer", "sdp": pc.localDescription.sdp}})
        assert status == 200 and result["requiresImmediateRenegotiation"] is False
        answer = result["sessionDescription"]
        assert answer["type"] == "answer" and "m=application 9 UDP/DTLS/SCTP webrtc-datachannel" in answer["sdp"]
        await pc.setRemoteDescription(RTCSessionDescription(**answer))
        await connected(pc)
        await _until(lambda: api("GET", f"/sessions/{sid}")[1]["dataChannels"][0]["status"] == "active")
    finally:
        await pc.close()
