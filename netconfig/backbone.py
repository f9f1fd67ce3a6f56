"""The backbone's wanted state: what `[backbone]` and the relay port slices ask the kernel to hold.

Each box owns a slice of the relay ports on the shared anycast relay address (`[turn]
relay_ports`; the peers' slices are in `[[backbone.peers]] relay_ports`). A packet for a peer's
slice that lands here is steered by policy rules into the peer's routing table, whose default
route goes through the peer's tunnel (steering.py has the rules). While the peer's backbone is
down (the health agent decides, peer_state.py switches), that route is a blackhole instead: the
slice's packets are dropped here and counted, never sent anywhere else.

Per peer: a tunnel (tunnel.py), this box's overlay address on it with a host route to the
peer's, a table `table_base + index` (the peer's overlay address's index in the backbone subnet),
rules, and the counting rules in nftables (nft.py). For the box: the moved `local` lookup,
forwarding on, and the conntrack exemption of its own slice.
"""
from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass

from appliance.config import BackboneConfig, BackbonePeerConfig, Config
from appliance.config.backbone_numbers import (
    FROM_TUNNEL, FROM_TUNNEL_DROP, LOCAL, STEER, index, interface_name, tunnel_mtu, vni,
)

from .items import DEFAULT_METRIC, LOCAL_TABLE, Address, LinkUp, Route
from .nft import NftRule, NftTable
from .steering import PROTOCOLS, LocalRuleMoved, Rule
from .sysctl import Sysctl
from .tunnel import Tunnel, link_type, public_key

DEFAULT_ROUTE = {4: "0.0.0.0/0", 6: "::/0"}
HOST_BITS = {4: 32, 6: 128}
FORWARDING = {4: "net/ipv4/ip_forward", 6: "net/ipv6/conf/all/forwarding"}
# Loose mode: a relayed packet's source is an Internet address that this box reaches through its
# uplink, not the tunnel it came in by. The kernel uses the larger of the device's and `all`'s
# value, so 2 on the tunnel is loose even where `all` is strict (1).
RP_FILTER_LOOSE = "2"


@dataclass(frozen=True)
class PeerLink:
    """One peer and the numbers this box derives for it."""

    peer: BackbonePeerConfig
    interface: str
    table: int
    index: int


def relay_addresses(config: Config) -> dict[int, ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The relay address of each family that TURN allocates on: the addresses to steer."""
    return {address.version: address for address in config.turn.relay_addresses} if config.turn.enabled else {}


def links(config: Config) -> list[PeerLink]:
    backbone = config.backbone
    if backbone is None:
        return []
    out = []
    for peer in backbone.peers:
        position = index(backbone.overlay, peer.overlay)
        out.append(PeerLink(peer, interface_name(peer.node), backbone.table_base + position, position))
    return out


def link_of(config: Config, node: str) -> PeerLink | None:
    return next((link for link in links(config) if link.peer.node == node), None)


def tunnel(config: Config, link: PeerLink) -> Tunnel:
    backbone = config.backbone
    if backbone is None:  # links() makes no PeerLink without [backbone]
        raise ValueError(f"no [backbone] for the link to {link.peer.node}")
    family = backbone.underlay.version
    common = Tunnel(link.interface, link_type(backbone.kind, family), str(link.peer.underlay), str(backbone.underlay),
                    tunnel_mtu(backbone.kind, family, backbone.underlay_mtu))
    own = index(backbone.overlay, backbone.overlay.ip)
    if backbone.kind == "vxlan":
        return dataclasses.replace(common, vni=vni(own, link.index), port=backbone.vxlan_port)
    if backbone.kind == "wireguard":
        if backbone.private_key is None:  # the config's checks refuse kind = "wireguard" without one
            raise ValueError("backbone.private_key is needed for kind = \"wireguard\"")
        return dataclasses.replace(common, local=None, port=backbone.wireguard_port + link.index,
                                   remote_port=backbone.wireguard_port + own,
                                   public_key=public_key(backbone.private_key), peer_key=link.peer.public_key)
    return common


def peer_routes(config: Config, link: PeerLink, down: bool) -> set[Route]:
    """The peer table's default routes: through the tunnel, or a blackhole while the peer is down."""
    routes = set()
    gateways = link.peer.overlays
    for family in relay_addresses(config):
        to, metric = DEFAULT_ROUTE[family], DEFAULT_METRIC[family]
        if down:
            routes.add(Route(to, metric, table=link.table, type="blackhole"))
        else:
            routes.add(Route(to, metric, str(gateways[family]), link.interface, link.table))
    return routes


def wanted_backbone(config: Config, down: frozenset[str] = frozenset()) -> set:
    """Everything `[backbone]` asks for, with the peers in `down` dropping their slices."""
    backbone = config.backbone
    if backbone is None:
        return set()
    relays = relay_addresses(config)
    first = backbone.rule_priority
    items: set = set()
    for family, relay in relays.items():
        items |= {Rule(family, first + LOCAL, LOCAL_TABLE), LocalRuleMoved(family), Sysctl(FORWARDING[family], "1")}
        if backbone.notrack:
            items |= _counted(config.turn.relay_ports, relay, "prerouting", notrack=True)
            items |= _counted(config.turn.relay_ports, relay, "output", notrack=True)
    if backbone.notrack and relays:
        items.add(NftTable())
    for link in links(config):
        items |= _peer(config, backbone, link, relays, down)
    return items


def _peer(config: Config, backbone: BackboneConfig, link: PeerLink, relays: dict, down: frozenset[str]) -> set:
    name, first = link.interface, backbone.rule_priority
    items: set = {tunnel(config, link), LinkUp(name), Sysctl(f"net/ipv4/conf/{name}/rp_filter", RP_FILTER_LOOSE)}
    theirs = link.peer.overlays
    for family, ours in backbone.overlays.items():
        items.add(Address(name, f"{ours.ip}/{HOST_BITS[family]}"))
        if family in theirs:
            items.add(Route(f"{theirs[family]}/{HOST_BITS[family]}", DEFAULT_METRIC[family], None, name))
    slice_ = link.peer.relay_ports
    for family, relay in relays.items():
        items.add(Rule(family, first + FROM_TUNNEL, LOCAL_TABLE, iif=name))
        items.add(Rule(family, first + FROM_TUNNEL_DROP, action="blackhole", iif=name))
        for protocol in PROTOCOLS:
            items.add(Rule(family, first + STEER, link.table, to=f"{relay}/{HOST_BITS[family]}", protocol=protocol,
                           ports=str(slice_)))
        if backbone.notrack:
            items |= _counted(slice_, relay, "prerouting", notrack=True)
            items |= _counted(slice_, relay, "forward", oif=name)
    return items | peer_routes(config, link, link.peer.node in down)


def _counted(ports, relay, chain: str, oif: str | None = None, notrack: bool = False) -> set[NftRule]:
    return {NftRule(chain, relay.version, str(relay), protocol, ports.first, ports.last, oif, notrack)
            for protocol in PROTOCOLS}
