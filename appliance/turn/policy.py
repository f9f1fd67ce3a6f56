"""Which peer addresses a relay may reach: default-deny for every non-public range.

A TURN relay is an open door into whatever network the box sits in, so peers in
loopback, private, link-local (cloud metadata), multicast, documentation and reserved
space are refused, as are the box's own addresses. IPv6 spellings of IPv4 addresses
(IPv4-mapped ::ffff:a.b.c.d, SIIT ::ffff:0:a.b.c.d, IPv4-compatible ::a.b.c.d and
NAT64 64:ff9b::a.b.c.d) are turned back into the IPv4 address before any check:
coturn's CVE-2020-26262 and CVE-2026-27624 were bypasses through such spellings.
An allow-list opens ranges on purpose; it is matched against the same canonical address.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# (prefix, why), most specific first so the reason given is the most telling one.
DENIED_IPV4 = (
    ("169.254.169.254/32", "cloud metadata"),
    ("255.255.255.255/32", "broadcast"),
    ("0.0.0.0/8", "unspecified / this network"),
    ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"),
    ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"),
    ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
)
DENIED_IPV6 = (
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("64:ff9b:1::/48", "local-use IPv4/IPv6 translation"),
    ("100::/64", "discard-only"),
    ("2001::/32", "Teredo"),
    ("2001:2::/48", "benchmarking"),
    ("2001:10::/28", "ORCHID"),
    ("2001:20::/28", "ORCHIDv2"),
    ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"),
    ("3fff::/20", "documentation"),
    ("5f00::/16", "SRv6 SIDs"),
    ("fc00::/7", "unique local (private)"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("ff00::/8", "multicast"),
    # Only 2000::/3 is global unicast; whatever else is left is reserved.
    ("::/3", "reserved"),
    ("4000::/2", "reserved"),
    ("8000::/1", "reserved"),
)

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIIT = ipaddress.IPv6Network("::ffff:0:0:0/96")
_LOW_32 = 0xFFFFFFFF


def canonical(address: IPAddress) -> IPAddress:
    """The address with any IPv6 spelling of an IPv4 address turned into that IPv4 address."""
    if address.version == 4:
        return address
    mapped = address.ipv4_mapped
    if mapped is not None:
        return mapped
    value = int(address)
    embedded = value >> 32 == 0 and value > 1  # IPv4-compatible ::a.b.c.d; :: and ::1 are themselves
    if embedded or address in _NAT64 or address in _SIIT:
        return ipaddress.IPv4Address(value & _LOW_32)
    return address


def _table(rows: Iterable[tuple[str, str]]) -> list[tuple[int, int, str]]:
    out = []
    for prefix, why in rows:
        network = ipaddress.ip_network(prefix)
        out.append((int(network.network_address), int(network.netmask), why))
    return out


class PeerPolicy:
    """Decides whether a peer address may be relayed to.

    `allow` lists networks opened on purpose (config `turn.allow_peers`); `own`
    lists the box's own addresses (listeners, relay and anycast addresses), refused
    unless allowed on purpose (the loopback lab relays to peers on the box itself).
    """

    def __init__(self, allow: Iterable[IPNetwork] = (), own: Iterable[IPAddress] = ()) -> None:
        self._allow = tuple(allow)
        self._own = frozenset(canonical(ipaddress.ip_address(a)) for a in own)
        self._denied = {4: _table(DENIED_IPV4), 6: _table(DENIED_IPV6)}

    def refusal(self, host: str | IPAddress) -> str | None:
        """Why a peer at `host` is refused, or None when it may be relayed to."""
        try:
            address = canonical(ipaddress.ip_address(host))
        except ValueError:
            return "not an IP address"
        if any(address in network for network in self._allow):
            return None
        if address in self._own:
            return "this box's own address"
        value = int(address)
        for network, mask, why in self._denied[address.version]:
            if value & mask == network:
                return why
        return None

    def permits(self, host: str | IPAddress) -> bool:
        return self.refusal(host) is None
