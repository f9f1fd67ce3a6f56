"""Usage figures of the last hour in bounded in-memory rings: sans-I/O, fed the box's counters and the time.

A *reading* holds, per dimension (app, TURN issuer, customIdentifier, box) and key, the cumulative byte
counters and the gauges (sessions, allocations) at one moment. Every TICK seconds the shell hands one
in; the sampler keeps, per series, the bytes counted since the previous reading and the gauges, for
WINDOW seconds. A counter that went backwards started again (a customIdentifier forgotten after
`[turn] usage_retention` and seen anew) and counts from zero. Queries sum the samples into buckets of
any multiple of TICK; the live reading at query time, which is not kept, fills the last bucket, so the
figures end at the moment of the request rather than at the last tick.

Every dimension's keys are bounded by the configuration (apps, TURN keys, this box) except the
customIdentifiers: the first `top` seen within the window get a series each, the rest are summed as
"other" (as /metrics does with `[turn] metrics_identifiers`).
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

TICK = 10
WINDOW = 3600
DIMENSIONS = ("app", "issuer", "customIdentifier", "box")
# The dimension whose keys clients choose; OTHER sums the ones past the top.
LIMITED = "customIdentifier"
OTHER = "other"


@dataclass(frozen=True, slots=True)
class Figures:
    """One series' counters (bytes since the box started) and gauges (now), as read."""

    ingress_bytes: int = 0
    egress_bytes: int = 0
    sessions: int = 0
    allocations: int = 0


Reading = Mapping[str, Mapping[str, Figures]]


@dataclass(frozen=True, slots=True)
class Sample:
    """Bytes counted in the interval that ends at `t`, and the gauges at `t`."""

    t: float
    ingress_bytes: int
    egress_bytes: int
    sessions: int
    allocations: int

    def plus(self, other: Sample) -> Sample:
        return Sample(self.t, self.ingress_bytes + other.ingress_bytes, self.egress_bytes + other.egress_bytes,
                      self.sessions + other.sessions, self.allocations + other.allocations)


@dataclass(slots=True)
class Point:
    """One bucket of a query: [t, t + step). Bytes are summed; the gauges are the most seen at once."""

    t: int
    ingress_bytes: int = 0
    egress_bytes: int = 0
    sessions: int = 0
    allocations: int = 0

    def add(self, sample: Sample) -> None:
        self.ingress_bytes += sample.ingress_bytes
        self.egress_bytes += sample.egress_bytes
        self.sessions = max(self.sessions, sample.sessions)
        self.allocations = max(self.allocations, sample.allocations)

    def json(self) -> dict[str, Any]:
        return {"t": self.t, "ingressBytes": self.ingress_bytes, "egressBytes": self.egress_bytes,
                "sessions": self.sessions, "allocations": self.allocations}


def bucket_of(t: float, step: int) -> int:
    """The start of the bucket holding a sample whose interval ends at `t` (an interval ending on a
    bucket's edge belongs to the bucket before it)."""
    return math.ceil(t / step) * step - step


