"""What one worker process is: its place among the workers and the config it runs with.

A worker is a small box (ARCHITECTURE.md, "the same mechanism inside a box"): a node of its own in
the store (`<node>-w<index>`), its own trunk socket and API address for forwarded requests, the
services its index carries (the first `[sfu] workers` run the SFU, the first `[turn] workers` TURN)
and, for TURN, an equal slice of the relay ports. Pure functions: the supervisor makes plans, each
worker applies its own to the config it reads (at start and at every reload).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass

from ..config import Config
from ..config.values import Endpoint, PortRange

PLAN = "EDGECALL_WORKER"  # the environment variable a worker finds its plan in (JSON)


def usable_cores() -> int:
    """The cores this process may run on: what `workers = 0` (one per core) means."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except OSError:  # a seccomp filter may refuse it
        return os.cpu_count() or 1


def counts(config: Config) -> tuple[int, int]:
    """How many workers run the SFU and how many TURN (0 in the config: one per core, and for TURN
    at most one per relay port; a disabled service: none)."""
    sfu = (config.sfu.workers or usable_cores()) if config.sfu.enabled else 0
    turn = (config.turn.workers or min(usable_cores(), len(config.turn.relay_ports))) if config.turn.enabled else 0
    return sfu, turn


def processes(config: Config) -> int:
    """Worker processes the box runs; 1 is the single-process box (no supervisor)."""
    return max(1, *counts(config))


def relay_slice(ports: PortRange, index: int, count: int) -> PortRange:
    """The `index`th of `count` equal slices of `ports` (the last takes what does not divide)."""
    size = len(ports) // count
    if size < 1:
        raise ValueError(f"{count} TURN workers cannot share {len(ports)} relay ports")
    first = ports.first + index * size
    last = ports.last if index == count - 1 else first + size - 1
    return PortRange(first, last)


@dataclass(frozen=True)
class WorkerPlan:
    box: str  # the box's [node] id
    index: int
    count: int
    sfu: bool
    turn: bool
    turn_workers: int
    trunk: tuple[str, int]  # this worker's trunk socket (handed down)
    api: tuple[str, int]  # where other workers and boxes send it forwarded requests (handed down)
    nats: tuple[str, ...]  # the store: the cluster's, or the supervisor's own nats-server
    secret: str
    # Starts of this worker before this one. Each life is a node of its own: the store sees the one
    # before go, and the sessions it held are carried on (cluster/handover.py), by this life when
    # their clients' packets reach it (its sockets are the same).
    life: int = 0

    def encode(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def decode(cls, text: str) -> WorkerPlan:
        raw = json.loads(text)
        raw["trunk"], raw["api"], raw["nats"] = tuple(raw["trunk"]), tuple(raw["api"]), tuple(raw["nats"])
        return cls(**raw)

    @property
    def node(self) -> str:
        return f"{self.box}-w{self.index}" + (f"-{self.life}" if self.life else "")

    def sibling(self, node: str) -> int | None:
        """The index of the worker of this box that `node` is (any life of it), or None."""
        found = re.fullmatch(re.escape(self.box) + r"-w(\d+)(?:-\d+)?", node)
        return int(found[1]) if found else None

    def apply(self, config: Config) -> Config:
        """`config` as this worker runs it."""
        sfu = dataclasses.replace(config.sfu, enabled=config.sfu.enabled and self.sfu)
        turn = config.turn
        if turn.enabled and self.turn:
            turn = dataclasses.replace(turn, relay_ports=relay_slice(turn.relay_ports, self.index, self.turn_workers))
        else:
            turn = dataclasses.replace(turn, enabled=False)
        cluster = dataclasses.replace(
            config.cluster, nats=self.nats, secret=self.secret,
            trunk=Endpoint.parse(_endpoint(self.trunk)), api=Endpoint.parse(_endpoint(self.api)))
        node = dataclasses.replace(config.node, id=self.node)
        return dataclasses.replace(config, node=node, sfu=sfu, turn=turn, cluster=cluster)


def _endpoint(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def from_environment() -> WorkerPlan | None:
    text = os.environ.get(PLAN)
    return WorkerPlan.decode(text) if text else None
