"""A client of a box's Calls API for tests that drive aiortc PeerConnections through it: the API
(blocking, as urllib; or awaited, off the event loop), and waiting for a PeerConnection to connect."""
from __future__ import annotations

import asyncio
import json

from aiortc import RTCPeerConnection, RTCSessionDescription

from .appliance import request


class Api:
    """`api(method, path, body)` -> (status, JSON answer) for an app of `box`."""

    def __init__(self, box, app="test-app", secret="test-app-secret"):
        self.box = box
        self.base = box.url(f"/v1/apps/{app}")
        self.headers = {"Authorization": f"Bearer {secret}"}

    def __call__(self, method, path, body=None):
        status, raw = request(method, self.base + path, None if body is None else json.dumps(body).encode(),
                              self.headers)
        return status, json.loads(raw) if raw else None


class AsyncApi(Api):
    """The same, awaited: the request runs in a thread, so PeerConnections keep running."""

    async def __call__(self, method, path, body=None):  # type: ignore[override]
        return await asyncio.get_running_loop().run_in_executor(None, Api.__call__, self, method, path, body)


async def connected(pc: RTCPeerConnection, timeout: float = 20.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if pc.connectionState == "connected":
            return
        if pc.connectionState == "failed":
            raise AssertionError("PeerConnection failed")
        await asyncio.sleep(0.05)
    raise AssertionError(f"not connected: {pc.connectionState}")


async def publish(api: AsyncApi, pc: RTCPeerConnection, tracks: dict, edit=lambda sdp: sdp) -> str:
    """Push `tracks` (name -> aiortc track) in a new session; its id once the answer is applied
    (`edit` may change the answer first, e.g. to send the media elsewhere)."""
    _, created = await api("POST", "/sessions/new")
    session = created["sessionId"]
    transceivers = {name: pc.addTransceiver(track, direction="sendonly") for name, track in tracks.items()}
    await pc.setLocalDescription(await pc.createOffer())  # which gives the transceivers their mids
    status, pushed = await api("POST", f"/sessions/{session}/tracks/new", {
        "sessionDescription": {"type": "offer", "sdp": pc.localDescription.sdp},
        "tracks": [{"location": "local", "mid": t.mid, "trackName": name} for name, t in transceivers.items()]})
    assert status == 200, pushed
    await pc.setRemoteDescription(RTCSessionDescription(sdp=edit(pushed["sessionDescription"]["sdp"]), type="answer"))
    return session


async def subscribe(api: AsyncApi, pc: RTCPeerConnection, items: list[dict]) -> str:
    """Pull `items` ({sessionId, trackName}) in a new session: the SFU offers, `pc` answers through
    renegotiate; the session's id once the answer is in."""
    _, created = await api("POST", "/sessions/new")
    session = created["sessionId"]
    status, pulled = await api("POST", f"/sessions/{session}/tracks/new", {
        "tracks": [{"location": "remote", **item} for item in items]})
    assert status == 200 and all("errorCode" not in t for t in pulled["tracks"]), pulled
    await pc.setRemoteDescription(RTCSessionDescription(**pulled["sessionDescription"]))
    await pc.setLocalDescription(await pc.createAnswer())
    status, answered = await api("PUT", f"/sessions/{session}/renegotiate",
                                 {"sessionDescription": {"type": "answer", "sdp": pc.localDescription.sdp}})
    assert status == 200, answered
    return session
