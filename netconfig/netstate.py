"""The host network state as plain values: what the config wants, and what the kernel holds.

The kinds of item are in items.py (links, addresses, routes) and in the backbone's modules
(tunnel.py, sysctl.py, nft.py, steering.py); the kernel's readers and writers are in kernel.py.
"""
from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

from appliance.config import Config

from .backbone import wanted_backbone
from .items import DEFAULT_METRIC, MAIN_TABLE, Address, LinkUp, Route
from .nft import NftRule, NftTable
from .steering import LocalRuleMoved, Rule
from .sysctl import Sysctl
from .tunnel import Tunnel

__all__ = ["DEFAULT_METRIC", "KINDS", "MAIN_TABLE", "Address", "Item", "LinkUp", "LocalRuleMoved", "NftRule", "NftTable",
           "Route", "Rule", "Sysctl", "Tunnel", "from_record", "same", "satisfies", "to_record", "wanted"]

Item = Tunnel | LinkUp | Sysctl | Address | Route | NftTable | NftRule | Rule | LocalRuleMoved
KINDS: dict[str, type] = {cls.kind: cls for cls in (Tunnel, LinkUp, Sysctl, Address, Route, NftTable, NftRule, Rule,
                                                     LocalRuleMoved)}


def satisfies(have: Item, want: Item) -> bool:
    """Whether the kernel's `have` is what `want` asks for; a field the kernel resolves itself
    (a route's interface, from its gateway) accepts anything when `want` leaves it None."""
    if type(have) is not type(want):
        return False
    return all(
        f.name in want.memo
        or (getattr(want, f.name) is None and f.name in want.resolved)
        or getattr(want, f.name) == getattr(have, f.name)
        for f in dataclasses.fields(want)
    )


def same(a: Item, b: Item | None) -> bool:
    """Whether `a` and `b` ask the same of the kernel (what netconfig remembers aside)."""
    return b is not None and type(a) is type(b) and all(
        f.name in a.memo or getattr(a, f.name) == getattr(b, f.name) for f in dataclasses.fields(a))


def wanted(config: Config, down: frozenset[str] = frozenset()) -> set[Item]:
    """Everything the config asks the kernel to hold; backbone peers in `down` drop their slices."""
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
    return items | wanted_backbone(config, down)


def to_record(item: Item) -> dict[str, Any]:
    return {"kind": item.kind, **dataclasses.asdict(item)}


def from_record(record: dict[str, Any]) -> Item:
    fields = dict(record)
    return KINDS[fields.pop("kind")](**fields)
