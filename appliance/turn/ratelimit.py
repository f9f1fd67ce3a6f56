"""Token buckets for per-allocation limits: packets/s and bytes/s on the relay path,
new peers/s on the control path. Over a limit the packet is dropped, never an error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


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
        packets = min(limits.packet_burst, self.packet_tokens + 1 + _accrued(elapsed, limits.packets_per_second)) - 1
        octets = min(limits.byte_burst, self.byte_tokens + size + _accrued(elapsed, limits.bytes_per_second)) - size
        if packets < 0 or octets < 0:
            self.packet_tokens = packets + 1
            self.byte_tokens = octets + size
            return False
        self.packet_tokens = packets
        self.byte_tokens = octets
        return True


class TokenBucket:
    """A plain token bucket for the control path (new peers per second)."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, amount: float, now: float) -> bool:
        tokens = min(self.burst, self.tokens + _accrued(max(0.0, now - self.stamp), self.rate))
        self.stamp = now
        if tokens < amount:
            self.tokens = tokens
            return False
        self.tokens = tokens - amount
        return True


def _accrued(elapsed: float, rate: float) -> float:
    # 0 * inf is nan; no time passed means nothing accrued, whatever the rate.
    return elapsed * rate if elapsed else 0.0


def unlimited(rate: float) -> float:
    """Config's 0 ("no limit") as the infinite rate the buckets understand."""
    return math.inf if rate <= 0 else rate
