"""Backbone tunnels: one point-to-point device per peer box, and the numbers both ends derive alike.

A device per peer, rather than one segment for all, gives each peer its own interface counters
(what was forwarded to it) and a route that names it. Both ends compute every shared number
(indexes, VNIs, WireGuard ports, the MTU) from the configuration they both hold, as
appliance/config/backbone_numbers.py says, so nothing has to be copied from box to box.
"""
from __future__ import annotations

import base64
import dataclasses
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .items import ItemKind

# Kept up so that a quiet peer's NAT or stateful firewall on the underlay keeps the path open.
WIREGUARD_KEEPALIVE = 25


@dataclass(frozen=True, order=True)
class Tunnel(ItemKind):
    interface: str
    type: str  # the kernel's link kind: vxlan, gre, ip6gre, wireguard
    remote: str  # the peer's underlay address
    local: str | None  # this box's underlay address (WireGuard listens on every address: None)
    mtu: int
    vni: int | None = None  # vxlan
    port: int | None = None  # vxlan: the UDP port, both ways; wireguard: this end's listen port
    remote_port: int | None = None  # wireguard: the peer's listen port
    public_key: str | None = None  # wireguard: this end's (the private key stays in the config)
    peer_key: str | None = None  # wireguard: the peer's public key

    kind = "tunnel"
    rank = 0

    @property
    def key(self) -> tuple:
        return (self.kind, self.interface)

    @property
    def creates(self) -> str:
        return self.interface

    @property
    def needs(self) -> set[str]:
        return set()

    def __str__(self) -> str:
        detail = f" vni {self.vni} port {self.port}" if self.type == "vxlan" else ""
        if self.type == "wireguard":
            detail = f" port {self.port} to port {self.remote_port}"
        return f"tunnel {self.interface} {self.type} {self.local or 'any'} -> {self.remote}{detail} mtu {self.mtu}"


def link_type(kind: str, family: int) -> str:
    """The kernel's link kind for a configured tunnel kind over an underlay of `family`."""
    return "ip6gre" if kind == "gre" and family == 6 else kind


def public_key(private_key: str) -> str:
    """The WireGuard public key (base64) of a private key (base64), as `wg pubkey` computes it."""
    raw = X25519PrivateKey.from_private_bytes(base64.b64decode(private_key, validate=True))
    return base64.b64encode(raw.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


TYPES = ("vxlan", "gre", "ip6gre", "wireguard")
# GRE's outer TTL, fixed rather than copied from each inner packet.
GRE_TTL = 64
ENDPOINTS = {"vxlan": ("IFLA_VXLAN_LOCAL", "IFLA_VXLAN_GROUP"), "gre": ("IFLA_GRE_LOCAL", "IFLA_GRE_REMOTE"),
             "ip6gre": ("IFLA_IP6GRE_LOCAL", "IFLA_IP6GRE_REMOTE")}


class TunnelKernel:
    """Tunnel devices through netlink: rtnetlink for the links, WireGuard's generic netlink family
    for its keys and peer. `private_keys` maps a public key to its private key (from the config),
    so that items and the state file never hold a secret."""

    def __init__(self, links, private_keys: dict[str, str], wireguard_factory=None):
        self.links = links
        self.private_keys = private_keys
        self._wireguard = wireguard_factory

    def read(self, scope: set) -> set[Tunnel]:
        """The tunnels named in scope: a WireGuard device of someone else's is not even asked."""
        names = {item.interface for item in scope if isinstance(item, Tunnel)}
        out = set()
        for link in self.links.ipr.get_links() if names else ():
            info = link.get("IFLA_LINKINFO")
            kind = info.get("IFLA_INFO_KIND") if info else None
            if kind in TYPES and link.get("IFLA_IFNAME") in names:
                out.add(self._tunnel(link, kind, info.get("IFLA_INFO_DATA")))
        return out

    def _tunnel(self, link, kind: str, data) -> Tunnel:
        name, mtu = link.get("IFLA_IFNAME"), link.get("IFLA_MTU")
        if kind == "wireguard":
            return self._wireguard_tunnel(name, mtu)
        local, remote = ENDPOINTS[kind]
        # VXLAN keeps IPv6 endpoints in attributes of their own.
        six = "6" if kind == "vxlan" and data.get(local) is None else ""
        # A device without a remote reads as "" (as a WireGuard device without its peer does).
        tunnel = Tunnel(name, kind, _text(data.get(remote + six)) or "", _text(data.get(local + six)), mtu)
        if kind == "vxlan":
            return dataclasses.replace(tunnel, vni=data.get("IFLA_VXLAN_ID"), port=data.get("IFLA_VXLAN_PORT"))
        return tunnel

    def _wireguard_tunnel(self, name: str, mtu: int) -> Tunnel:
        with self._open_wireguard() as wg:
            device = wg.info(name)[0]
        peers = device.get_attr("WGDEVICE_A_PEERS") or []
        peer = peers[0] if len(peers) == 1 else None
        endpoint = peer.get_attr("WGPEER_A_ENDPOINT") if peer else None
        return Tunnel(name, "wireguard", endpoint["addr"] if endpoint else "", None, mtu,
                      port=device.get_attr("WGDEVICE_A_LISTEN_PORT"),
                      remote_port=endpoint["port"] if endpoint else None,
                      public_key=_text(device.get_attr("WGDEVICE_A_PUBLIC_KEY")),
                      peer_key=_text(peer.get_attr("WGPEER_A_PUBLIC_KEY")) if peer else None)

    def add(self, item: Tunnel) -> None:
        ipr = self.links.ipr
        spec = {"ifname": item.interface, "kind": item.type, "mtu": item.mtu}
        if item.type == "vxlan":
            six = "6" if ":" in item.remote else ""
            # No learning: the one remote is configured, nothing is to be learnt from the wire.
            spec |= {"vxlan_id": item.vni, "vxlan_port": item.port, "vxlan_learning": 0,
                     f"vxlan_local{six}": item.local, f"vxlan_group{six}": item.remote}
        elif item.type in ("gre", "ip6gre"):
            spec |= {f"{item.type}_local": item.local, f"{item.type}_remote": item.remote, f"{item.type}_ttl": GRE_TTL}
        ipr.link("add", **spec)
        self.links.forget()
        if item.type == "wireguard":
            try:
                self._configure_wireguard(item)
            except Exception:
                ipr.link("del", ifname=item.interface)  # nothing half-made is left behind
                raise

    def _configure_wireguard(self, item: Tunnel) -> None:
        peer = {"public_key": item.peer_key, "endpoint_addr": item.remote, "endpoint_port": item.remote_port,
                # Everything goes to this device's one peer: the routes say what.
                "allowed_ips": ["0.0.0.0/0", "::/0"], "persistent_keepalive": WIREGUARD_KEEPALIVE}
        if item.public_key is None:  # backbone.py gives every WireGuard tunnel this end's public key
            raise ValueError(f"{item}: no public key to find this end's private key by")
        with self._open_wireguard() as wg:
            wg.set(item.interface, private_key=self.private_keys[item.public_key], listen_port=item.port, peer=peer)

    def remove(self, item: Tunnel) -> None:
        self.links.ipr.link("del", index=self.links.index(item.interface))
        self.links.forget()

    def _open_wireguard(self):
        # Opened only for WireGuard devices: on a kernel without WireGuard the family does not exist.
        if self._wireguard is None:
            from pyroute2 import WireGuard

            return WireGuard()
        return self._wireguard()


def _text(value) -> str | None:
    return value.decode() if isinstance(value, bytes) else value
