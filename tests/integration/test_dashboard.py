"""The operator's data on a real loopback box: the usage API and the dashboard's live snapshots are refused
without [api] admin_token, and during real traffic (aiortc publishing and pulling through the Calls API,
coturn's turnutils_uclient relaying through TURN) their figures are /metrics' own: each one lies between
the values /metrics gave just before and just after it was read."""
from __future__ import annotations

import asyncio
import json
import shutil
import urllib.request

import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from prometheus_client.parser import text_string_to_metric_families

from appliance.sfu.streams import PACKET_OVERHEAD
from appliance.stun import Class
from tests.lab.appliance import box_config, free_port, request
from tests.lab.calls_api import AsyncApi, connected, publish, subscribe
from tests.lab.turn_client import EchoPeer, TurnUdpClient, uclient

pytestmark = pytest.mark.skipif(not shutil.which("turnutils_uclient"), reason="coturn's turnutils are not installed")

ADMIN = "test-admin-token-0123"
APP = "test-app"
KEY = "test-key"
IDENTIFIER = "alice"
MESSAGES, LENGTH, CLIENTS = 40, 120, 2  # what turnutils_uclient relays (-n, -l, -m)


@pytest.fixture
def box(appliance):
    api, turn = free_port("tcp"), free_port("udp", "tcp")
    text = box_config(api, free_port("udp"), turn).replace(
        f'listen = "127.0.0.1:{api}"', f'listen = "127.0.0.1:{api}"\nadmin_token = "{ADMIN}"')
    running = appliance(text)
    running.turn_port = turn
    return running


def admin(path: str, box, token: str | None = ADMIN) -> tuple[int, dict]:
    status, raw = request("GET", box.url(path), headers={"Authorization": f"Bearer {token}"} if token else {})
    return status, json.loads(raw)


@pytest.mark.parametrize("path", ["/v1/usage", "/v1/usage?by=box&step=10", "/dashboard/events"])
def test_the_data_is_refused_without_the_admin_token(box, path):
    for token in (None, "wrong-token", ADMIN[:-1], ADMIN + "4"):
        status, body = admin(path, box, token)
        assert (status, body["errorCode"]) == (401, "unauthorized"), (token, body)
    status, body = admin(path + ("&" if "?" in path else "?") + "token=wrong-token", box, None)
    assert status == 401
    assert box.get("/dashboard")[0] == 200  # the page itself is public: it shows nothing without the token