class Sampler:
    def __init__(self, top: int, now: float, tick: int = TICK, window: int = WINDOW) -> None:
        self.top = top
        self.tick = tick
        self.window = window
        self._rings: dict[str, dict[str, deque[Sample]]] = {d: {} for d in DIMENSIONS}
        self._last: dict[str, dict[str, Figures]] = {d: {} for d in DIMENSIONS}
        self._last_at: float | None = None
        self._due = self._aligned(now) + tick

    def _aligned(self, now: float) -> float:
        return math.floor(now / self.tick) * self.tick

    def get_timer(self) -> float:
        """When the next reading is due (wall-clock seconds, on a multiple of the tick)."""
        return self._due

    def sample(self, reading: Reading, now: float) -> None:
        """Keep `reading`, taken at `now`, as the sample of the tick `now` falls in."""
        t = self._aligned(now)
        self._due = t + self.tick
        if self._last_at is not None and t <= self._last_at:
            if t == self._last_at:
                return  # that tick has its sample
            # The wall clock stepped back: the samples ahead of it would never leave the window.
            for rings in self._rings.values():
                rings.clear()
        for dimension in DIMENSIONS:
            figures = reading.get(dimension, {})
            for key, sample in self._placed(dimension, self._deltas(dimension, figures, t)).items():
                rings = self._rings[dimension]
                ring = rings.get(key)
                if ring is None:
                    ring = rings[key] = deque(maxlen=self.window // self.tick)
                ring.append(sample)
            self._last[dimension] = dict(figures)
        self._last_at = t
        self._prune(t)

    def preview(self, reading: Reading, now: float) -> dict[str, dict[str, Sample]]:
        """The samples `reading` would make at `now`, kept nowhere: the live end of a query."""
        return {d: self._placed(d, self._deltas(d, reading.get(d, {}), now)) for d in DIMENSIONS}

    def query(self, dimension: str, since: float, until: float, step: int, key: str | None = None,
              live: Mapping[str, Mapping[str, Sample]] | None = None) -> dict[str, list[Point]]:
        """Per key of `dimension` (only `key` when given), the buckets of `step` seconds holding the
        samples whose intervals end in (since, until], oldest first; buckets without samples are left out."""
        out: dict[str, list[Point]] = {}
        keys = set(self._rings[dimension]) | set((live or {}).get(dimension, {}))
        for name in sorted(keys):
            if key is not None and name != key:
                continue
            samples = list(self._rings[dimension].get(name, ()))
            current = (live or {}).get(dimension, {}).get(name)
            if current is not None:
                samples.append(current)
            buckets: dict[int, Point] = {}
            for sample in samples:
                if since < sample.t <= until:
                    start = bucket_of(sample.t, step)
                    buckets.setdefault(start, Point(start)).add(sample)
            if buckets:
                out[name] = [buckets[start] for start in sorted(buckets)]
        return out

    def held(self) -> tuple[int, int]:
        """(series, samples) kept: what bounds the sampler's memory."""
        rings = [ring for by_key in self._rings.values() for ring in by_key.values()]
        return len(rings), sum(len(ring) for ring in rings)

    def _deltas(self, dimension: str, figures: Mapping[str, Figures], t: float) -> dict[str, Sample]:
        last = self._last[dimension]
        out = {}
        for key, now in figures.items():
            before = last.get(key, Figures())
            out[key] = Sample(t, _since(now.ingress_bytes, before.ingress_bytes),
                              _since(now.egress_bytes, before.egress_bytes), now.sessions, now.allocations)
        return out

    def _placed(self, dimension: str, samples: dict[str, Sample]) -> dict[str, Sample]:
        """The samples by the series they go to: their own, or (customIdentifiers past the top) OTHER."""
        if dimension != LIMITED:
            return samples
        rings = self._rings[dimension]
        own = {key for key in rings if key != OTHER}
        placed = {key: sample for key, sample in samples.items() if key in own}
        newcomers = sorted((key for key in samples if key not in own and key != OTHER),
                           key=lambda k: (-(samples[k].ingress_bytes + samples[k].egress_bytes), k))
        room = max(0, self.top - len(own))
        placed.update((key, samples[key]) for key in newcomers[:room])
        # An identifier spelled "other" is summed there too rather than making a second such series.
        rest = [samples[key] for key in newcomers[room:]] + ([samples[OTHER]] if OTHER in samples else [])
        if rest:
            total = rest[0]
            for sample in rest[1:]:
                total = total.plus(sample)
            placed[OTHER] = total
        return placed

    def _prune(self, now: float) -> None:
        oldest = now - self.window
        for rings in self._rings.values():
            for key in list(rings):
                ring = rings[key]
                while ring and ring[0].t <= oldest:
                    ring.popleft()
                if not ring:
                    del rings[key]


def _since(now: int, before: int) -> int:
    return now - before if now >= before else now
