"""Time to a connected PeerConnection: `sessions/new` to ICE+DTLS connected through the box, against
the anchor of two aiortc PeerConnections connecting to each other directly on loopback in the same run.

The client is aiortc in both cases, so the client's own cost cancels out of the ratio; the goal is
under 100 ms through the box.
"""
from __future__ import annotations

import asyncio
import json
import statistics
import time
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from tests.bench.box import running_box

RUNS = 10
WORKERS = 2


async def _until_connected(*pcs: RTCPeerConnection) -> None:
    while any(pc.connectionState != "connected" for pc in pcs):
        if any(pc.connectionState == "failed" for pc in pcs):
            raise RuntimeError("PeerConnection failed")
        await asyncio.sleep(0.001)


def _post(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Authorization": "Bearer test-app-secret"})
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.loads(res.read())


async def _through_box(api: str) -> float:
    loop = asyncio.get_running_loop()
    pc = RTCPeerConnection()
    try:
        start = time.perf_counter()
        session = (await loop.run_in_executor(None, _post, f"{api}/sessions/new"))["sessionId"]
        transceiver = pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        answer = await loop.run_in_executor(None, _post, f"{api}/sessions/{session}/tracks/new", {
            "sessionDescription": {"type": "offer", "sdp": pc.localDescription.sdp},
            "tracks": [{"location": "local", "mid": transceiver.mid, "trackName": "a"}]})
        await pc.setRemoteDescription(RTCSessionDescription(**answer["sessionDescription"]))
        await asyncio.wait_for(_until_connected(pc), 20)
        return time.perf_counter() - start
    finally:
        await pc.close()


async def _direct() -> float:
    a, b = RTCPeerConnection(), RTCPeerConnection()
    try:
        start = time.perf_counter()
        a.addTransceiver(AudioStreamTrack(), direction="sendonly")
        await a.setLocalDescription(await a.createOffer())
        await b.setRemoteDescription(a.localDescription)
        await b.setLocalDescription(await b.createAnswer())
        await a.setRemoteDescription(b.localDescription)
        await asyncio.wait_for(_until_connected(a, b), 20)
        return time.perf_counter() - start
    finally:
        await a.close()
        await b.close()


async def _measure(api: str) -> tuple[list[float], list[float]]:
    box, direct = [], []
    for _ in range(RUNS):
        box.append(await _through_box(api))
        direct.append(await _direct())
    return box, direct


def main() -> None:
    with running_box() as (_, base):
        box, direct = asyncio.run(_measure(f"{base}/v1/apps/test-app"))
    # With workers the API request and the media land on workers at random: about half the time on
    # different ones, and the media's worker takes the session over before it answers the first check.
    with running_box(workers=WORKERS) as (_, base):
        spread, _ = asyncio.run(_measure(f"{base}/v1/apps/test-app"))
    b, d, w = (statistics.median(runs) * 1000 for runs in (box, direct, spread))
    print(f"median of {RUNS}, aiortc client on loopback:")
    print(f"  sessions/new -> connected through the box  {b:7.1f} ms  {b / d:5.2f} x anchor")
    print(f"  ... through a box of {WORKERS} workers         {w:7.1f} ms  {w / d:5.2f} x anchor "
          f"(worst {max(spread) * 1000:.1f} ms)")
    print(f"  aiortc <-> aiortc directly (anchor)        {d:7.1f} ms  1.00 x")
