"""The dashboard's live snapshot, sent every few seconds on /dashboard/events: the box's health (as
/healthz), the cluster's boxes, BGP and the backbone (as the health agent last reported them), the
SFU's sessions and tracks with bitrate, loss and round-trip time, TURN's allocations and usage, and
the usage totals. Read from the same objects /metrics reads, at one moment."""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .. import __version__
from ..control import status
from ..turn.usage import OTHER, top_identifiers
from .readings import read, sfu_of, turn_of
from .usage import Figures

if TYPE_CHECKING:
    from ..cluster.nodes import Membership, NodeRecord
    from ..runner import Box
    from ..sfu.session import CallSession
    from ..sfu.streams import Stream

# Sessions listed one by one, newest first; the counts cover every session.
MAX_LISTED = 50


@runtime_checkable
class ClusterHost(Protocol):
    """What the snapshot reads of the cluster service: the boxes it hears from."""

    membership: Membership


class Snapshots:
    """The snapshots of one dashboard connection. It remembers what each published stream had
    received at the previous snapshot, so loss is shown over the last interval, not since the start."""

    def __init__(self) -> None:
        self._received: dict[tuple[str, str, str], tuple[int, int]] = {}

    def build(self, box: Box, now: float, wall: float) -> dict[str, Any]:
        """The snapshot at `now` (the event loop's clock, as the SFU's) and `wall` (Unix time)."""
        state = status(box)
        failing = any(reason != "ok" for reason in state["services"].values())
        agent = state["agent"] or {}
        reading = read(box)
        return {
            "t": round(wall, 3),
            "node": box.config.node.id,
            "version": __version__,
            "status": "draining" if state["draining"] else "failing" if failing else "ok",
            "services": state["services"],
            "nodes": _nodes(box, reading["box"][box.config.node.id].sessions),
            "agent": {key: agent.get(key) for key in ("state", "announced", "probes", "age_seconds")} if agent else None,
            "bgp": agent.get("bgp"),
            "backbone": agent.get("backbone", {}),
            "cluster": state["cluster"],
            "sfu": self._sfu(box, now),
            "turn": _turn(box),
            # Totals since the box started (the ring's bounded dimensions; identifiers are under "turn").
            "usage": {dimension: {key: _figures(f) for key, f in reading[dimension].items()}
                      for dimension in ("app", "issuer", "box")},
        }

    def _sfu(self, box: Box, now: float) -> dict[str, Any] | None:
        sfu = sfu_of(box)
        if sfu is None:
            return None
        sessions = sorted(sfu.sessions.values(), key=lambda s: s.created, reverse=True)
        listed = [self._session(session, now) for session in sessions[:MAX_LISTED]]
        seen = {(s.id, t.name, stream.rid or "") for s in sessions[:MAX_LISTED] for t in s.tracks.values()
                for stream in t.streams}
        self._received = {key: value for key, value in self._received.items() if key in seen}
        return {
            "sessions": len(sessions),
            "connected": sum(s.connected_at is not None for s in sessions),
            "tracks": sum(len(s.tracks) for s in sessions),
            "legs": sum(1 for _ in sfu.legs()),
            "forwardedPackets": sfu.forwarded_packets(),
            "list": listed,
        }

    def _session(self, session: CallSession, now: float) -> dict[str, Any]:
        published = []
        for track in session.tracks.values():
            layers = [self._layer(session, track.name, stream) for stream in track.streams]
            published.append({"track": track.name, "kind": track.kind, "layers": layers,
                              "bitrate": round(sum(layer["bitrate"] for layer in layers))})
        pulled = []
        for transceiver in session.transceivers:
            leg, source = transceiver.leg, transceiver.source
            if transceiver.role != "pull" or transceiver.closed or leg is None or source is None:
                continue
            stream = leg.stream
            pulled.append({"session": source.session.id, "track": source.name, "kind": source.kind,
                           "layer": stream.rid if stream is not None else None,
                           "bitrate": round(stream.bitrate) if stream is not None else 0,
                           "loss": round(leg.loss, 4), "rttMs": round(leg.rtt * 1000, 1), "packets": leg.packets})
        bandwidth = session.bandwidth()
        return {"id": session.id, "app": session.app, "label": session.label,
                "state": "connected" if session.connected_at is not None else "connecting",
                "ageSeconds": round(now - session.created, 1),
                "bandwidth": round(bandwidth) if bandwidth is not None else None,
                "published": published, "pulled": pulled}

    def _layer(self, session: CallSession, track: str, stream: Stream) -> dict[str, Any]:
        stats = stream.stats
        expected = stats.cycles + stats.max_seq - stats.base_seq + 1 if stats.received else 0
        key = (session.id, track, stream.rid or "")
        expected_before, received_before = self._received.get(key, (0, 0))
        self._received[key] = (expected, stats.received)
        interval = expected - expected_before
        lost = interval - (stats.received - received_before)
        return {"rid": stream.rid, "bitrate": round(stream.bitrate),
                "loss": round(max(0, lost) / interval, 4) if interval > 0 else 0.0,
                "jitterMs": round(1000 * stats.jitter / stats.clock_rate, 1)}


def _nodes(box: Box, sessions: int) -> list[dict[str, Any]]:
    """The boxes of the cluster as their heartbeats describe them (this one as it is now)."""
    me = box.config.node.id
    cluster = box.service("cluster")
    records: dict[str, NodeRecord] = cluster.membership.nodes if isinstance(cluster, ClusterHost) else {}
    nodes = [{"id": node, "api": record.api, "sessions": record.sessions, "draining": record.draining,
              "self": node == me} for node, record in sorted(records.items()) if node != me]
    return [{"id": me, "api": str(box.config.api.listen), "sessions": sessions, "draining": box.drain.active,
             "self": True}, *nodes]


def _turn(box: Box) -> dict[str, Any] | None:
    turn = turn_of(box)
    if turn is None:
        return None
    core, now = turn
    held = Counter(allocation.identifier for allocation in core.allocations)
    top = top_identifiers(core.usage_by_identifier(now), box.config.turn.metrics_identifiers)
    # "other" holds whatever is not in the top: the identifiers it sums may hold allocations now.
    held_other = sum(count for identifier, count in held.items() if identifier not in top or identifier == OTHER)
    identifiers = [{"identifier": identifier, "allocationsNow": held_other if identifier == OTHER else held[identifier],
                    "allocations": usage.allocations, "seconds": round(usage.seconds, 1),
                    "bytesFromClient": usage.bytes_from_client, "bytesToClient": usage.bytes_to_client}
                   for identifier, usage in top.items()]
    issuers = [{"issuer": issuer, "allocationsNow": core.quotas.held.get(issuer, 0),
                "bytesFromClient": usage.bytes_from_client, "bytesToClient": usage.bytes_to_client}
               for issuer, usage in core.usage_by_issuer(now).items()]
    return {"allocations": len(core.allocations), "identifiers": identifiers, "issuers": issuers}


def _figures(figures: Figures) -> dict[str, int]:
    return {"ingressBytes": figures.ingress_bytes, "egressBytes": figures.egress_bytes,
            "sessions": figures.sessions, "allocations": figures.allocations}

