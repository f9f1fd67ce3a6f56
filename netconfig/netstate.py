"""The host network state as plain values: what the config wants, and what the kernel holds.

Each kind of item is a frozen dataclass with a `key`: two items with the same key occupy the same
place in the kernel (one address on an interface, one route per table, prefix and metric), so an
item that differs from the kernel's under the same key is a change, not an addition. The kinds
are ordered by dependency: a link is up before its addresses, an address before the routes
through it. Policy rules (issue 8) become one more kind here, with its reader and writer in
`kernel.py`.
"""
from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from typing import Any

from appliance.config import Config

MAIN_TABLE = 254
# The metric the kernel gives a route added without one (IPv6: IP6_RT_PRIO_USER).
DEFAULT_METRIC = {4: 0, 6: 1024}


@dataclass(frozen=True, order=True)
class LinkUp:
    interface: str

    kind = "link"
    rank = 0
    resolved = ()

    @property
    def key(self) -> tuple:
        return (self.kind, self.interface)

    def __str__(self) -> str:
        return f"link {self.interface} up"


@dataclass(frozen=True, order=True)
class Address:
    interface: str
    address: str  # with its prefix length, as ipaddress spells it: 203.0.113.10/32

    kind = "address"
    rank = 1
    resolved = ()

    @property
    def key(self) -> tuple:
        return (self.kind, self.interface, self.address)

    def __str__(self) -> str:
        return f"address {self.address} on {self.interface}"


@dataclass(frozen=True, order=True)
class Route:
    to: str  # a network: 0.0.0.0/0
    metric: int
    via: str | None = None
    interface: str | None = None  # None: wherever the kernel resolves `via`
    table: int = MAIN_TABLE

    kind = "route"
    rank = 2
    resolved = ("interface",)

    @property
    def key(self) -> tuple:
        return (self.kind, self.table, self.to, self.metric)

    def __str__(self) -> str:
        parts = [f"route {self.to}"]
        if self.via:
            parts.append(f"via {self.via}")
        if self.interface:
            parts.append(f"dev {self.interface}")
        parts.append(f"metric {self.metric}")
        if self.table != MAIN_TABLE:
            parts.append(f"table {self.table}")
        return " ".join(parts)


Item = LinkUp | Address | Route
KINDS: dict[str, type] = {cls.kind: cls for cls in (LinkUp, Address, Route)}


def satisfies(have: Item, want: Item) -> bool:
    """Whether the kernel's `have` is what `want` asks for; a field the kernel resolves itself
    (a route's interface, from its gateway) accepts anything when `want` leaves it None."""
    if type(have) is not type(want):
        return False
    return all(
        (getattr(want, f.name) is None and f.name in want.resolved) or getattr(want, f.name) == getattr(have, f.name)
        for f in dataclasses.fields(want)
    )


def interfaces_of(item: Item) -> set[str]:
    name = getattr(item, "interface", None)
    return {name} if name else set()


def wanted(config: Config) -> set[Item]:
    """Everything the config asks the kernel to hold."""
    net = config.net
    items: set[Item] = set()
    if config.anycast.prefixes:
        items.add(LinkUp(net.anycast_interface))
        for prefix in config.anycast.prefixes:
            items.add(Address(net.anycast_interface, str(ipaddress.ip_interface(prefix))))
    for uplink in net.uplinks:
        items.add(LinkUp(uplink.interface))
        items |= {Address(uplink.interface, str(address)) for address in uplink.addresses}
    for route in net.routes:
        metric = route.metric if route.metric is not None else DEFAULT_METRIC[route.to.version]
        via = str(route.via) if route.via is not None else None
        items.add(Route(str(route.to), metric, via, route.interface))
    return items


def to_record(item: Item) -> dict[str, Any]:
    return {"kind": item.kind, **dataclasses.asdict(item)}


def from_record(record: dict[str, Any]) -> Item:
    fields = dict(record)
    return KINDS[fields.pop("kind")](**fields)
