"""A thirdparty session (CALLS_API.md 1.1, 2 step 7): the SFU is the full, controlling ICE agent
toward an ICE-lite endpoint. The lite endpoint here is real: an ordinary session of a second box,
whose SFU is ICE-lite toward everyone, so the only checks that can connect the two are ours."""
import asyncio

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from tests.lab.calls_api import Api, connected


async def test_a_thirdparty_session_checks_an_ice_lite_box_and_relays_its_audio(appliance):
    relay_box, lite_box = appliance(), appliance()
    loop = asyncio.get_running_loop()
    relay_api, lite_api = Api(relay_box), Api(lite_box)
    on_relay = lambda *args: loop.run_in_executor(None, relay_api, *args)  # noqa: E731  (urllib blocks)
    on_lite = lambda *args: loop.run_in_executor(None, lite_api, *args)  # noqa: E731

    publisher, listener = RTCPeerConnection(), RTCPeerConnection()
    try:
        # The "third party": box 2, where an aiortc client publishes its voice.
        _, created = await on_lite("POST", "/sessions/new")
        voice_id = created["sessionId"]
        publisher.addTransceiver(AudioStreamTrack(), direction="sendonly")
        await publisher.setLocalDescription(await publisher.createOffer())
        _, pushed = await on_lite("POST", f"/sessions/{voice_id}/tracks/new", {
            "sessionDescription": {"type": "offer", "sdp": publisher.localDescription.sdp},
            "tracks": [{"location": "local", "mid": "0", "trackName": "voice"}]})
        await publisher.setRemoteDescription(RTCSessionDescription(**pushed["sessionDescription"]))
        await connected(publisher)

        # Box 1 relays: its thirdparty session offers to receive, as a full ICE agent.
        status, created = await on_relay("POST", "/sessions/new?thirdparty=true")
        assert status == 201
        relay_id = created["sessionId"]
        _, offered = await on_relay("POST", f"/sessions/{relay_id}/tracks/new", {"tracks": [
            {"location": "local", "trackName": "agent", "kind": "audio", "bidirectionalMediaStream": True}]})
        offer = offered["sessionDescription"]["sdp"]
        assert "a=ice-lite" not in offer and "a=setup:actpass" in offer

        # The app posts the offer to the third party, which answers it (ICE-lite, a=setup:passive)...
        _, answered = await on_lite("POST", "/sessions/new", {})
        status, relayed = await on_lite("POST", f"/sessions/{answered['sessionId']}/tracks/new", {
            "sessionDescription": {"type": "offer", "sdp": offer},
            "tracks": [{"location": "remote", "sessionId": voice_id, "trackName": "voice"}]})
        assert status == 200, relayed
        answer = relayed["sessionDescription"]["sdp"]
        assert "a=ice-lite" in answer
        # ... and gives the answer to the relay session: box 1 checks box 2, then DTLS as its client.
        status, _ = await on_relay("PUT", f"/sessions/{relay_id}/renegotiate",
                                   {"sessionDescription": {"type": "answer", "sdp": answer}})
        assert status == 200

        # A listener on box 1 pulls what the third party sends: it crossed the relay leg.
        received = []
        listener.on("track", received.append)
        _, created = await on_relay("POST", "/sessions/new")
        listener_id = created["sessionId"]
        status, pulled = await on_relay("POST", f"/sessions/{listener_id}/tracks/new", {
            "tracks": [{"location": "remote", "sessionId": relay_id, "trackName": "agent"}]})
        assert status == 200 and pulled["requiresImmediateRenegotiation"], pulled
        await listener.setRemoteDescription(RTCSessionDescription(**pulled["sessionDescription"]))
        await listener.setLocalDescription(await listener.createAnswer())
        await on_relay("PUT", f"/sessions/{listener_id}/renegotiate",
                       {"sessionDescription": {"type": "answer", "sdp": listener.localDescription.sdp}})
        await connected(listener)
        frame = await asyncio.wait_for(received[0].recv(), 10)
        assert frame.sample_rate == 48000
        _, state = await on_relay("GET", f"/sessions/{relay_id}")
        local = state["tracks"][0]
        # aiortc sends the audio level extension; the box shows the last level it read (dBov).
        assert -127 <= local.pop("audioLevel") <= 0
        assert local == {"location": "local", "mid": "0", "trackName": "agent", "status": "active"}
    finally:
        await publisher.close()
        await listener.close()
