"""Relay ports: which are taken, which to try next, and EVEN-PORT reservations.

Ports are picked at random (RFC 8656 7.2 and RFC 6056: a predictable relay port
helps an attacker aim at an allocation) from the configured range, separately for
each relay address and protocol. The core only picks; the shell binds, and a port
the shell cannot bind (another process holds it) is simply skipped.
"""
from __future__ import annotations

import os
import random
from collections.abc import Iterator
from dataclasses import dataclass

from appliance.stun import TRANSPORT_UDP

from ..plumbing.deadlines import Deadlines

RANDOM_PROBES = 32
RESERVATION_LIFETIME = 30.0  # RFC 8656 7.2: "approximately 30 seconds"


@dataclass(slots=True)
class Reservation:
    address: str
    port: int
    expires: float


class RelayPorts:
    def __init__(self, first: int, last: int, rng: random.Random | None = None) -> None:
        self.first = first
        self.last = last
        self._taken: dict[tuple[str, int], set[int]] = {}
        self._reservations: dict[bytes, Reservation] = {}
        self._deadlines: Deadlines[bytes] = Deadlines()
        self._rng = rng or random.SystemRandom()

    def candidates(self, address: str, protocol: int, even: bool = False, pair: bool = False) -> Iterator[int]:
        """Free ports to try, in random order: random probes, then a scan from a random start.

        `even` asks for even ports only; `pair` also needs the next port free (EVEN-PORT's R bit).
        """
        taken = self._taken.get((address, protocol), set())
        step = 2 if even else 1
        first = self.first + (self.first & 1 if even else 0)
        count = (self.last - first - (1 if pair else 0)) // step + 1
        if count <= 0:
            return

        def free(port: int) -> bool:
            return port not in taken and not (pair and port + 1 in taken)

        for _ in range(min(RANDOM_PROBES, count)):
            port = first + step * self._rng.randrange(count)
            if free(port):
                yield port
        start = self._rng.randrange(count)
        for i in range(count):
            port = first + step * ((start + i) % count)
            if free(port):
                yield port

    def take(self, address: str, protocol: int, port: int) -> None:
        self._taken.setdefault((address, protocol), set()).add(port)

    def release(self, address: str, protocol: int, port: int) -> None:
        taken = self._taken.get((address, protocol))
        if taken is not None:
            taken.discard(port)
            if not taken:
                del self._taken[(address, protocol)]

    def in_use(self) -> int:
        return sum(len(ports) for ports in self._taken.values())

    # --- EVEN-PORT reservations (UDP only: EVEN-PORT is refused for TCP allocations) ---

    def reserve(self, address: str, port: int, now: float) -> bytes:
        """Hold UDP `port` for a later Allocate with the returned RESERVATION-TOKEN."""
        token = os.urandom(8)
        self.take(address, TRANSPORT_UDP, port)
        self._reservations[token] = Reservation(address, port, now + RESERVATION_LIFETIME)
        self._deadlines.push(now + RESERVATION_LIFETIME, token)
        return token

    def claim(self, token: bytes) -> Reservation | None:
        """The reservation for `token`, now the caller's to bind (or release)."""
        return self._reservations.pop(token, None)

    def expire(self, now: float) -> None:
        for token in self._deadlines.due(now):
            reservation = self._reservations.pop(token, None)
            if reservation is not None:
                self.release(reservation.address, TRANSPORT_UDP, reservation.port)

    def next_expiry(self) -> float | None:
        return self._deadlines.next()

    @property
    def reservations(self) -> int:
        return len(self._reservations)
