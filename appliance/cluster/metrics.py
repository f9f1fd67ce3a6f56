"""The cluster's Prometheus metrics, read at scrape time: who is in the cluster, the store, and each
trunk peer's packets (the hot path only bumps plain ints)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from .service import ClusterService

# (metric suffix, TrunkCounters field, help)
TRUNK_COUNTERS = (
    ("packets_in", "packets_in", "RTP packets received on trunks, by the box that sent them."),
    ("packets_out", "packets_out", "RTP packets sent on trunks, by the box they went to."),
    ("octets_in", "octets_in", "RTP bytes received on trunks."),
    ("octets_out", "octets_out", "RTP bytes sent on trunks."),
    ("rtcp_in", "rtcp_in", "RTCP packets received on trunks (feedback, reports)."),
    ("rtcp_out", "rtcp_out", "RTCP packets sent on trunks."),
    ("errors", "errors", "Trunk packets that failed SRTP or could not be sent."),
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
        remote = GaugeMetricFamily("edgecall_cluster_remote_tracks", "Tracks of other boxes received here now.")
        remote.add_metric([], len(trunks.remote))
        yield remote
        peers = list(service.port.peers.values())
        for suffix, field, text in TRUNK_COUNTERS:
            family = CounterMetricFamily(f"edgecall_cluster_trunk_{suffix}", text, labels=["node"])
            for peer in peers:
                family.add_metric([peer.node], getattr(peer.counters, field))
            yield family
        unknown = CounterMetricFamily("edgecall_cluster_trunk_dropped",
                                      "Trunk datagrams dropped: from no peer or failing authentication, or for "
                                      "a stream this box does not receive.", labels=["reason"])
        unknown.add_metric(["unknown_source"], service.port.unknown)
        unknown.add_metric(["unknown_ssrc"], trunks.unknown_ssrc)
        yield unknown
