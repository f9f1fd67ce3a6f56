"""Usage accounting per allocation and per customIdentifier, for Prometheus and billing.

Allocations count their own traffic on the hot path; totals per customIdentifier
are the ended allocations folded in plus the live ones summed when read, so nothing
on the relay path touches this module. Bytes are application data (ChannelData and
DATA payloads), in the client's direction of view: from_client is relayed to peers.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass, fields

from ..plumbing.deadlines import Deadlines

# The label of the series that sums every identifier outside the top N.
OTHER = "other"


@dataclass(slots=True)
class Usage:
    allocations: int = 0
    seconds: float = 0.0  # on the core's monotonic clock: a step of the wall clock bills no one
    bytes_from_client: int = 0
    packets_from_client: int = 0
    bytes_to_client: int = 0
    packets_to_client: int = 0
    dropped: int = 0

    def add(self, other: Usage) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


class UsageBook:
    """Totals of ended allocations per customIdentifier, kept `retention` seconds after
    the identifier's last allocation ends (long enough for any scrape to see them)."""

    def __init__(self, retention: float) -> None:
        self.retention = retention
        self._ended: dict[str, Usage] = {}
        self._live: dict[str, int] = {}
        self._last_end: dict[str, float] = {}
        self._deadlines: Deadlines[str] = Deadlines()

    def started(self, identifier: str) -> None:
        self._live[identifier] = self._live.get(identifier, 0) + 1

    def ended(self, identifier: str, usage: Usage, now: float) -> None:
        self._ended.setdefault(identifier, Usage()).add(usage)
        left = self._live[identifier] - 1
        if left:
            self._live[identifier] = left
            return
        del self._live[identifier]
        self._last_end[identifier] = now
        self._deadlines.push(now + self.retention, identifier)

    def prune(self, now: float) -> None:
        for identifier in self._deadlines.due(now):
            last = self._last_end.get(identifier)
            if identifier not in self._live and last is not None and last + self.retention <= now:
                del self._ended[identifier], self._last_end[identifier]

    def next_expiry(self) -> float | None:
        return self._deadlines.next()

    def totals(self, live: dict[str, Usage]) -> dict[str, Usage]:
        """Ended totals plus `live` (the live allocations' usage summed per identifier)."""
        out: dict[str, Usage] = {}
        for source in (self._ended, live):
            for identifier, usage in source.items():
                out.setdefault(identifier, Usage()).add(usage)
        return out

    def __len__(self) -> int:
        """Identifiers with ended totals still kept."""
        return len(self._ended)


def top_identifiers(totals: dict[str, Usage], count: int) -> dict[str, Usage]:
    """The `count` identifiers that relayed the most (then held allocations longest) as they are, and
    every other one summed under `OTHER`, so each metric has at most count + 1 series and its sum
    holds. An identifier named "other" is summed there too rather than making a second such series."""
    ranked = heapq.nlargest(count, (i for i in totals if i != OTHER), key=lambda i: (_weight(totals[i]), i))
    top = {identifier: totals[identifier] for identifier in ranked}
    other = Usage()
    for identifier, usage in totals.items():
        if identifier not in top:
            other.add(usage)
    top[OTHER] = other
    return top


def _weight(usage: Usage) -> tuple[int, float, int]:
    return usage.bytes_from_client + usage.bytes_to_client, usage.seconds, usage.allocations
