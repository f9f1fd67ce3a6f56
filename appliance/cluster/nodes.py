"""Who is in the cluster: each box's record in the nodes bucket (written again every heartbeat) and
the membership a box keeps from watching it. A record that stops being rewritten is a box gone:
NATS does not announce a key-value entry's expiry, so the membership times records out itself, by
when it last saw each one change."""
from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass, field

from ..logs import get_logger

log = get_logger("cluster")

# A box missing this many heartbeats in a row is gone (the nodes bucket's TTL is the same bound).
MISSED_HEARTBEATS = 3
DEPARTED_KEPT = 64  # records of boxes that left, kept for what still names them (a track's old root)


@dataclass(frozen=True)
class NodeRecord:
    id: str
    api: str  # host:port where other boxes send forwarded API requests
    trunk: tuple[str, int]  # where this box sends and receives media trunks
    # Changes at every start: trunk keys are derived per (sender, epoch, receiver), so a restarted
    # box never reuses the SRTP keystream of its previous life.
    epoch: str = field(default_factory=lambda: secrets.token_hex(8))
    sessions: int = 0  # load, for choosing where to relay
    draining: bool = False

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> NodeRecord:
        raw = json.loads(data)
        raw["trunk"] = tuple(raw["trunk"])
        return cls(**raw)


class Membership:
    """The boxes this one hears from. Sans-I/O: fed the watch's entries and `now`."""

    def __init__(self, me: str, heartbeat: float) -> None:
        self.me = me
        self.timeout = heartbeat * MISSED_HEARTBEATS
        self.nodes: dict[str, NodeRecord] = {}
        self.departed: dict[str, NodeRecord] = {}  # the last record of each box that left, latest last
        self._seen: dict[str, float] = {}

    def heard(self, node_id: str, data: bytes | None, now: float) -> NodeRecord | None:
        """A change of a node's record; the record (None when it was deleted or does not parse)."""
        if data is None:
            self._forget(node_id, "left")
            return None
        try:
            record = NodeRecord.decode(data)
        except (ValueError, TypeError, KeyError) as e:
            log.warning("unreadable node record", node=node_id, reason=str(e))
            return None
        if node_id not in self.nodes:
            log.info("node joined", node=node_id, api=record.api)
        self.nodes[node_id] = record
        self.departed.pop(node_id, None)
        self._seen[node_id] = now
        return record

    def expire(self, now: float) -> list[str]:
        """Forget the boxes whose heartbeats stopped; their ids."""
        gone = [node for node, seen in self._seen.items() if now - seen > self.timeout and node != self.me]
        for node in gone:
            self._forget(node, "heartbeats stopped")
        return gone

    def _forget(self, node_id: str, reason: str) -> None:
        record = self.nodes.pop(node_id, None)
        if record is not None:
            log.info("node gone", node=node_id, reason=reason)
            self.departed[node_id] = record
            if len(self.departed) > DEPARTED_KEPT:
                del self.departed[next(iter(self.departed))]
        self._seen.pop(node_id, None)

    def get(self, node_id: str) -> NodeRecord | None:
        return self.nodes.get(node_id)

    def alive(self, node_id: str) -> bool:
        return node_id in self.nodes
