"""Several boxes of a cluster in memory: each an Sfu of the SFU lab (tests/unit/sfu/harness.py)
with its Trunks and a real TrunkPort (real SRTP on the trunk), joined by an in-memory backbone that
carries datagrams between trunk ports when `pump` runs, and a stand-in for the store: each box's
writes reach every box's tracks directory at once, as the watch delivers them, and requests between
boxes are answered on `pump`. The boxes share one clock.

    cluster = Cluster("a", "b")
    a, b = cluster["a"], cluster["b"]
    pub, sub = a.endpoint("pub"), b.endpoint("sub")
    pub.push(video("cam"))
    sub.pull(pub, "cam")                   # b asks a for a trunk
    cluster.pump()
    pub.sender("cam").send(key=True)
    cluster.pump()                         # a -> b over the trunk, b -> sub
"""
from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

from appliance.cluster.channels import TrunkChannels
from appliance.cluster.failover import Checkpoints
from appliance.cluster.handover import Failover, Handover
from appliance.cluster.nodes import Membership, NodeRecord
from appliance.cluster.records import SessionRecord
from appliance.cluster.seal import Sealer
from appliance.cluster.store import MEDIA, SESSIONS, TRACKS, Bucket
from appliance.cluster.trunk_port import TrunkPort
from appliance.cluster.trunks import Trunks

from ..sfu.harness import Endpoint, Lab

SECRET = "the cluster secret of the lab"
MAX_UDP = 65507  # the largest UDP payload over IPv4
STORE_SEALER = Sealer(SECRET, "store")


class Wire:
    """A trunk port's socket on the lab's backbone: what it sends waits for `pump`."""

    def __init__(self, cluster: Cluster, addr: tuple[str, int]) -> None:
        self.cluster = cluster
        self.addr = addr

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) > MAX_UDP:
            raise OSError(errno.EMSGSIZE, "Message too long")  # as a UDP socket refuses it
        self.cluster.in_flight.append((self.addr, addr, data))


class Box:
    def __init__(self, cluster: Cluster, name: str, number: int, fanout: int) -> None:
        self.cluster = cluster
        self.name = name
        self.lab = Lab(now=cluster.now)
        self.addr = (f"192.0.2.{number + 1}", 3480)
        self.record = NodeRecord(name, f"192.0.2.{number + 1}:8080", self.addr, epoch=f"epoch-{name}")
        self.membership = Membership(name, heartbeat=1.0)
        self.port = TrunkPort(name, self.record.epoch, SECRET)
        self.port.sink = Wire(cluster, self.addr)
        self.writes: list[tuple[str, str, bytes | None]] = []
        self.trunks = Trunks(name, self.port, self.lab.sfu, self.membership, fanout, self.ask, self.write,
                             STORE_SEALER)
        self.port.handler = self.trunks
        self.lab.sfu.remote = self.trunks
        self.reinjected: list[tuple[Any, bytes, Any]] = []  # what the handover gave the media port back
        # The wall clock: the lab's, at some date.
        self.checkpoints = Checkpoints(self.lab.sfu, cluster.sessions, STORE_SEALER, self.write,
                                       lambda: 1.8e9 + cluster.now)
        failover = Failover(cluster.tell, lambda node: [s for s, r in cluster.sessions.items() if r.owner == node],
                            lambda: list(self.membership.nodes), lambda addr: "udp")
        self.handover = Handover(name, self.lab.sfu, self.trunks, cluster.session_by_ufrag, self.checkpoints.by_path,
                                 self.ask, lambda local, data, addr, now: self.reinjected.append((local, data, addr)),
                                 self.membership.alive, self.checkpoints.saved, failover, lambda: 1.8e9 + cluster.now)
        self.channels = TrunkChannels(name, self.lab.sfu.channels, self.trunks, self.port, self.lab.sfu.sessions)
        self.trunks.channels = self.lab.sfu.channels.remote = self.channels
        self.alive = True

    def handle(self, message: dict) -> dict:
        """A request from another box, as ClusterService dispatches it."""
        op = message.get("op")
        if op == "handover":
            return self.handover.give(message, self.cluster.now)
        if op == "taken":
            return self.handover.taken(message, self.cluster.now)
        if op in ("subscribe_channel", "channel_closed"):
            return self.channels.handle(message)
        return self.trunks.handle(message, self.cluster.now)

    def endpoint(self, name: str, **options: Any) -> Endpoint:
        return self.lab.endpoint(name, **options)

    def ask(self, node: str, message: dict, answered: Callable[[dict | None, float], None]) -> None:
        self.cluster.requests.append((node, message, answered))

    def write(self, bucket: Bucket, key: str, value: bytes | None) -> None:
        self.writes.append((bucket.name, key, value))
        if bucket is SESSIONS and not self.cluster.sessions_stalled:
            old = self.cluster.sessions.pop(key, None)
            new = None if value is None else SessionRecord.decode(value)
            if new is not None:
                self.cluster.sessions[key] = new
            for box in self.cluster.boxes.values():
                box.checkpoints.session_record(key, old, new)
            for box in self.cluster.boxes.values():
                session = box.lab.sfu.sessions.get(key)
                if new is not None and box.alive and session is not None and new.owner != box.name and (
                        new.generation, new.owner) > (session.generation, box.name):
                    self.cluster.outranked.append((box.name, key, new.owner))
        if bucket is MEDIA:
            for box in self.cluster.boxes.values():
                if box.alive:
                    box.checkpoints.media_record(key, value)
        if bucket is TRACKS and not self.cluster.tracks_stalled:
            for box in self.cluster.boxes.values():
                if box.alive:
                    box.trunks.track_record(key, value, self.cluster.now)

    @property
    def sent_on_trunks(self) -> int:
        return sum(peer.counters.packets_out for peer in self.port.peers.values())


