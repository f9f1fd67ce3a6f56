"""The kernel's side of netconfig, through netlink (pyroute2): read the items, add and remove them.

Runs in the caller's network namespace; the product never shells out to `ip`. Each kind of item
has a reader and writer: links, addresses and routes here, the backbone's kinds beside their
items (tunnel.py, steering.py, sysctl.py, nft.py).
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Any, Protocol

from pyroute2 import IPRoute

from .items import MAIN_TABLE, Address, LinkUp, Route
from .nft import NftKernel, NftRule, NftTable
from .steering import LocalRuleMoved, Rule, RuleKernel
from .sysctl import Sysctl, SysctlKernel
from .tunnel import Tunnel, TunnelKernel

IFF_UP = 0x1
# The route types netconfig reads and writes.
ROUTE_TYPES = {1: "unicast", 6: "blackhole"}
# How `ip route show` names it: "added by the administrator", as opposed to kernel or routing daemons.
RTPROT_STATIC = 4
RT_SCOPE_LINK = 253


class LinkKernel:
    """Links up, addresses, and routes of the tables in scope."""

    def __init__(self, ipr: IPRoute):
        self.ipr = ipr
        self._index: dict[str, int] = {}
        self._name: dict[int, str] = {}

    def interfaces(self) -> set[str]:
        self._index = {link.get("IFLA_IFNAME"): link["index"] for link in self.ipr.get_links()}
        self._name = {index: name for name, index in self._index.items()}
        return set(self._index)

    def forget(self) -> None:
        """Links were added or deleted: look the names up again when next needed."""
        self._index, self._name = {}, {}

    def index(self, name: str) -> int:
        if name not in self._index:
            self.interfaces()
        return self._index[name]

    def read(self, scope: set) -> set:
        """The links that are up, every address, and the unicast and blackhole routes of the main
        table and of every table the scope has routes in."""
        self.interfaces()
        items: set = set()
        for link in self.ipr.get_links():
            if link["flags"] & IFF_UP:
                items.add(LinkUp(link.get("IFLA_IFNAME")))
        for msg in self.ipr.get_addr():
            # IFA_LOCAL is the address itself; IFA_ADDRESS is the peer's on point-to-point links.
            host = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
            name = self._name.get(msg["index"])
            if host and name:
                items.add(Address(name, str(ipaddress.ip_interface(f"{host}/{msg['prefixlen']}"))))
        tables = {MAIN_TABLE} | {item.table for item in scope if isinstance(item, Route)}
        for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
            for table in sorted(tables):
                for msg in self.ipr.get_routes(family=family, table=table):
                    if msg["type"] in ROUTE_TYPES:
                        items.add(self._route(msg, version, table))
        return items

    def _route(self, msg, version: int, table: int) -> Route:
        dst = msg.get("RTA_DST") or ("0.0.0.0" if version == 4 else "::")
        kind = ROUTE_TYPES[msg["type"]]
        oif = msg.get("RTA_OIF")
        return Route(
            to=str(ipaddress.ip_network(f"{dst}/{msg['dst_len']}")),
            metric=msg.get("RTA_PRIORITY") or 0,
            via=msg.get("RTA_GATEWAY"),
            # A blackhole goes nowhere (the kernel files IPv6 ones under lo).
            interface=self._name.get(oif) if oif and kind == "unicast" else None,
            table=msg.get("RTA_TABLE") or table,
            type=kind,
        )

    def add(self, item) -> None:
        self._change("add", item)

    def remove(self, item) -> None:
        self._change("del", item)

    def _change(self, verb: str, item) -> None:
        if isinstance(item, LinkUp):
            self.ipr.link("set", index=self.index(item.interface), state="up" if verb == "add" else "down")
        elif isinstance(item, Address):
            address = ipaddress.ip_interface(item.address)
            self.ipr.addr(verb, index=self.index(item.interface), address=str(address.ip),
                          prefixlen=address.network.prefixlen)
        else:
            spec = {"dst": item.to, "priority": item.metric, "table": item.table, "proto": RTPROT_STATIC,
                    "type": item.type}
            if item.via:
                spec["gateway"] = item.via
            elif item.type == "unicast":
                # On-link, as `ip route` makes it: a route through a gateway only resolves the
                # gateway by routes of a narrower scope than its own (universe).
                spec["scope"] = RT_SCOPE_LINK
            if item.interface:
                spec["oif"] = self.index(item.interface)
            self.ipr.route(verb, **spec)


class KindKernel(Protocol):
    """The reader and writer of some kinds of item: `add` and `remove` get only items of those kinds."""

    def read(self, scope: set) -> set: ...

    def add(self, item: Any) -> None: ...

    def remove(self, item: Any) -> None: ...


class Kernel:
    """Every kind of item, each through its own reader and writer."""

    def __init__(self, ipr: IPRoute, private_keys: dict[str, str] | None = None, sysctl: SysctlKernel | None = None,
                 nft: NftKernel | None = None, wireguard_factory=None):
        self.links = LinkKernel(ipr)
        rules, nft = RuleKernel(ipr), nft or NftKernel()
        self._parts: dict[str, KindKernel] = {
            Tunnel.kind: TunnelKernel(self.links, private_keys or {}, wireguard_factory),
            LinkUp.kind: self.links, Address.kind: self.links, Route.kind: self.links,
            Rule.kind: rules, LocalRuleMoved.kind: rules,
            Sysctl.kind: sysctl or SysctlKernel(),
            NftTable.kind: nft, NftRule.kind: nft,
        }

    def interfaces(self) -> set[str]:
        return self.links.interfaces()

    def read(self, scope=()) -> set:
        """What the kernel holds of the kinds, tables and settings that `scope` (the wanted and
        the owned items) has: nothing is read that could not matter."""
        scope = set(scope)
        readers = {id(part): part for part in self._parts.values()}.values()
        return set().union(*(reader.read(scope) for reader in readers))

    def add(self, item) -> None:
        self._parts[item.kind].add(item)

    def remove(self, item) -> None:
        self._parts[item.kind].remove(item)
