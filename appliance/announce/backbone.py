"""The health agent's watch over the backbone: is each peer reachable through its tunnel?

Each round pings every peer's overlay address through its tunnel (echo.py). With the agent's
rise/fall counts (no hold-down: dropping a dead peer's slice must not wait), a peer that stops
answering is marked down and its slice's packets are dropped here (netconfig/peer_state.py
swaps its table's route for a blackhole); once it answers again they are forwarded again.
The round's report carries each peer's state and the kernel's counters for `appliance status`.
"""
from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass

from pyroute2.netlink.exceptions import NetlinkError

from appliance.config import Config
from appliance.logs import get_logger
from netconfig.apply import ApplyError, read_state
from netconfig.backbone import PeerLink, links
from netconfig.peer_state import PeerCounters, read_counters, set_down

from .echo import echo
from .hysteresis import Hysteresis, Verdict

log = get_logger("backbone")


@dataclass
class PeerHealth:
    link: PeerLink
    hysteresis: Hysteresis
    detail: str = "not probed yet"

    def describe(self) -> str:
        h = self.hysteresis
        if h.announced:
            return f"up (failing {h.fails}/{h.fall})" if h.fails else "up"
        return f"down (answering {h.passes}/{h.rise})" if h.passes else "down"


class BackboneWatch:
    def __init__(self, config: Config):
        self.peers: dict[str, PeerHealth] = {}
        self.reconfigure(config)
        self.ident = (os.getpid() ^ random.getrandbits(16)) & 0xFFFF
        self.sequence = 0
        self.counters_error: str | None = None  # logged once, not every round

    def reconfigure(self, config: Config) -> None:
        """Watch the peers `config` has (a reload may change them): a peer whose link is unchanged keeps
        its health and counts, under the new rise and fall."""
        self.config = config
        announce = config.announce
        # Start from what the kernel was last told: a restarted agent does not flip a peer at once.
        down = read_state(config.net.state_file).down
        peers = {}
        for link in links(config):
            kept = self.peers.get(link.peer.node)
            if kept is not None and kept.link == link:
                kept.hysteresis.retune(announce.rise, announce.fall, 0.0)
                peers[link.peer.node] = kept
            else:
                peers[link.peer.node] = PeerHealth(link, Hysteresis(announce.rise, announce.fall, 0.0,
                                                                    announced=link.peer.node not in down))
        self.peers = peers

    async def round(self, now: float) -> dict:
        """Probe every peer, switch those whose state changed; the report for `appliance status`."""
        self.sequence = (self.sequence + 1) & 0xFFFF
        timeout = self.config.announce.timeout
        results = await asyncio.gather(*(echo(str(p.link.peer.overlay), p.link.interface, timeout, self.ident,
                                              self.sequence) for p in self.peers.values()))
        for peer, failure in zip(self.peers.values(), results):
            peer.detail = failure or "answers"
            peer.hysteresis.observe(Verdict.FAIL if failure else Verdict.PASS, now)
        await asyncio.to_thread(self._switch)
        counters = {c.node: c for c in await asyncio.to_thread(self._counters)}
        return {node: self._report(peer, counters.get(node)) for node, peer in self.peers.items()}

    def _counters(self) -> list[PeerCounters]:
        try:
            counters = read_counters(self.config)
        except (OSError, NetlinkError) as e:
            if str(e) != self.counters_error:
                log.warning("cannot read the backbone's counters", reason=str(e))
            self.counters_error = str(e)
            return []
        self.counters_error = None
        return counters

    def _switch(self) -> None:
        """Make the kernel drop the slices of the peers that are down, and only those; tried again
        every round, so a refused change or a later `net apply` is caught up with."""
        recorded = read_state(self.config.net.state_file).down
        for node, peer in self.peers.items():
            down = not peer.hysteresis.announced
            if down == (node in recorded):
                continue
            try:
                changes = set_down(self.config, node, down)
            except (ApplyError, OSError, NetlinkError) as e:
                log.error("cannot switch the peer's slice", peer=node, down=down, reason=str(e))
                continue
            if changes:
                log.warning("peer down: dropping its slice" if down else "peer up: forwarding its slice",
                            peer=node, probe=peer.detail)

    @staticmethod
    def _report(peer: PeerHealth, counters: PeerCounters | None) -> dict:
        report = {"up": peer.hysteresis.announced, "state": peer.describe(), "probe": peer.detail,
                  "interface": peer.link.interface}
        if counters is not None:
            report |= {"forwarding": counters.forwarding, "tunnel_tx_packets": counters.tx_packets,
                       "landed": counters.landed, "forwarded": counters.forwarded, "dropped": counters.dropped}
        return report
