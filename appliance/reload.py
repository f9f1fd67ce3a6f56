"""Reloading the running box's configuration in place: `appliance reload` (over the control socket),
SIGHUP, and `systemctl reload appliance` (the unit's ExecReload runs `appliance reload`) all come here.

The box re-reads the file it was started with and refuses it whole when anything in it is wrong.
Otherwise it carries out the plan config/reload.py makes: the backbone's peers first through
`net apply` (the one step that can fail, and it undoes itself), then the box and its services take
the new running config. Sessions, TURN allocations and connections live through it.
"""
from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import EMBEDDED, Config, ConfigError, DrainConfig, Problem, parse_config, read_text
from .config.lines import dotted, key_lines, line_of
from .config.reload import plan_reload
from .logs import get_logger
from .workers.plan import WorkerPlan

if TYPE_CHECKING:
    from .runner import Box

log = get_logger("reload")

# How long `appliance reload` waits for the box's answer: `net apply` of a backbone change takes a while.
ANSWER_TIMEOUT = 30.0
CAP_NET_ADMIN = 12


@dataclass(frozen=True)
class ConfigSource:
    """Where the box's config comes from: the file (None: the embedded default, which has none to
    re-read) and what the command line puts over it (`appliance run --drain-time`)."""

    path: str | None = None
    drain_time: float | None = None
    worker: WorkerPlan | None = None  # this process is one of the box's workers (appliance/workers/)

    def over(self, config: Config) -> Config:
        if self.drain_time is not None:
            config = dataclasses.replace(config, drain=DrainConfig(self.drain_time))
        return config if self.worker is None else self.worker.apply(config)


@dataclass(frozen=True)
class Outcome:
    """What a reload did: the changed keys it applied and those that need a restart, or the problems
    for which it changed nothing."""

    source: str
    applied: tuple[str, ...] = ()
    restart: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()  # "FILE:LINE: key: what is wrong"

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "source": self.source, "applied": list(self.applied), "restart": list(self.restart),
                "problems": list(self.problems)}


def describe(answer: dict[str, Any]) -> list[str]:
    """An answer to "reload" as `appliance reload` prints it."""
    source = answer.get("source", "?")
    if not answer.get("ok"):
        return [f"{source}: not reloaded, nothing changed:", *(f"  {p}" for p in answer.get("problems", ()))]
    applied, restart = answer.get("applied", []), answer.get("restart", [])
    lines = [f"{source}: reloaded" if applied or restart else f"{source}: reloaded, no key changed"]
    if applied:
        lines.append(f"  applied: {', '.join(applied)}")
    if restart:
        lines.append(f"  needs a restart (the box keeps the running value): {', '.join(restart)}")
    return lines


def holds_net_admin() -> bool:
    """Whether this process may change the kernel's network (CAP_NET_ADMIN): root in the lab; the
    image's service may not, so there backbone peers change with a restart of appliance-config."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    return False


class Reloader:
    def __init__(self, box: Box) -> None:
        self.box = box
        self._lock = asyncio.Lock()
        self._hangups: set[asyncio.Task[Outcome]] = set()

    async def reload(self) -> Outcome:
        # One at a time: each plans from what the one before left.
        async with self._lock:
            outcome = await self._reload()
        if outcome.ok:
            log.info("reloaded", source=outcome.source, applied=", ".join(outcome.applied) or "nothing",
                     needs_restart=", ".join(outcome.restart) or "nothing")
        else:
            log.error("reload refused: nothing changed", source=outcome.source)
            for problem in outcome.problems:
                log.error("reload problem", problem=problem)
        return outcome

    def hangup(self) -> None:
        """SIGHUP: reload in the background; the log says how it went."""
        task = asyncio.get_running_loop().create_task(self.reload())
        self._hangups.add(task)
        task.add_done_callback(self._hangups.discard)

    async def _reload(self) -> Outcome:
        source = self.box.source
        if source.path is None:
            return Outcome(EMBEDDED, problems=(
                f"{EMBEDDED}: the box runs the embedded default and has no file to re-read "
                "(start it with --config FILE to reload one)",))
        path = source.path
        try:
            text = read_text(path)
            wanted = source.over(parse_config(text, path))
        except ConfigError as e:
            return Outcome(path, problems=tuple(p.render(path) for p in e.problems))
        plan = plan_reload(self.box.config, wanted, may_change_network=holds_net_admin())
        if plan.conflicts:
            lines = key_lines(text)
            return Outcome(path, problems=tuple(
                Problem(line_of(lines, key), dotted(key), f"{message} (beside the running values of the keys "
                        "that need a restart: restart to use this file)").render(path)
                for key, message in plan.conflicts))
        if plan.net_apply:
            # Only here: pyroute2 is not worth importing at every start for a change this rare.
            from pyroute2.netlink.exceptions import NetlinkError

            from netconfig.apply import ApplyError, apply

            try:
                await asyncio.to_thread(apply, plan.config)
            except (ApplyError, OSError, NetlinkError) as e:
                return Outcome(path, problems=(f"{path}: backbone.peers: net apply: {e}",))
        self.box.reconfigure(plan.config)
        return Outcome(path, plan.applied, plan.restart)
