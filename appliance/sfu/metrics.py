"""The SFU's Prometheus metrics, read at scrape time: the hot path only bumps plain ints."""
from __future__ import annotations

import dataclasses

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .sfu import Sfu


class SfuCollector:
    def __init__(self, sfu: Sfu) -> None:
        self.sfu = sfu

    def describe(self):
        return []

    def collect(self):
        sfu = self.sfu
        sessions = list(sfu.sessions.values())
        gauges = {
            "edgecall_sfu_sessions": ("Calls sessions now.", len(sessions)),
            "edgecall_sfu_connected_sessions": ("Sessions whose DTLS is connected.",
                                                sum(s.connected_at is not None for s in sessions)),
            "edgecall_sfu_published_tracks": ("Tracks published now.", sum(len(s.tracks) for s in sessions)),
            "edgecall_sfu_legs": ("Subscriber copies of tracks being forwarded now.", sum(1 for _ in sfu.legs())),
        }
        for name, (text, value) in gauges.items():
            family = GaugeMetricFamily(name, text)
            family.add_metric([], value)
            yield family
        forwarded = CounterMetricFamily("edgecall_sfu_forwarded_packets", "RTP packets sent on subscriber legs.")
        forwarded.add_metric([], sfu.forwarded_packets())
        yield forwarded
        # Per app: apps are the config's, a bounded label set.
        app_sessions = GaugeMetricFamily("edgecall_sfu_app_sessions", "Calls sessions now, by app.", labels=["app"])
        for app, count in sfu.live.items():
            app_sessions.add_metric([app], count)
        yield app_sessions
        app_bytes = CounterMetricFamily(
            "edgecall_sfu_app_bytes", "Media bytes on the wire by app: ingress from its publishers, egress to its "
            "subscribers.", labels=["app", "direction"])
        for (app, direction), count in sorted(sfu.app_bytes().items()):
            app_bytes.add_metric([app, direction], count)
        yield app_bytes
        dropped = CounterMetricFamily("edgecall_sfu_dropped", "Media-port datagrams dropped, by reason.",
                                      labels=["reason"])
        port = sfu.port
        for layer, counters in (("sfu", sfu.ingest), ("port", port.counters), ("ice", port.ice.counters),
                                ("checks", port.checks.counters)):
            for field in dataclasses.fields(counters):
                dropped.add_metric([f"{layer}_{field.name}"], getattr(counters, field.name))
        dropped.add_metric(["sfu_data_dropped"], sfu.channels.dropped)
        yield dropped
        repair = CounterMetricFamily(
            "edgecall_sfu_repair", "Loss repair and layer moves: sequence numbers subscribers NACKed, answered "
            "from the cache, not in it, NACKed upstream, given up; simulcast layer switches.", labels=["event"])
        for moves in (sfu.repair.counters, sfu.switcher.counters):
            for field in dataclasses.fields(moves):
                repair.add_metric([field.name], getattr(moves, field.name))
        yield repair
