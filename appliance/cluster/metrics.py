"""The cluster's Prometheus metrics, read at scrape time: who is in the cluster, the store, and each
trunk peer's packets (the hot path only bumps plain ints)."""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from .service import ClusterService

# (TrunkCounters field, which is the metric's name after edgecall_cluster_trunk_, help)
TRUNK_COUNTERS = (
    ("packets_in", "RTP packets received on trunks, by the box that sent them."),
    ("packets_out", "RTP packets sent on trunks, by the box they went to."),
    ("octets_in", "RTP bytes received on trunks."),
    ("octets_out", "RTP bytes sent on trunks."),
    ("rtcp_in", "RTCP packets received on trunks (feedback, reports)."),
    ("rtcp_out", "RTCP packets sent on trunks."),
    ("errors", "Trunk packets that failed SRTP or could not be sent."),
)


class ClusterCollector:
    def __init__(self, service: ClusterService) -> None:
        self.service = service

    def describe(self):
        return []

    def collect(self):
        service = self.service
        nodes = GaugeMetricFamily("edgecall_cluster_nodes", "Boxes this box hears from, itself included.")
        nodes.add_metric([], len(service.membership.nodes))
        yield nodes
        failures = CounterMetricFamily("edgecall_cluster_store_failures", "Store writes lost after their retries.")
        failures.add_metric([], service.failures)
        yield failures
        operations = CounterMetricFamily("edgecall_cluster_store_operations",
                                         "Reads and writes of the cluster store by this box.")
        operations.add_metric([], getattr(service.store, "operations", 0))
        yield operations
        trunks = service.trunks
        if trunks is None:
            return
        handover = service.handover
        if handover is not None:
            moved = CounterMetricFamily("edgecall_cluster_handover", "Just-in-time PeerConnections: checks for "
                                        "sessions of other boxes, and what became of them.", labels=["event"])
            for counter in dataclasses.fields(handover.counters):
                moved.add_metric([counter.name], getattr(handover.counters, counter.name))
            yield moved
        remote = GaugeMetricFamily("edgecall_cluster_remote_tracks", "Tracks of other boxes received here now.")
        remote.add_metric([], len(trunks.remote))
        yield remote
        peers = list(service.port.peers.values())
        for field, text in TRUNK_COUNTERS:
            family = CounterMetricFamily(f"edgecall_cluster_trunk_{field}", text, labels=["node"])
            for peer in peers:
                family.add_metric([peer.node], getattr(peer.counters, field))
            yield family
        unknown = CounterMetricFamily("edgecall_cluster_trunk_dropped",
                                      "Trunk datagrams dropped: from no peer or failing authentication, or for "
                                      "a stream this box does not receive.", labels=["reason"])
        unknown.add_metric(["unknown_source"], service.port.unknown)
        unknown.add_metric(["unknown_ssrc"], trunks.unknown_ssrc)
        yield unknown
