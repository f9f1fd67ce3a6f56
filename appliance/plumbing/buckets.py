"""Token buckets for control paths: rates of requests, sessions, new peers."""
from __future__ import annotations

import math


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up; `take` spends them when there are enough."""

    __slots__ = ("rate", "burst", "tokens", "stamp")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = now

    def take(self, amount: float, now: float) -> bool:
        tokens = min(self.burst, self.tokens + accrued(max(0.0, now - self.stamp), self.rate))
        self.stamp = now
        if tokens < amount:
            self.tokens = tokens
            return False
        self.tokens = tokens - amount
        return True

    def wait(self, amount: float) -> float:
        """Seconds from the last `take` until `amount` tokens are there."""
        return max(0.0, amount - self.tokens) / self.rate


def accrued(elapsed: float, rate: float) -> float:
    # 0 * inf is nan; no time passed means nothing accrued, whatever the rate.
    return elapsed * rate if elapsed else 0.0


def unlimited(rate: float) -> float:
    """Config's 0 ("no limit") as the infinite rate the buckets understand."""
    return math.inf if rate <= 0 else rate
