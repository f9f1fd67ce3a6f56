"""The cluster's costs, measured in one run on loopback (boxes clustered through one real
nats-server): connect time when the API box and the media box are the same and when they differ
(the just-in-time takeover), a subscriber's first frame on the publisher's box and on another box
(through a trunk), the publisher's box's CPU for 30 subscribers on its own box and spread over three
boxes, and store operations per PeerConnection.

The clients are aiortc (connect, first frame) and the SFU bench's load peers (CPU: real ICE, DTLS
and SRTP, no encoding). Figures are medians; nothing is asserted.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import re
import statistics
import time
import urllib.request

import psutil
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from prometheus_client.parser import text_string_to_metric_families

from tests.bench.box import running_box
from tests.bench.sfu_load import AUDIO_PT, VIDEO_PT, LoadPeer
from tests.lab.nats import NatsCluster, nats_unavailable

RUNS = 10
FRAME_RUNS = 5
SUBSCRIBERS = 30
PACKETS = 20_000  # publisher packets in each CPU run (3 video : 1 audio)
RATE = 2000.0  # publisher packets per second
SECRET = "the bench cluster's secret"


def _post(url: str, body: dict | None = None, method: str = "POST") -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Authorization": "Bearer test-app-secret"})
    with urllib.request.urlopen(req, timeout=15) as res:
        return json.loads(res.read() or b"{}")


def _metric(base: str, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as res:
        text = res.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) if f.name == name for s in f.samples
               if all(s.labels.get(k) == v for k, v in labels.items()))


async def _connected(pc: RTCPeerConnection) -> None:
    while pc.connectionState != "connected":
        if pc.connectionState == "failed":
            raise RuntimeError("PeerConnection failed")
        await asyncio.sleep(0.001)


async def _publish(api: str, media_port: tuple[int, int] | None, video: bool = False):
    """(pc, session id, seconds from sessions/new to connected); `media_port` (A's, B's) sends the
    media to B's port while the API is A's."""
    loop = asyncio.get_running_loop()
    pc = RTCPeerConnection()
    start = time.perf_counter()
    session = (await loop.run_in_executor(None, _post, f"{api}/sessions/new"))["sessionId"]
    track = VideoStreamTrack() if video else AudioStreamTrack()
    transceiver = pc.addTransceiver(track, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    answer = await loop.run_in_executor(None, _post, f"{api}/sessions/{session}/tracks/new", {
        "sessionDescription": {"type": "offer", "sdp": pc.localDescription.sdp},
        "tracks": [{"location": "local", "mid": transceiver.mid, "trackName": "t"}]})
    sdp = answer["sessionDescription"]["sdp"]
    if media_port is not None:
        sdp = sdp.replace(f" {media_port[0]} typ host", f" {media_port[1]} typ host")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
    await asyncio.wait_for(_connected(pc), 20)
    return pc, session, time.perf_counter() - start


async def _first_frame(api: str, publisher: str) -> float:
    """Seconds from the subscriber's answer to its first decoded frame."""
    loop = asyncio.get_running_loop()
    pc = RTCPeerConnection()
    got: list = []
    pc.on("track", got.append)
    try:
        session = (await loop.run_in_executor(None, _post, f"{api}/sessions/new"))["sessionId"]
        offer = await loop.run_in_executor(None, _post, f"{api}/sessions/{session}/tracks/new", {"tracks": [
            {"location": "remote", "sessionId": publisher, "trackName": "t"}]})
        await pc.setRemoteDescription(RTCSessionDescription(**offer["sessionDescription"]))
        await pc.setLocalDescription(await pc.createAnswer())
        start = time.perf_counter()
        await loop.run_in_executor(None, lambda: _post(f"{api}/sessions/{session}/renegotiate", {
            "sessionDescription": {"type": "answer", "sdp": pc.localDescription.sdp}}, "PUT"))
        while not got:
            await asyncio.sleep(0.001)
        await asyncio.wait_for(got[0].recv(), 20)
        return time.perf_counter() - start
    finally:
        await pc.close()


def _media_port(proc_config: str) -> int:
    return int(re.search(r'udp = "127\.0\.0\.1:(\d+)"', proc_config)[1])


