"""The relay budget of an allocation: packets/s and bytes/s on the relay path (new peers/s use
appliance.plumbing.buckets). Over a limit the packet is dropped, never an error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..plumbing.buckets import accrued


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """Rates and bursts of the relay budget; `math.inf` means no limit."""

    packets_per_second: float = math.inf
    bytes_per_second: float = math.inf
    # How many seconds of traffic at the full rate may arrive at once.
    burst_seconds: float = 1.0

    @property
    def packet_burst(self) -> float:
        return self.packets_per_second * self.burst_seconds

    @property
    def byte_burst(self) -> float:
        return self.bytes_per_second * self.burst_seconds


class RelayBudget:
    """Two token buckets (packets, bytes) kept as plain fields for the relay hot path.

    A packet is charged with two subtractions; the buckets are refilled only when one
    runs dry, so a relayed packet costs no clock arithmetic. The refill caps at the
    burst when it happens rather than continuously, so after a long quiet spell one
    extra burst can pass; over any longer window the rate holds.
    """

    __slots__ = ("limits", "packet_tokens", "byte_tokens", "refilled_at")

    def __init__(self, limits: RelayLimits, now: float) -> None:
        self.limits = limits
        self.packet_tokens = limits.packet_burst
        self.byte_tokens = limits.byte_burst
        self.refilled_at = now

    def charge(self, size: int, now: float) -> bool:
        """Charge a packet of `size` bytes: True when it may pass, False to drop it."""
        self.packet_tokens -= 1
        self.byte_tokens -= size
        return (self.packet_tokens >= 0 and self.byte_tokens >= 0) or self._refill(size, now)

    def _refill(self, size: int, now: float) -> bool:
        """After a charge left a bucket negative: refill both for the time since the last
        refill; False when the packet must still be dropped (its charge is given back)."""
        limits = self.limits
        elapsed = max(0.0, now - self.refilled_at)
        self.refilled_at = now
        packets = min(limits.packet_burst, self.packet_tokens + 1 + accrued(elapsed, limits.packets_per_second)) - 1
        octets = min(limits.byte_burst, self.byte_tokens + size + accrued(elapsed, limits.bytes_per_second)) - size
        if packets < 0 or octets < 0:
            self.packet_tokens = packets + 1
            self.byte_tokens = octets + size
            return False
        self.packet_tokens = packets
        self.byte_tokens = octets
        return True