def scrape(box) -> dict[tuple[str, tuple], float]:
    """/metrics as {(sample name, its labels): value}."""
    status, body = box.get("/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}


def snapshot(box) -> dict:
    """The first event of a new dashboard stream: a snapshot taken when the stream opens."""
    req = urllib.request.Request(box.url(f"/dashboard/events?token={ADMIN}"))
    with urllib.request.urlopen(req, timeout=15) as res:
        assert res.headers["Content-Type"] == "text/event-stream"
        for _ in range(10):
            line = res.readline()
            if line.startswith(b"data: "):
                return json.loads(line[len(b"data: "):])
    raise AssertionError("no event came")


def usage(box, query: str) -> dict[str, list[dict]]:
    status, body = admin(f"/v1/usage?{query}", box)
    assert status == 200, body
    by = body["by"]
    return {series[by]: series["points"] for series in body["series"]}


def between(value: float, before: dict, after: dict, name: str, **labels: str) -> None:
    key = (name, tuple(sorted(labels.items())))
    low, high = sorted((before.get(key, 0.0), after.get(key, 0.0)))
    assert low <= value <= high, (name, labels, low, value, high)


def totals(points: list[dict]) -> tuple[int, int]:
    return sum(p["ingressBytes"] for p in points), sum(p["egressBytes"] for p in points)


async def test_usage_and_snapshots_match_metrics_during_a_call_and_a_relay(box):
    loop = asyncio.get_running_loop()
    blocking = lambda f, *args: loop.run_in_executor(None, f, *args)  # noqa: E731  (urllib and uclient block)
    api = AsyncApi(box)
    publisher, subscriber = RTCPeerConnection(), RTCPeerConnection()
    peer = EchoPeer()
    holder = None
    try:
        pub_id = await publish(api, publisher, {"a": AudioStreamTrack(), "v": VideoStreamTrack()})
        await connected(publisher)
        received = {}
        subscriber.on("track", lambda track: received.setdefault(track.kind, track))
        sub_id = await subscribe(api, subscriber, [{"sessionId": pub_id, "trackName": name} for name in ("a", "v")])
        await connected(subscriber)
        for track in received.values():
            await asyncio.wait_for(track.recv(), 10)

        # TURN: a relay that ran (uclient, echoed by the peer) and an allocation held open, both alice's via test-key.
        status, raw = await blocking(lambda: request(
            "POST", box.url(f"/v1/turn/keys/{KEY}/credentials/generate-ice-servers"),
            json.dumps({"ttl": 600, "customIdentifier": IDENTIFIER}).encode(),
            {"Authorization": "Bearer test-key-token"}))
        assert status == 201
        turn = json.loads(raw)["iceServers"][-1]
        result = await blocking(lambda: uclient(
            "127.0.0.1", box.turn_port, "-e", peer.host, "-r", str(peer.port), "-u", turn["username"],
            "-w", turn["credential"], "-n", str(MESSAGES), "-l", str(LENGTH), "-m", str(CLIENTS)))
        assert result.sent == result.received == MESSAGES * CLIENTS and result.lost == 0, result.output[-2000:]
        holder = TurnUdpClient(("127.0.0.1", box.turn_port), turn["username"], turn["credential"])
        assert (await blocking(holder.allocate)).message_class == Class.SUCCESS

        before = await blocking(scrape, box)
        by_app = await blocking(usage, box, "by=app&step=10")
        by_issuer = await blocking(usage, box, "by=issuer&step=10")
        by_identifier = await blocking(usage, box, f"by=customIdentifier&customIdentifier={IDENTIFIER}&step=10")
        by_box = await blocking(usage, box, "by=box&step=10")
        live = await blocking(snapshot, box)
        after = await blocking(scrape, box)

        # The usage API: every point since the box started sums to the counters; the last point is now.
        ingress, egress = totals(by_app[APP])
        assert ingress > 0 and egress > 0
        between(ingress, before, after, "edgecall_sfu_app_bytes_total", app=APP, direction="ingress")
        between(egress, before, after, "edgecall_sfu_app_bytes_total", app=APP, direction="egress")
        between(by_app[APP][-1]["sessions"], before, after, "edgecall_sfu_app_sessions", app=APP)
        assert by_app[APP][-1]["sessions"] == 2 and totals(by_app["other-app"]) == (0, 0)
        relayed = MESSAGES * CLIENTS * LENGTH
        # The relay is over: what it carried is exact, each way (application data, as uclient sent it).
        assert totals(by_issuer[KEY]) == totals(by_identifier[IDENTIFIER]) == (relayed, relayed)
        between(totals(by_issuer[KEY])[0], before, after, "edgecall_turn_issuer_bytes_from_client_total", issuer=KEY)
        between(totals(by_issuer[KEY])[1], before, after, "edgecall_turn_issuer_bytes_to_client_total", issuer=KEY)
        between(by_issuer[KEY][-1]["allocations"], before, after, "edgecall_turn_issuer_allocations", issuer=KEY)
        between(totals(by_identifier[IDENTIFIER])[0], before, after, "edgecall_turn_bytes_from_client_total",
                identifier=IDENTIFIER)
        assert by_identifier[IDENTIFIER][-1]["allocations"] >= 1  # the one held open (uclient's may linger)
        between(by_identifier[IDENTIFIER][-1]["allocations"], before, after, "edgecall_turn_allocations")
        box_ingress, box_egress = totals(by_box["test-box"])
        assert box_ingress >= ingress + relayed and box_egress >= egress + relayed
        between(by_box["test-box"][-1]["sessions"], before, after, "edgecall_sfu_sessions")
        between(by_box["test-box"][-1]["allocations"], before, after, "edgecall_turn_allocations")

        # The snapshot, read between the same two scrapes.
        sfu = live["sfu"]
        between(sfu["sessions"], before, after, "edgecall_sfu_sessions")
        between(sfu["legs"], before, after, "edgecall_sfu_legs")
        between(sfu["forwardedPackets"], before, after, "edgecall_sfu_forwarded_packets_total")
        app = live["usage"]["app"][APP]
        between(app["ingressBytes"], before, after, "edgecall_sfu_app_bytes_total", app=APP, direction="ingress")
        between(app["egressBytes"], before, after, "edgecall_sfu_app_bytes_total", app=APP, direction="egress")
        between(live["turn"]["allocations"], before, after, "edgecall_turn_allocations")
        (alice,) = [i for i in live["turn"]["identifiers"] if i["identifier"] == IDENTIFIER]
        assert (alice["bytesFromClient"], alice["bytesToClient"]) == (relayed, relayed)
        between(alice["allocationsNow"], before, after, "edgecall_turn_allocations")
        between(alice["bytesToClient"], before, after, "edgecall_turn_bytes_to_client_total", identifier=IDENTIFIER)
        assert live["node"] == "test-box" and live["status"] == "ok" and live["nodes"][0]["id"] == "test-box"
        sessions = {s["id"]: s for s in sfu["list"]}
        assert {t["track"] for t in sessions[pub_id]["published"]} == {"a", "v"}
        video = next(t for t in sessions[pub_id]["published"] if t["track"] == "v")
        assert video["bitrate"] > 0
        assert {(p["session"], p["track"]) for p in sessions[sub_id]["pulled"]} == {(pub_id, "a"), (pub_id, "v")}

        # A second stack's count: what aiortc says it sent, with the headers and the wire's overhead,
        # is what the box counted in (once the publisher stops, nothing more comes).
        for sender in publisher.getSenders():
            await sender.stop()
        await asyncio.sleep(0.5)
        stats = [s for s in (await publisher.getStats()).values() if s.type == "outbound-rtp"]
        payload, packets = sum(s.bytesSent for s in stats), sum(s.packetsSent for s in stats)
        ingress = totals((await blocking(usage, box, "by=app&step=60"))[APP])[0]
        header = (ingress - payload) / packets - PACKET_OVERHEAD
        assert 12 <= header <= 12 + 40, header  # the RTP header and aiortc's extensions (mid, abs-send-time, ...)
    finally:
        if holder is not None:
            holder.close()
        peer.close()
        await publisher.close()
        await subscriber.close()
