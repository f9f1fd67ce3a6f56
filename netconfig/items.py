"""The kinds of item netconfig manages, as plain values: links up, addresses and routes here, the
backbone's kinds in their own modules (tunnel, steering, sysctl, nft).

Each kind is a frozen dataclass with a `key`: two items with the same key occupy the same place in
the kernel (one address on an interface, one route per table, prefix and metric), so an item that
differs from the kernel's under the same key is a change, not an addition. `rank` orders them by
dependency: a tunnel exists before it is up, an address before the routes through it, a table's
routes before the rules that send packets to it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

MAIN_TABLE = 254
LOCAL_TABLE = 255
# The metric the kernel gives a route added without one (IPv6: IP6_RT_PRIO_USER).
DEFAULT_METRIC = {4: 0, 6: 1024}


class ItemKind:
    """What every kind of item tells the plan about itself; the defaults suit most kinds."""

    kind: ClassVar[str]
    # Fields the kernel fills in itself (a route's interface, from its gateway): None in a wanted
    # item accepts whatever the kernel has.
    resolved: ClassVar[tuple[str, ...]] = ()
    # Fields netconfig keeps for itself and the kernel does not hold (the value a setting had
    # before): never compared.
    memo: ClassVar[tuple[str, ...]] = ()

    @property
    def rank(self) -> int:
        """Its place in dependency order, lowest first: most kinds set one for all their items."""
        raise NotImplementedError

    @property
    def creates(self) -> str | None:
        """The interface this item makes, which later items may use."""
        return None

    @property
    def needs(self) -> set[str]:
        """The interfaces that must exist for this item."""
        name = getattr(self, "interface", None)
        return {name} if name else set()


@dataclass(frozen=True, order=True)
class LinkUp(ItemKind):
    interface: str

    kind = "link"
    rank = 1

    @property
    def key(self) -> tuple:
        return (self.kind, self.interface)

    def __str__(self) -> str:
        return f"link {self.interface} up"


@dataclass(frozen=True, order=True)
class Address(ItemKind):
    interface: str
    address: str  # with its prefix length, as ipaddress spells it: 203.0.113.10/32

    kind = "address"
    rank = 2

    @property
    def key(self) -> tuple:
        return (self.kind, self.interface, self.address)

    def __str__(self) -> str:
        return f"address {self.address} on {self.interface}"


@dataclass(frozen=True, order=True)
class Route(ItemKind):
    to: str  # a network: 0.0.0.0/0
    metric: int
    via: str | None = None
    interface: str | None = None  # None: wherever the kernel resolves `via`
    table: int = MAIN_TABLE
    # "unicast", or "blackhole": packets routed here are dropped (a backbone peer that is down).
    type: str = "unicast"

    kind = "route"
    resolved = ("interface",)

    @property
    def rank(self) -> int:
        # A route through a gateway comes after the on-link routes that reach the gateway.
        return 3 if self.via is None else 4

    @property
    def key(self) -> tuple:
        return (self.kind, self.table, self.to, self.metric)

    def __str__(self) -> str:
        parts = ["route"] + ([self.type] if self.type != "unicast" else []) + [self.to]
        if self.via:
            parts.append(f"via {self.via}")
        if self.interface:
            parts.append(f"dev {self.interface}")
        parts.append(f"metric {self.metric}")
        if self.table != MAIN_TABLE:
            parts.append(f"table {self.table}")
        return " ".join(parts)
