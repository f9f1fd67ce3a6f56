"""A min-heap of deadlines, for everything a sans-I/O core lets expire (TURN, the media port).

Refreshing something does not touch the heap: the owner re-checks an item's own
expiry when its deadline comes due and pushes it again if it was extended, so the
heap holds at most one entry per live item plus those already let go.
"""
from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Deadlines(Generic[T]):
    def __init__(self) -> None:
        self._heap: list[tuple[float, int, T]] = []
        self._order = itertools.count()

    def push(self, when: float, item: T) -> None:
        heapq.heappush(self._heap, (when, next(self._order), item))

    def due(self, now: float) -> Iterator[T]:
        """Pop and yield the items whose deadline is `now` or earlier."""
        heap = self._heap
        while heap and heap[0][0] <= now:
            yield heapq.heappop(heap)[2]

    def next(self) -> float | None:
        return self._heap[0][0] if self._heap else None
