"""Kernel settings (sysctls) the backbone needs, as items: forwarding, and loose reverse-path
filtering on the tunnels.

A setting always holds some value, so netconfig takes it over rather than refusing it, and keeps
the value it found (`previous`) to put back when the setting is no longer wanted. A setting that
already holds the wanted value is left alone and not claimed. Read and written under
/proc/sys/net, which shows the calling process's network namespace.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from .items import ItemKind

PROC_SYS = "/proc/sys"
GLOBAL = ("all", "default")


@dataclass(frozen=True, order=True)
class Sysctl(ItemKind):
    name: str  # below /proc/sys: net/ipv4/ip_forward
    value: str
    previous: str | None = None  # what the kernel held before; None: nothing to put back

    kind = "sysctl"
    rank = 1
    memo = ("previous",)

    @property
    def key(self) -> tuple:
        return (self.kind, self.name)

    @property
    def interface(self) -> str | None:
        """The device of a per-device setting (net/ipv4/conf/<device>/...), which must exist first."""
        parts = self.name.split("/")
        if len(parts) == 5 and parts[2] == "conf" and parts[3] not in GLOBAL:
            return parts[3]
        return None

    def over(self, have: ItemKind | None, owned: ItemKind | None) -> Sysctl:
        """This item, remembering what to put back: the value first found, however often it changed since.
        `have` (the kernel's) and `owned` (netconfig's record) are under this item's key: settings too."""
        previous = owned.previous if isinstance(owned, Sysctl) else have.value if isinstance(have, Sysctl) else None
        return dataclasses.replace(self, previous=previous)

    def __str__(self) -> str:
        was = f" (was {self.previous})" if self.previous is not None else ""
        return f"sysctl {self.name.replace('/', '.')} = {self.value}{was}"


class SysctlKernel:
    """Reads and writes the settings under `root` (a directory in tests, /proc/sys otherwise)."""

    def __init__(self, root: str = PROC_SYS):
        self.root = root

    def read(self, scope: set) -> set[Sysctl]:
        out = set()
        for name in {item.name for item in scope if isinstance(item, Sysctl)}:
            try:
                with open(os.path.join(self.root, name), encoding="ascii") as f:
                    out.add(Sysctl(name, f.read().strip()))
            except FileNotFoundError:  # a device's setting before the device exists
                continue
        return out

    def add(self, item: Sysctl) -> None:
        self._write(item.name, item.value)

    def remove(self, item: Sysctl) -> None:
        if item.previous is not None:
            self._write(item.name, item.previous)

    def _write(self, name: str, value: str) -> None:
        with open(os.path.join(self.root, name), "w", encoding="ascii") as f:
            f.write(value)
