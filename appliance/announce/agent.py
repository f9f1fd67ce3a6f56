"""The health agent's loop: probe, decide, switch the announcement, report; withdraw on the way out.

Its own process beside the service (the anycast-healthchecker pattern), so a crashed or hung
service is noticed by something that is neither. It starts withdrawn, and on SIGTERM or
SIGINT withdraws before it exits; if it dies instead, the unit's ExecStopPost withdraws.
"""
from __future__ import annotations

import asyncio
import contextlib
import signal
import time

from appliance import control
from appliance.config import Config
from appliance.logs import get_logger
from netconfig.announcement import Announcement
from netconfig.bgp_state import read_bgp

from . import follow
from .backbone import BackboneWatch
from .hysteresis import Hysteresis, Verdict
from .probes import ProbeResult, http_session, probes_for

log = get_logger("announce")


def verdict(results: list[ProbeResult]) -> Verdict:
    if any(r.draining for r in results):
        return Verdict.DRAINING
    return Verdict.PASS if all(r.ok for r in results) else Verdict.FAIL


class Agent:
    def __init__(self, config: Config):
        self.config = config
        settings = config.announce
        self.probes = probes_for(config)
        self.hysteresis = Hysteresis(settings.rise, settings.fall, settings.hold_down)
        self.announcement = Announcement(config)
        # What BIRD was last successfully told; None: not known, tell it again.
        self.told: bool | None = None
        self.backbone = BackboneWatch(config) if config.backbone and config.backbone.peers else None

    def reconfigure(self, config: Config) -> None:
        """Follow the box's reloaded live values (follow.py): the timers from the next round on, the
        backbone's peers watched as they now are."""
        if config == self.config:
            return
        self.config = config
        announce = config.announce
        self.hysteresis.retune(announce.rise, announce.fall, announce.hold_down)
        if self.backbone is not None:
            self.backbone.reconfigure(config)
        elif config.backbone and config.backbone.peers:
            self.backbone = BackboneWatch(config)
        log.info("following the reloaded config", interval=announce.interval, rise=announce.rise,
                 fall=announce.fall, hold_down=announce.hold_down)

    async def switch(self, announced: bool, why: str) -> None:
        if self.told == announced and self.announcement.written() == announced:
            return
        try:
            await asyncio.to_thread(self.announcement.set, announced)
        except Exception as e:  # BIRD down or refusing: try again next round
            self.told = None
            log.error("cannot tell BIRD", announce=announced, reason=f"{type(e).__name__}: {e}")
            return
        if self.told != announced:
            log.info("announced" if announced else "withdrawn", why=why)
        self.told = announced

    async def round(self, session) -> list[ProbeResult]:
        timeout = self.config.announce.timeout
        probing = asyncio.gather(*(p.check(session, timeout) for p in self.probes))
        # The backbone's peers are probed alongside, and switched on their own.
        backbone = self.backbone.round(time.monotonic()) if self.backbone else asyncio.sleep(0)
        results, peers = await asyncio.gather(probing, backbone)
        now = time.monotonic()
        wanted = self.hysteresis.observe(verdict(results), now)
        failing = "; ".join(f"{r.name}: {r.detail}" for r in results if not r.ok)
        await self.switch(wanted, failing or "every probe passes")
        answer = await asyncio.to_thread(self.report, results, now, peers)
        if answer is not None:
            self.reconfigure(follow.merge(self.config, answer.get("follow")))
        return results

    def report(self, results: list[ProbeResult], now: float, peers: dict | None = None) -> dict | None:
        """Tell the service how the round went; its answer, None when it did not answer."""
        payload = {
            "announced": self.told is True,
            "state": self.hysteresis.describe(now),
            "probes": {r.name: {"ok": r.ok, "detail": r.detail} for r in results},
            "bgp": read_bgp(self.config, timeout=self.config.announce.timeout).to_dict(),
        }
        if peers is not None:
            payload["backbone"] = peers
        try:
            return control.request(self.config, "report", timeout=self.config.announce.timeout, report=payload)
        except (OSError, ValueError):
            return None

    async def run(self, stop: asyncio.Event) -> None:
        await self.switch(False, "starting")
        names = ", ".join(p.name for p in self.probes)
        log.info("probing", probes=names, interval=self.config.announce.interval, rise=self.hysteresis.rise,
                 fall=self.hysteresis.fall)
        async with http_session() as session:
            while not stop.is_set():
                started = time.monotonic()
                await self.round(session)
                wait = started + self.config.announce.interval - time.monotonic()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), max(0.0, wait))
        self.told = None  # whatever happened before, withdraw for certain
        await self.switch(False, "the agent is stopping")


async def serve(config: Config) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    agent = Agent(config)
    await agent.run(stop)
    return 0 if agent.told is False else 1


def withdraw(config: Config) -> int:
    """Withdraw once and exit: the unit's ExecStopPost, for an agent that died without doing it."""
    try:
        Announcement(config).set(False)
    except Exception as e:
        log.error("cannot withdraw", reason=f"{type(e).__name__}: {e}")
        return 1
    log.info("withdrawn", why="appliance announce --withdraw")
    return 0
