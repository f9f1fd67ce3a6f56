"""The numbers every box derives alike from `[backbone]`, so that nothing is copied from box to box.

netconfig builds the kernel's items from them (tunnel.py, steering.py, backbone.py) and the
config's checks (backbone_checks.py) refuse a file whose numbers would not fit; both import them
from here, so config needs nothing of netconfig.

- An address's *index* is its offset in this box's overlay subnet (192.0.2.130 in 192.0.2.128/25
  is 2). Overlay addresses are unique in the backbone, so indexes are too.
- VXLAN: the kernel tells VXLAN devices apart by VNI and UDP port alone, so each peer's device
  needs its own VNI, the same at both ends: (lower index << 12) | higher index.
- WireGuard: each device listens on its own port. Box X's device toward peer P listens on
  wireguard_port + index(P) and sends to P at wireguard_port + index(X), where P's device toward
  X listens. (WireGuard picks a peer by destination address, and every misdirected packet has
  the same destination, the relay address: hence a device, with one peer, per peer box.)
- GRE needs nothing: devices are told apart by their remote address.

MTU: the tunnel's MTU is the underlay's minus the encapsulation, so a packet that fits the
tunnel fits the underlay whole; a bigger relayed packet is fragmented by the forwarding box
(or refused with ICMP "fragmentation needed" when it carries DF), never silently lost.
"""
from __future__ import annotations

import ipaddress
import re

# Bytes of encapsulation per kind and underlay family: the outer IP header (20 or 40) plus
# VXLAN: UDP 8 + VXLAN 8 + the inner Ethernet header 14; GRE: its 4-byte header (ip6gre also
# adds the 8-byte tunnel encapsulation limit option by default); WireGuard: UDP 8 + its 16-byte
# header + the 16-byte authentication tag.
OVERHEAD = {
    ("vxlan", 4): 50, ("vxlan", 6): 70,
    ("gre", 4): 24, ("gre", 6): 52,
    ("wireguard", 4): 60, ("wireguard", 6): 80,
}
# IPv6 needs 1280 on every link (RFC 8200 5); Linux turns IPv6 off on a device with less.
MIN_MTU = 1280
# VNI = (lower index << INDEX_BITS) | higher index, which must fit VXLAN's 24 bits.
INDEX_BITS = 12
MAX_INDEX = (1 << INDEX_BITS) - 1
PREFIX = "bb-"
IFNAMSIZ = 15
# A family's policy rules sit at rule_priority plus these offsets (netconfig/steering.py says
# what each does).
FROM_TUNNEL, FROM_TUNNEL_DROP, STEER, LOCAL = range(4)
RULES = LOCAL + 1


def interface_name(node: str) -> str:
    """`bb-` and the peer's node id, with what an interface name cannot hold replaced, cut to fit."""
    return (PREFIX + re.sub(r"[^0-9A-Za-z_-]", "-", node))[:IFNAMSIZ]


def index(network: ipaddress.IPv4Interface | ipaddress.IPv6Interface, address) -> int:
    """`address`'s offset in `network`'s subnet."""
    return int(ipaddress.ip_address(address)) - int(network.network.network_address)


def vni(a: int, b: int) -> int:
    low, high = sorted((a, b))
    return (low << INDEX_BITS) | high


def tunnel_mtu(kind: str, family: int, underlay_mtu: int) -> int:
    return underlay_mtu - OVERHEAD[(kind, family)]
