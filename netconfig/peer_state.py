"""A backbone peer's slice: switched between forwarded and dropped, and what the kernel counted.

The health agent calls `set_down` when a peer's backbone health changes. It swaps only the
peer table's default routes (through the tunnel, or a blackhole), only when `net apply` made
them, and records the peer as down in netconfig's state file, so that a later `net apply` wants
the same. A peer that `net apply` has not set up is left alone.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyroute2 import IPRoute

from appliance.config import Config

from .apply import State, kernel_for, locked, read_state, record, run_changes
from .backbone import PeerLink, link_of, links, peer_routes, relay_addresses
from .nft import NftKernel, NftRule
from .plan import Change
from .kernel import ROUTE_TYPES
from .steering import FAMILY


def set_down(config: Config, node: str, down: bool) -> list[Change]:
    """Drop (down) or forward again the slice of peer `node`; the changes made. Raises ApplyError,
    leaving the kernel as it was, when the kernel refuses."""
    path = config.net.state_file
    with locked(path):
        switch = switching(config, read_state(path), node, down)
        if switch is None:
            return []
        with IPRoute() as ipr:
            kernel = kernel_for(config, ipr)
            run_changes(kernel, switch.changes)
            record(config, kernel, switch.changes, switch.after.owned, switch.after.down)
    return switch.changes


@dataclass(frozen=True)
class Switch:
    changes: list[Change]
    after: State


def switching(config: Config, state: State, node: str, down: bool) -> Switch | None:
    """The route swap that makes peer `node` down or up, and the state it leaves; None when
    netconfig did not set the peer up (not in the config, or `net apply` has not made its routes)."""
    link = link_of(config, node)
    if link is None:
        return None
    now, then = peer_routes(config, link, node in state.down), peer_routes(config, link, down)
    if not now <= state.owned:
        return None
    changes = [Change("remove", item) for item in now - then] + [Change("add", item) for item in then - now]
    return Switch(changes, State((state.owned - now) | then, state.down - {node} | ({node} if down else set())))


@dataclass(frozen=True)
class PeerCounters:
    """What the kernel counted for one peer: its tunnel's interface counters, and (with
    `notrack`) the packets of its slice that landed here and those forwarded to it."""

    node: str
    interface: str
    forwarding: bool | None  # the peer table's route: through the tunnel, a blackhole, or not there
    tx_packets: int | None = None
    tx_bytes: int | None = None
    rx_packets: int | None = None
    landed: int | None = None
    forwarded: int | None = None

    @property
    def dropped(self) -> int | None:
        """Packets of the slice that landed here and were not forwarded (while the peer was down)."""
        return None if self.landed is None or self.forwarded is None else self.landed - self.forwarded


def read_counters(config: Config) -> list[PeerCounters]:
    """Each peer's counters, read from this network namespace (nothing is changed)."""
    peer_links = links(config)
    if config.backbone is None or not peer_links:
        return []
    families = relay_addresses(config)
    slices = NftKernel().counters() if config.backbone.notrack and families else {}
    with IPRoute() as ipr:
        stats = {link.get("IFLA_IFNAME"): link.get("IFLA_STATS64") for link in ipr.get_links()}
        return [_counters(ipr, link, stats.get(link.interface), slices, families) for link in peer_links]


def _counters(ipr: IPRoute, link: PeerLink, stats, slices: dict[NftRule, int], families) -> PeerCounters:
    types = {ROUTE_TYPES.get(route["type"]) for family in families
             for route in ipr.get_routes(family=FAMILY[family], table=link.table) if not route["dst_len"]}
    forwarding = True if types == {"unicast"} else False if "blackhole" in types else None
    ports = link.peer.relay_ports

    def total(chain: str) -> int | None:
        counts = [n for rule, n in slices.items() if rule.chain == chain and (rule.first, rule.last) == (ports.first, ports.last)]
        return sum(counts) if counts else None

    tx_packets, tx_bytes, rx_packets = ((stats["tx_packets"], stats["tx_bytes"], stats["rx_packets"]) if stats
                                        else (None, None, None))
    return PeerCounters(link.peer.node, link.interface, forwarding, tx_packets, tx_bytes, rx_packets,
                        landed=total("prerouting"), forwarded=total("forward"))
