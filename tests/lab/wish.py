"""WHIP and WHEP from aiortc, for tests: the HTTP exchanges of RFC 9725 and the WHEP drafts, with
aiohttp (the answers' headers matter: Location, ETag, Link)."""
from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from multidict import CIMultiDict

SDP = "application/sdp"


@dataclass
class Answer:
    status: int
    body: str
    headers: CIMultiDict

    @property
    def links(self) -> list[str]:
        return self.headers.getall("Link", [])


async def http(method: str, url: str, body: str = "", token: str | None = "test-app-secret",
               content_type: str | None = SDP, headers: dict | None = None) -> Answer:
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if content_type is not None and body:
        sent["Content-Type"] = content_type
    async with aiohttp.ClientSession() as client:
        async with client.request(method, url, data=body.encode(), headers=sent) as answer:
            return Answer(answer.status, await answer.text(), CIMultiDict(answer.headers))


def resource_url(box, answer: Answer) -> str:
    return box.url(answer.headers["Location"])


async def whip_publish(box, name: str, token: str = "test-app-secret", app: str = "test-app", edit=lambda sdp: sdp):
    """An aiortc publisher of audio and video under `name`: (its PeerConnection, the POST's answer).
    `edit` may change the answer first (e.g. to send the media to another box)."""
    pc = RTCPeerConnection()
    pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
    pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    answer = await http("POST", box.url(f"/v1/apps/{app}/whip/{name}"), pc.localDescription.sdp, token)
    if answer.status == 201:
        await pc.setRemoteDescription(RTCSessionDescription(edit(answer.body), "answer"))
    return pc, answer


async def whep_play(box, name: str, token: str | None = "test-app-secret", app: str = "test-app",
                    client_offer: bool = True, query: str = ""):
    """An aiortc player of `name`: (its PeerConnection, {kind: track} as they arrive, the POST's answer).
    Without `client_offer` it speaks draft-ietf-wish-whep-00: an empty POST, its answer PATCHed back
    as text/plain (what fetch() sends a string as, as Cloudflare's example player does)."""
    pc = RTCPeerConnection()
    tracks: dict = {}
    pc.on("track", lambda track: tracks.setdefault(track.kind, track))
    url = box.url(f"/v1/apps/{app}/whep/{name}{query}")
    if client_offer:
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        answer = await http("POST", url, pc.localDescription.sdp, token)
        if answer.status == 201:
            await pc.setRemoteDescription(RTCSessionDescription(answer.body, "answer"))
        return pc, tracks, answer
    answer = await http("POST", url, "", token)
    if answer.status == 201:
        await pc.setRemoteDescription(RTCSessionDescription(answer.body, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        patched = await http("PATCH", resource_url(box, answer), pc.localDescription.sdp, token,
                             content_type="text/plain;charset=UTF-8")
        assert patched.status == 204, patched
    return pc, tracks, answer
