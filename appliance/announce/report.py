"""What the health agent tells the service after each round, kept for /healthz and /metrics.

The agent is the one that reads BIRD; the service shows the agent's last word and its age, so
a dead agent shows as a growing age rather than as stale data that looks fresh.
"""
from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, Gauge

from netconfig.bgp_state import BgpState


class AgentReports:
    def __init__(self, registry: CollectorRegistry):
        self.last: dict[str, Any] | None = None
        self.at: float | None = None
        self._announced = Gauge("edgecall_anycast_announced", "1 while the health agent announces the anycast prefixes.",
                                registry=registry)
        self._prefix = Gauge("edgecall_anycast_prefix_exported", "1 for each prefix exported on an established BGP session.",
                             ["prefix"], registry=registry)
        self._session = Gauge("edgecall_bgp_session_established", "1 while the BGP session is Established.",
                              ["session", "neighbor"], registry=registry)
        self._probe = Gauge("edgecall_probe_ok", "1 when the health agent's last probe of the service passed.",
                            ["probe"], registry=registry)
        self._peer_up = Gauge("edgecall_backbone_peer_up", "1 while the backbone peer answers through its tunnel.",
                              ["peer"], registry=registry)
        # The kernel's counters as the agent last read them (nftables' per-slice rule counters).
        self._peer_packets = Gauge("edgecall_backbone_slice_packets",
                                   "Packets of the peer's relay slice that landed here: forwarded to it, or dropped.",
                                   ["peer", "outcome"], registry=registry)
        age = Gauge("edgecall_announce_report_age_seconds", "Seconds since the health agent last reported (-1: never).",
                    registry=registry)
        age.set_function(lambda: self.age(time.monotonic()))

    def update(self, report: dict[str, Any], now: float) -> None:
        self.last, self.at = report, now
        self._announced.set(1 if report.get("announced") else 0)
        for gauge in (self._prefix, self._session, self._probe, self._peer_up, self._peer_packets):
            gauge.clear()
        for peer, state in report.get("backbone", {}).items():
            self._peer_up.labels(peer).set(1 if state.get("up") else 0)
            for outcome in ("forwarded", "dropped"):
                if state.get(outcome) is not None:
                    self._peer_packets.labels(peer, outcome).set(state[outcome])
        bgp = BgpState.from_dict(report.get("bgp", {}))
        for prefix in bgp.announced:
            self._prefix.labels(prefix).set(1)
        for session in bgp.sessions:
            self._session.labels(session.name, session.neighbor).set(1 if session.established else 0)
        for name, probe in report.get("probes", {}).items():
            self._probe.labels(name).set(1 if probe.get("ok") else 0)

    def age(self, now: float) -> float:
        return -1.0 if self.at is None else now - self.at

    def view(self, now: float) -> dict[str, Any] | None:
        """The last report with its age, for /healthz and `appliance status`; None before the first."""
        return None if self.last is None else {**self.last, "age_seconds": round(self.age(now), 3)}