async def _latencies(a: str, b: str, ports: tuple[int, int]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"same": [], "cross": [], "frame_local": [], "frame_remote": []}
    for _ in range(RUNS):
        for kind, media in (("same", None), ("cross", ports)):
            pc, _, took = await _publish(a, media)
            out[kind].append(took)
            await pc.close()
    pc, publisher, _ = await _publish(a, None, video=True)
    try:
        for _ in range(FRAME_RUNS):
            out["frame_local"].append(await _first_frame(a, publisher))
            out["frame_remote"].append(await _first_frame(b, publisher))
    finally:
        await pc.close()
    return out


def _cpu(apis: list[str], pid: int) -> float:
    """The publisher's box's CPU microseconds per publisher packet, with SUBSCRIBERS load subscribers
    spread round-robin over `apis` (the publisher's box first)."""
    peers: list[LoadPeer] = []
    try:
        publisher = LoadPeer(apis[0], "test-app-secret")
        peers.append(publisher)
        ssrcs = publisher.publish()
        for i in range(SUBSCRIBERS):
            subscriber = LoadPeer(apis[i % len(apis)], "test-app-secret")
            peers.append(subscriber)
            subscriber.subscribe(publisher.session)
        time.sleep(0.5)
        server = psutil.Process(pid)
        before = server.cpu_times()
        start = time.perf_counter()
        for i in range(PACKETS):
            kind, pt, size, step = ("video", VIDEO_PT, 1100, 30) if i % 4 < 3 else ("audio", AUDIO_PT, 160, 960)
            publisher.send_rtp(pt, i, i * step, ssrcs[kind], b"\x00" * size)
            if i % 50 == 49:
                for peer in peers[1:]:
                    peer.drain()
                lag = start + (i + 1) / RATE - time.perf_counter()
                if lag > 0:
                    time.sleep(lag)
        time.sleep(0.3)
        after = server.cpu_times()
        return ((after.user - before.user) + (after.system - before.system)) / PACKETS * 1e6
    finally:
        for peer in peers:
            peer.close()


def main() -> None:
    if reason := nats_unavailable():
        print(f"skipped: {reason}")
        return
    nats = NatsCluster(1)
    try:
        cluster = f'\n[cluster]\nnats = ["{nats.urls[0]}"]\nsecret = "{SECRET}"\n'
        with contextlib.ExitStack() as stack:
            boxes = [stack.enter_context(running_box(cluster, node=f"box-{n}")) for n in "abc"]
            apis = [f"{base}/v1/apps/test-app" for _, base in boxes]
            configs = [" ".join(p.args) for p, _ in boxes]
            ports = tuple(_media_port(open(args.split("--config ")[1].split()[0]).read()) for args in configs[:2])
            ops_before = [_metric(base, "edgecall_cluster_store_operations") for _, base in boxes]
            figures = asyncio.run(_latencies(apis[0], apis[1], ports))
            ops_after = [_metric(base, "edgecall_cluster_store_operations") for _, base in boxes]
            taken = _metric(boxes[1][1], "edgecall_cluster_handover", event="taken")
            local = _cpu(apis[:1], boxes[0][0].pid)
            spread = _cpu(apis, boxes[0][0].pid)
        median = {k: statistics.median(v) * 1000 for k, v in figures.items()}
        sessions = 2 * RUNS + 1 + 2 * FRAME_RUNS
        print(f"median of {RUNS} (connect) and {FRAME_RUNS} (first frame), aiortc clients, 3 boxes, 1 nats-server:")
        print(f"  sessions/new -> connected, API and media on one box   {median['same']:7.1f} ms")
        print(f"  sessions/new -> connected, media on another box       {median['cross']:7.1f} ms"
              f"  (+{median['cross'] - median['same']:.1f} ms for the takeover)")
        print(f"  answer -> first frame, subscriber on the publisher's box {median['frame_local']:7.1f} ms")
        print(f"  answer -> first frame, subscriber on another box       {median['frame_remote']:7.1f} ms")
        print(f"  publisher's box CPU per publisher packet, {SUBSCRIBERS} subscribers there  {local:6.1f} us")
        print(f"  publisher's box CPU per publisher packet, spread over 3 boxes  {spread:6.1f} us"
              f"  ({spread / local:.2f} x)")
        ops = sum(ops_after) - sum(ops_before)
        print(f"  store operations (reads, writes; heartbeats included) per PeerConnection  {ops / sessions:.1f}")
        print(f"  (sessions the media box took over: {taken:.0f} of {RUNS} cross-box connects)")
    finally:
        nats.close()
