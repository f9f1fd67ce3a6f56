"""The difference between the wanted state and the kernel's, as an ordered list of changes.

Ownership decides what may be removed: only items netconfig recorded as its own (and that the
kernel still holds as recorded) are ever removed or replaced. Something in the way that it did
not make is a problem, reported before anything is changed; settings (sysctls) are the one kind
it takes over, keeping the value it found to put back.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .netstate import Item, Sysctl, same, satisfies


@dataclass(frozen=True)
class Change:
    action: str  # "add" or "remove"
    item: Item

    def undo(self) -> Change:
        return Change("remove" if self.action == "add" else "add", self.item)

    def __str__(self) -> str:
        return f"{self.action} {self.item}"


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # What netconfig will own once the changes are made.
    owned: set[Item] = field(default_factory=set)
    # The wanted items the kernel already holds, split by who made them.
    present: set[Item] = field(default_factory=set)
    foreign: set[Item] = field(default_factory=set)


def plan(wanted: Iterable[Item], actual: Iterable[Item], owned: Iterable[Item], interfaces: Iterable[str]) -> Plan:
    wanted = set(wanted)
    by_key = {item.key: item for item in actual}
    out = Plan()
    # An owned item the kernel no longer holds as recorded was removed or changed by someone else:
    # it is not ours any more.
    still_owned = {item for item in owned if item.key in by_key and satisfies(by_key[item.key], item)}
    owned_by_key = {item.key: item for item in still_owned}
    wanted_by_key = {item.key: item for item in wanted}
    removals = [item for item in still_owned if not same(item, wanted_by_key.get(item.key))]
    additions: list[Item] = []
    # Interfaces that the changes themselves make (tunnels) count as there.
    known = set(interfaces) | {item.creates for item in wanted if item.creates}
    for item in sorted(wanted, key=_order):
        missing = item.needs - known
        if missing:
            out.problems.append(f"{item}: no interface {', '.join(sorted(missing))} in this network namespace")
            continue
        have = by_key.get(item.key)
        if have is not None and satisfies(have, item):
            (out.present if item.key in owned_by_key else out.foreign).add(item)
        elif isinstance(item, Sysctl):  # the one kind taken over: `over` keeps the value to put back
            additions.append(item.over(have, owned_by_key.get(item.key)))
        elif have is not None and item.key not in owned_by_key:
            out.problems.append(f"{item}: the kernel holds {have}, which netconfig did not make and will not replace")
        else:
            additions.append(item)
    # Removals first (routes before the addresses they use), then additions in dependency order.
    out.changes = [Change("remove", i) for i in sorted(removals, key=_order, reverse=True)]
    out.changes += [Change("add", i) for i in additions]
    out.owned = (still_owned - set(removals)) | set(additions)
    return out


def _order(item: Item) -> tuple:
    return (item.rank, str(item))
