"""Boxes of several workers in one cluster, with real parts on loopback: two appliance boxes of two
workers each, clustered through a real nats-server, aiortc clients with real ICE, DTLS and SRTP. Every
worker is a node of the cluster; a track published on one box reaches subscribers on every worker of
the other over trunks."""
from __future__ import annotations

from aiortc import RTCPeerConnection
from aiortc.mediastreams import VideoStreamTrack

from tests.integration.test_cluster_calls import clustered
from tests.integration.test_failover import Frames
from tests.integration.test_workers import WORKERS, join_until_every_worker_holds_one, metric, workers
from tests.lab.appliance import healthz
from tests.lab.calls_api import AsyncApi as Api
from tests.lab.calls_api import connected, publish
from tests.lab.nats import nats_servers

__all__ = ["nats_servers"]  # the fixture, used below by name

async def test_a_track_published_on_one_box_reaches_every_worker_of_another(nats_servers, appliance, tmp_path):
    nats = nats_servers(1)
    box_a = appliance(clustered("box-a", nats.urls[0], WORKERS).replace("edgecall-test-state", str(tmp_path / "a")))
    box_b = appliance(clustered("box-b", nats.urls[0], WORKERS).replace("edgecall-test-state", str(tmp_path / "b")))
    nodes = [f"box-{box}-w{i}" for box in "ab" for i in range(WORKERS)]
    assert healthz(box_b)["details"]["cluster"]["nodes"] == nodes
    api_a, api_b = Api(box_a), Api(box_b)
    b_workers = workers(box_b)
    publisher = RTCPeerConnection()
    subscribers: list[RTCPeerConnection] = []
    frames: list[Frames] = []
    try:
        pub_id = await publish(api_a, publisher, {"v": VideoStreamTrack()})
        await connected(publisher)
        await join_until_every_worker_holds_one(api_b, pub_id, b_workers, subscribers, frames)
        for each in frames:
            await each.after(0.0, 5)
        # Each worker of B receives the track on a trunk of its own: none is forwarded to it by the other.
        for worker in b_workers:
            assert metric(worker["api"], "edgecall_cluster_trunk_packets_in") > 0
            assert metric(worker["api"], "edgecall_cluster_trunk_packets_out") == 0
    finally:
        for each in frames:
            each.task.cancel()
        for pc in (publisher, *subscribers):
            await pc.close()
