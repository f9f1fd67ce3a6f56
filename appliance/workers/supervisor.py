"""The box as several worker processes (`[sfu] workers`, `[turn] workers`): the supervisor.

It makes every public listener once per worker with SO_REUSEPORT and hands each worker its own
(plumbing/listeners.py), with a trunk socket and an API socket for forwarded requests of its own;
starts the store the workers share when the box has no cluster (store.py); starts the workers
(`appliance run` with a plan in the environment: plan.py) and starts again one that exits or stops
feeding its watchdog, with backoff, leaving the others alone. It is each worker's systemd: a notify
socket per worker tells it when each is ready and alive; it tells systemd the box is ready once all
are. SIGTERM and SIGINT go to every worker (each drains), SIGHUP too (each reloads); the control
socket is served here and asked of every worker (control.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from .. import __version__
from ..config import Config
from ..logs import get_logger
from ..plumbing.listeners import HANDED_DOWN, Handed, encode, make_tcp
from ..plumbing.udp import udp_socket
from ..sdnotify import Notifier
from ..service import StartError
from .control import ControlProxy
from .plan import PLAN, WorkerPlan, counts, processes
from .store import LocalNats

log = get_logger("workers")

WATCHDOG = 10.0  # a worker silent this long (no WATCHDOG=1) is hung: killed and started again
READY_TIMEOUT = 120.0  # the first start of every worker (imports take seconds on the image)
RESTART_FIRST, RESTART_MOST = 0.2, 5.0  # backoff between restarts of one worker, doubling
STABLE_FOR = 30.0  # a worker up this long restarts with the first backoff again
STOP_GRACE = 5.0  # past the drain time, a worker still running is killed
ACQUAINT_TIMEOUT = 10.0  # how long the first start waits for the workers to hear of each other
STATUS = b'{"command": "status"}\n'


@dataclass
class Worker:
    plan: WorkerPlan
    sockets: list[tuple[Handed, socket.socket]]
    notify_path: str
    notify: socket.socket
    process: asyncio.subprocess.Process | None = None
    ready: bool = False
    fed: float = 0.0
    started: float = 0.0
    restarts: int = 0
    backoff: float = RESTART_FIRST
    exits: list[int] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        pid = self.process.pid if self.process is not None and self.process.returncode is None else None
        return {"index": self.plan.index, "node": self.plan.node, "pid": pid, "ready": self.ready,
                "api": f"{self.plan.api[0]}:{self.plan.api[1]}",
                "sfu": self.plan.sfu, "turn": self.plan.turn, "restarts": self.restarts}


class Supervisor:
    def __init__(self, config: Config, argv: list[str], notifier: Notifier | None = None) -> None:
        self.config = config
        self.argv = argv  # `appliance run ...` as this process was started, for the workers
        self.notifier = notifier or Notifier()
        self.count = processes(config)
        self.workers: list[Worker] = []
        self.store: LocalNats | None = None
        self.control = ControlProxy(config, self.count, lambda: [w.describe() for w in self.workers])
        self._dir = ""
        self._stopping = False
        self._ready = asyncio.Event()
        self.store_failed: int | None = None  # the exit status of the workers' own store, when it died

    # --- the sockets and plans --------------------------------------------------------------------

    def _listeners(self) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]], list[tuple[str, str, int]]]:
        """The public listeners as (kind, host, port): every worker's (the API), the SFU's, TURN's."""
        config = self.config
        api = [("tcp", str(config.api.listen.host), config.api.listen.port)]
        sfu = [("udp", str(e.host), e.port) for e in config.sfu.udp] + [("tcp", str(e.host), e.port)
                                                                         for e in config.sfu.tcp]
        turn = [("udp" if listener.transport == "udp" else "tcp", str(listener.endpoint.host), listener.endpoint.port)
                for listener in config.turn.listen]
        return api, sfu, turn

    def _private_host(self) -> str:
        """Where workers reach each other: loopback, or the backbone overlay address in a cluster
        (boxes reach each other's workers there)."""
        if self.config.cluster.nats and self.config.backbone is not None:
            return str(self.config.backbone.overlay.ip)
        return "127.0.0.1"

    def _make_sockets(self, nats: tuple[str, ...], secret: str) -> None:
        sfu_count, turn_count = counts(self.config)
        api, sfu, turn = self._listeners()
        bound: dict[tuple[str, str, int], int] = {}  # a configured port 0: the one the first worker got
        private = self._private_host()
        for index in range(self.count):
            wanted = api + (sfu if index < sfu_count else []) + (turn if index < turn_count else [])
            handed: list[tuple[Handed, socket.socket]] = []
            for kind, host, port in dict.fromkeys(wanted):
                sock = _shared(kind, host, bound.get((kind, host, port), port))
                bound.setdefault((kind, host, port), sock.getsockname()[1])
                handed.append((Handed(kind, host, port, sock.fileno()), sock))
            trunk = udp_socket(private, 0)
            forwarded = make_tcp(private, 0)
            trunk_at, api_at = trunk.getsockname()[:2], forwarded.getsockname()[:2]
            handed += [(Handed("udp", trunk_at[0], trunk_at[1], trunk.fileno()), trunk),
                       (Handed("tcp", api_at[0], api_at[1], forwarded.fileno()), forwarded)]
            plan = WorkerPlan(box=self.config.node.id, index=index, count=self.count, sfu=index < sfu_count, turn=index < turn_count,
                              turn_workers=max(turn_count, 1), trunk=trunk_at, api=api_at, nats=nats, secret=secret)
            notify_path = os.path.join(self._dir, f"notify-{index}")
            notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            notify.bind(notify_path)
            notify.setblocking(False)
            self.workers.append(Worker(plan, handed, notify_path, notify))

    # --- running ----------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self._hangup)
        self._dir = tempfile.mkdtemp(prefix="edgecall-workers-")
        try:
            try:
                await self._start()
            except (StartError, OSError) as e:
                log.error("cannot start the workers", reason=str(e))
                return 1
            monitors = [asyncio.create_task(self._keep(worker)) for worker in self.workers]
            watchdog = asyncio.create_task(self._watch())
            ready = asyncio.create_task(self._ready.wait())
            stopped = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({ready, stopped}, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
            if ready in done:
                await self._acquainted()
                print(self._banner(), flush=True)
                self.notifier.ready(f"serving with {self.count} workers")
                await self._store_or(stopped)
            else:
                log.error("the workers did not all get ready", seconds=READY_TIMEOUT,
                          waiting=[w.plan.index for w in self.workers if not w.ready])
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            self._stopping = True
            self.notifier.stopping()
            await self._stop_workers()
            for task in (*monitors, watchdog, ready, stopped):
                task.cancel()
            await asyncio.gather(*monitors, watchdog, ready, stopped, return_exceptions=True)
            return 0 if ready in done and self.store_failed is None else 1
        finally:
            await self._close()

    async def _acquainted(self) -> None:
        """Wait (bounded) until every worker has heard of every other: a worker answers READY once its
        services run, and until it knows the others, a request it gets for another's session would
        be answered 410 (not on any live node)."""
        loop = asyncio.get_running_loop()
        nodes = {worker.plan.node for worker in self.workers}
        deadline = loop.time() + ACQUAINT_TIMEOUT
        while loop.time() < deadline:
            answers = await asyncio.gather(*(self.control.ask(w.plan.index, STATUS) for w in self.workers))
            if all(nodes <= set((answer.get("cluster") or {}).get("nodes", [])) for answer in answers):
                return
            await asyncio.sleep(0.05)
        log.warning("the workers did not all hear of each other", seconds=ACQUAINT_TIMEOUT)

    async def _store_or(self, stopped: asyncio.Task) -> None:
        """Serve until stopped, or until the workers' own store dies (then the box stops: its
        workers cannot work together without it, and systemd starts the box again)."""
        if self.store is None:
            await stopped
            return
        died = asyncio.create_task(self.store.wait())
        done, _ = await asyncio.wait({stopped, died}, return_when=asyncio.FIRST_COMPLETED)
        if died in done:
            self.store_failed = died.result()
            log.error("the workers' store exited; stopping the box", code=self.store_failed)
        else:
            died.cancel()

    async def _start(self) -> None:
        nats, secret = self.config.cluster.nats, self.config.cluster.secret
        if not nats:
            secret = secrets.token_hex(32)
            self.store = LocalNats(secret)
            await self.store.start()
            nats = (self.store.url,)
        assert secret is not None  # config checks: [cluster] nats needs a secret
        self._make_sockets(tuple(nats), secret)
        await self.control.start()
        loop = asyncio.get_running_loop()
        for worker in self.workers:
            loop.add_reader(worker.notify.fileno(), self._notified, worker)
        for worker in self.workers:
            await self._spawn(worker)

    async def _spawn(self, worker: Worker) -> None:
        env = dict(os.environ)
        worker.plan = dataclasses.replace(worker.plan, life=worker.restarts)
        env[PLAN] = worker.plan.encode()
        env[HANDED_DOWN] = encode(h for h, _ in worker.sockets)
        env["NOTIFY_SOCKET"] = worker.notify_path
        env["WATCHDOG_USEC"] = str(int(WATCHDOG * 1e6))
        env.pop("WATCHDOG_PID", None)
        worker.ready, worker.started = False, time.monotonic()
        worker.fed = worker.started
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "appliance", *self.argv, env=env, pass_fds=[s.fileno() for _, s in worker.sockets])
        log.info("worker started", worker=worker.plan.index, pid=worker.process.pid)

    async def _keep(self, worker: Worker) -> None:
        """Start `worker` again whenever it exits, until the box stops."""
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            if self._stopping:
                return
            worker.ready = False
            worker.exits.append(code)
            if time.monotonic() - worker.started > STABLE_FOR:
                worker.backoff = RESTART_FIRST
            log.error("worker exited; starting it again", worker=worker.plan.index, code=code,
                      seconds=round(worker.backoff, 2))
            await asyncio.sleep(worker.backoff)
            worker.backoff = min(worker.backoff * 2, RESTART_MOST)
            if self._stopping:
                return
            worker.restarts += 1
            await self._spawn(worker)

    def _notified(self, worker: Worker) -> None:
        while True:
            try:
                data = worker.notify.recv(4096)
            except (BlockingIOError, InterruptedError):
                return
            for line in data.decode(errors="replace").splitlines():
                if line == "READY=1":
                    worker.ready = True
                    worker.fed = time.monotonic()
                    log.info("worker ready", worker=worker.plan.index)
                    if all(w.ready for w in self.workers):
                        self._ready.set()
                elif line == "WATCHDOG=1":
                    worker.fed = time.monotonic()

    async def _watch(self) -> None:
        """Kill a worker that stopped feeding its watchdog (hung); _keep starts it again. Feed
        systemd's own watchdog meanwhile."""
        while True:
            await asyncio.sleep(1.0)
            if self.notifier.watchdog_interval:
                self.notifier.watchdog()
            now = time.monotonic()
            for worker in self.workers:
                process = worker.process
                if worker.ready and now - worker.fed > WATCHDOG and process is not None and process.returncode is None:
                    log.error("worker hung (no watchdog); killing it", worker=worker.plan.index,
                              seconds=round(now - worker.fed, 1))
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
                    worker.fed = now

    def _hangup(self) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGHUP)

    async def _stop_workers(self) -> None:
        running = [w.process for w in self.workers if w.process is not None and w.process.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        if not running:
            return
        _, late = await asyncio.wait([asyncio.ensure_future(p.wait()) for p in running],
                                     timeout=self.config.drain.time + STOP_GRACE)
        for process in running:
            if process.returncode is None:
                log.warning("worker did not stop in time; killing it", pid=process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        for task in late:
            await task

    async def _close(self) -> None:
        await self.control.stop()
        loop = asyncio.get_running_loop()
        for worker in self.workers:
            loop.remove_reader(worker.notify.fileno())
            worker.notify.close()
            for _, sock in worker.sockets:
                sock.close()
        if self.store is not None:
            await self.store.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _banner(self) -> str:
        sfu, turn = counts(self.config)
        pids = ", ".join(str(w.process.pid) for w in self.workers if w.process is not None)
        return (f"Edgecall {__version__}, node {self.config.node.id}, runs {self.count} workers "
                f"(SFU in {sfu}, TURN in {turn}; pids {pids}); the store: "
                f"{self.store.url + ' (the workers own)' if self.store else ', '.join(self.config.cluster.nats)}\n"
                "Stop with Ctrl-C.")


def _shared(kind: str, host: str, port: int) -> socket.socket:
    try:
        return udp_socket(host, port, shared=True) if kind == "udp" else make_tcp(host, port, shared=True)
    except OSError as e:
        raise StartError(f"cannot listen on {kind} {host}:{port}: {e.strerror or e}") from None
