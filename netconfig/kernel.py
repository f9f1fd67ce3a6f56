"""The kernel's side of netconfig, through netlink (pyroute2): read the items, add and remove them.

Runs in the caller's network namespace; the product never shells out to `ip`.
"""
from __future__ import annotations

import ipaddress
import socket

from pyroute2 import IPRoute

from .netstate import MAIN_TABLE, Address, Item, LinkUp, Route

IFF_UP = 0x1
RTN_UNICAST = 1
# How `ip route show` names it: "added by the administrator", as opposed to kernel or routing daemons.
RTPROT_STATIC = 4
# The tables netconfig reads; policy routing (issue 8) adds its own.
TABLES = (MAIN_TABLE,)


class Kernel:
    def __init__(self, ipr: IPRoute):
        self.ipr = ipr
        self._index: dict[str, int] = {}
        self._name: dict[int, str] = {}

    def interfaces(self) -> set[str]:
        self._index = {link.get("IFLA_IFNAME"): link["index"] for link in self.ipr.get_links()}
        self._name = {index: name for name, index in self._index.items()}
        return set(self._index)

    def read(self) -> set[Item]:
        """The links that are up, every address, and the unicast routes of the tables netconfig uses."""
        self.interfaces()
        items: set[Item] = set()
        for link in self.ipr.get_links():
            if link["flags"] & IFF_UP:
                items.add(LinkUp(link.get("IFLA_IFNAME")))
        for msg in self.ipr.get_addr():
            # IFA_LOCAL is the address itself; IFA_ADDRESS is the peer's on point-to-point links.
            host = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
            name = self._name.get(msg["index"])
            if host and name:
                items.add(Address(name, str(ipaddress.ip_interface(f"{host}/{msg['prefixlen']}"))))
        for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
            for table in TABLES:
                for msg in self.ipr.get_routes(family=family, table=table):
                    if msg["type"] == RTN_UNICAST:
                        items.add(self._route(msg, version, table))
        return items

    def _route(self, msg, version: int, table: int) -> Route:
        dst = msg.get("RTA_DST") or ("0.0.0.0" if version == 4 else "::")
        oif = msg.get("RTA_OIF")
        return Route(
            to=str(ipaddress.ip_network(f"{dst}/{msg['dst_len']}")),
            metric=msg.get("RTA_PRIORITY") or 0,
            via=msg.get("RTA_GATEWAY"),
            interface=self._name.get(oif) if oif else None,
            table=msg.get("RTA_TABLE") or table,
        )

    def add(self, item: Item) -> None:
        self._change("add", item)

    def remove(self, item: Item) -> None:
        self._change("del", item)

    def _change(self, verb: str, item: Item) -> None:
        if isinstance(item, LinkUp):
            self.ipr.link("set", index=self._index[item.interface], state="up" if verb == "add" else "down")
        elif isinstance(item, Address):
            address = ipaddress.ip_interface(item.address)
            self.ipr.addr(verb, index=self._index[item.interface], address=str(address.ip),
                          prefixlen=address.network.prefixlen)
        else:
            spec = {"dst": item.to, "priority": item.metric, "table": item.table, "proto": RTPROT_STATIC}
            if item.via:
                spec["gateway"] = item.via
            if item.interface:
                spec["oif"] = self._index[item.interface]
            self.ipr.route(verb, **spec)
