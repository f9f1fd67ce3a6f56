"""Allocation quotas per credential issuer.

Usernames are free to mint for whoever holds a TURN key's token or a shared secret, so a
quota per username alone lets one issuer take every relay port. Each issuer (a key's id, or
"rest" for the shared secrets themselves: config-defined, so a bounded set) may hold at most
its own quota of allocations, and never more than the relay ports less a reserve kept for the
others.
"""
from __future__ import annotations

import math
from collections.abc import Mapping


class IssuerQuotas:
    def __init__(self, relay_ports: int, reserve: float, quotas: Mapping[str, int]) -> None:
        self.held: dict[str, int] = {}
        # (issuer, "user" or "issuer") -> Allocate requests refused with 486 over that quota.
        self.refused: dict[tuple[str, str], int] = {}
        self.configure(relay_ports, reserve, quotas)

    def configure(self, relay_ports: int, reserve: float, quotas: Mapping[str, int]) -> None:
        """New quotas (a reload): what each issuer holds stays held; an issuer now over its quota makes
        no new allocation until it is under again."""
        # At least one allocation, however small the range and large the reserve; no reserve, no ceiling.
        self.ceiling = max(1, int(relay_ports * (1 - reserve))) if reserve else math.inf
        self._quotas = dict(quotas)

    def limit(self, issuer: str) -> float:
        return min(self._quotas.get(issuer, self.ceiling), self.ceiling)

    def admits(self, issuer: str) -> bool:
        return self.held.get(issuer, 0) < self.limit(issuer)

    def refuse(self, issuer: str, quota: str) -> None:
        self.refused[(issuer, quota)] = self.refused.get((issuer, quota), 0) + 1

    def take(self, issuer: str) -> None:
        self.held[issuer] = self.held.get(issuer, 0) + 1

    def release(self, issuer: str) -> None:
        self.held[issuer] -= 1
