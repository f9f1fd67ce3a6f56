"""The service runner: one asyncio process hosting every service of the box.

Start everything or nothing; tell systemd when ready and keep its watchdog fed;
on SIGTERM or SIGINT stop in a bounded time.
"""
from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Info, PlatformCollector, ProcessCollector

from . import __version__
from .config import Config
from .announce.report import AgentReports
from .control import ControlService
from .drain import Drain
from .logs import get_logger
from .reload import ConfigSource, Reloader
from .sdnotify import Notifier
from .service import Reconfigurable, Service, StartError

log = get_logger("runner")

# Past this, a stop that hangs is abandoned: the process must exit in bounded time.
STOP_TIMEOUT = 1.5


@dataclass
class Box:
    """The running box: its config (and the file it came from, which a reload re-reads), its
    services, its metrics."""

    config: Config
    source: ConfigSource = field(default_factory=ConfigSource)
    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))
    services: list[Service] = field(default_factory=list)

    def __post_init__(self) -> None:
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        Info("edgecall", "This box's build and identity.", registry=self.registry).info(
            {"version": __version__, "node": self.config.node.id}
        )
        up = Gauge("edgecall_service_up", "1 when the service answers its own check.", ["service"], registry=self.registry)
        self._up = up
        self.drain = Drain(self.registry)
        self.agent = AgentReports(self.registry)
        self.reloader = Reloader(self)

    def reconfigure(self, config: Config) -> None:
        """Run with `config` from now on: a reload's, whose keys that need a restart hold their running
        values (config/reload.py). Services read the box's config when they act; those that keep
        something made from it (secrets, buckets, the TURN core's settings) take the new one."""
        self.config = config
        for service in self.services:
            if isinstance(service, Reconfigurable):
                service.reconfigure(config)

    def service(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)

    def health(self) -> dict[str, str | None]:
        report = {}
        for service in self.services:
            try:
                report[service.name] = service.health()
            except Exception as e:  # a broken check is a failing service, not a crashed endpoint
                report[service.name] = f"health check raised {type(e).__name__}: {e}"
            self._up.labels(service.name).set(0 if report[service.name] else 1)
        return report


async def _start_all(box: Box) -> bool:
    started: list[Service] = []
    for service in box.services:
        try:
            await service.start()
        except StartError as e:
            log.error("cannot start", service=service.name, reason=str(e))
            await _stop_all(started)
            return False
        started.append(service)
        log.info("started", service=service.name)
    return True


async def _stop_all(services: list[Service]) -> None:
    for service in reversed(services):
        try:
            await asyncio.wait_for(service.stop(), STOP_TIMEOUT)
        except asyncio.TimeoutError:
            log.warning("stop timed out; abandoning", service=service.name)
        except Exception:
            log.exception("stop failed", service=service.name)


def banner(box: Box) -> str:
    """What the box serves; a worker's first says it for the box, its supervisor ends it, the others
    say nothing (they serve the same)."""
    worker = box.source.worker
    if worker is not None and worker.index > 0:
        return ""
    lines = [f"Edgecall {__version__}, node {box.config.node.id}, is serving:"]
    for service in box.services:
        lines += [f"  {line}" for line in service.urls()]
    if worker is None:
        lines.append("Stop with Ctrl-C.")
    return "\n".join(lines)


async def serve(box: Box, notifier: Notifier | None = None) -> int:
    """Run the box until SIGTERM/SIGINT; the exit status to return."""
    notifier = notifier or Notifier()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, box.reloader.hangup)
    if not await _start_all(box):
        return 1
    text = banner(box)
    if text:
        print(text, flush=True)
    notifier.ready(f"serving as {box.config.node.id}")
    log.info("ready", node=box.config.node.id)
    watchdog = asyncio.create_task(_feed_watchdog(notifier)) if notifier.watchdog_interval else None
    await stop.wait()
    # A second signal during the drain or shutdown means "now": the default handlers end the process.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(sig)
    await _drain(box, notifier)
    log.info("stopping")
    notifier.stopping()
    if watchdog:
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
    await _stop_all(box.services)
    log.info("stopped")
    return 0


async def _drain(box: Box, notifier: Notifier) -> None:
    """Report draining and keep serving for the drain time, so the health agent withdraws the
    prefixes and the routers move traffic away before any socket closes."""
    drain_time = box.config.drain.time
    if drain_time <= 0:
        return
    box.drain.start(time.monotonic(), "stopping")
    remaining = box.drain.remaining(drain_time, time.monotonic())
    notifier.notify(f"STATUS=draining for {remaining:.1f} s before stopping")
    log.info("draining before stop", seconds=round(remaining, 3))
    await asyncio.sleep(remaining)


async def _feed_watchdog(notifier: Notifier) -> None:
    assert notifier.watchdog_interval
    while True:
        notifier.watchdog()
        await asyncio.sleep(notifier.watchdog_interval)


def raise_open_files_limit() -> int:
    """Lift the soft limit on open files to the hard one, and return it. A relay socket per
    allocation and a connection per TCP/TLS client need far more than the usual soft 1024;
    the unit's LimitNOFILE sets both limits, this gives `./build.sh run` the same."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < hard and hard != resource.RLIM_INFINITY:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError) as e:
            log.warning("open files limit not raised", soft=soft, hard=hard, reason=str(e))
    return soft


def run(box: Box) -> int:
    raise_open_files_limit()
    return run_loop(serve(box))


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def assemble(config: Config, source: ConfigSource | None = None) -> Box:
    """The box with every service its configuration enables, in start order; `source` is where
    `config` came from, for reloads."""
    from .api.server import ApiService
    from .cluster.revocations import ClusterRevocations
    from .cluster.service import ClusterService
    from .rooms.service import RoomService
    from .sfu.service import SfuService
    from .turn.service import TurnService

    box = Box(config, source or ConfigSource())
    if config.sfu.enabled:
        box.services.append(SfuService(box))
    cluster = ClusterService(box)
    box.services.append(cluster)
    if config.turn.enabled:
        turn = TurnService(box)
        if config.cluster.nats:
            # Revoked on one box, refused by all: through the store the boxes share. A single box's
            # store lives in its process, so there the file alone is what outlives a restart.
            turn.share_revocations(ClusterRevocations(lambda: cluster.store, turn.revocation_store, turn.wall))
        box.services.append(turn)
    if config.meet.app is not None and config.sfu.enabled:
        box.services.append(RoomService(box))
    box.services.append(ApiService(box))
    box.services.append(ControlService(box))
    return box