class Cluster:
    def __init__(self, *names: str, fanout: int = 8) -> None:
        self.now = 0.0
        self.in_flight: list[tuple[tuple[str, int], tuple[str, int], bytes]] = []
        self.requests: list[tuple[str, dict, Callable[[dict | None, float], None]]] = []
        self.sessions: dict[str, SessionRecord] = {}  # the sessions bucket
        # Boxes that get no request (cut off, but not yet gone for their membership).
        self.silent: set[str] = set()
        self.words: list[dict] = []  # failover words said, heard by every box on `pump`
        # Writes to the tracks or sessions bucket reach nobody (its leader died with a box: a new one is elected).
        self.tracks_stalled = False
        self.sessions_stalled = False
        # Boxes whose session another box's later write outranked (ClusterService._outranked): told on `pump`.
        self.outranked: list[tuple[str, str, str]] = []
        self.boxes = {name: Box(self, name, i, fanout) for i, name in enumerate(names)}
        for box in self.boxes.values():
            for other in self.boxes.values():
                box.membership.heard(other.name, other.record.encode(), self.now)
        # Datagrams to drop on their way, by a test: a predicate on (from box, to box, datagram).
        self.lose: Callable[[str, str, bytes], bool] = lambda src, dst, data: False

    def tell(self, word: dict) -> None:
        """Word over NATS core: every live box hears it on `pump` (as ClusterService._failover_word)."""
        self.words.append(word)

    def session_by_ufrag(self, ufrag: str) -> tuple[str, str] | None:
        tag = STORE_SEALER.tag(ufrag, "ufrag")
        return next(((sid, r.owner) for sid, r in self.sessions.items() if r.ufrag == tag), None)

    def __getitem__(self, name: str) -> Box:
        return self.boxes[name]

    def _box_at(self, addr: tuple[str, int]) -> Box | None:
        return next((b for b in self.boxes.values() if b.addr == addr and b.alive), None)

    def pump(self, rounds: int = 50) -> None:
        """Deliver requests and datagrams until none are left (bounded)."""
        for _ in range(rounds):
            if not self.in_flight and not self.requests and not self.outranked and not self.words:
                return
            words, self.words = self.words, []
            for word in words:
                for box in self.boxes.values():
                    if box.alive and "lost" in word:
                        box.handover.box_lost(word["lost"], self.now)
                    elif box.alive:
                        box.handover.carried(word["carried"], word["by"], word["generation"], self.now)
            outranked, self.outranked = self.outranked, []
            for name, session_id, owner in outranked:
                self.boxes[name].handover.lost(session_id, owner, self.now)
            requests, self.requests = self.requests, []
            for node, message, answered in requests:
                target = self.boxes.get(node)
                answers = target is not None and target.alive and node not in self.silent
                reply = target.handle(message) if answers else None
                answered(reply, self.now)
            datagrams, self.in_flight = self.in_flight, []
            for src, dst, data in datagrams:
                sender, receiver = self._box_at(src), self._box_at(dst)
                if receiver is None or self.lose(sender.name if sender else "?", receiver.name, data):
                    continue
                receiver.port.datagram_received(data, src, self.now)
        raise AssertionError("the lab's backbone did not settle")

    def advance(self, seconds: float) -> float:
        self.now += seconds
        for box in self.boxes.values():
            box.lab.at(self.now)
        return self.now

    def kill(self, name: str) -> None:
        """A box dies: the others hear that it is gone (its heartbeats stopped)."""
        dead = self.boxes[name]
        dead.alive = False
        for box in self.boxes.values():
            if box.alive:
                box.membership.heard(name, None, self.now)
                box.trunks.node_gone(name, self.now)
