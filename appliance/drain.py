"""Draining: the box still serves everything it serves, but asks to be taken out of anycast.

Entered on SIGTERM (for `[drain] time` before the sockets close) or with `appliance drain`;
/healthz then answers 503 "draining", and the health agent withdraws the prefixes at once.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from .logs import get_logger

log = get_logger("drain")


class Drain:
    def __init__(self, registry: CollectorRegistry):
        self.since: float | None = None
        self._gauge = Gauge("edgecall_draining", "1 while the box is draining.", registry=registry)

    @property
    def active(self) -> bool:
        return self.since is not None

    def start(self, now: float, why: str) -> None:
        if self.since is None:
            self.since = now
            self._gauge.set(1)
            log.info("draining", why=why)

    def stop(self) -> None:
        if self.since is not None:
            self.since = None
            self._gauge.set(0)
            log.info("no longer draining")

    def remaining(self, drain_time: float, now: float) -> float:
        """How much of `drain_time` is left: a box already draining has served part of it."""
        return 0.0 if self.since is None else max(0.0, self.since + drain_time - now)
