"""What a reload changes in a running box: the difference between the configuration it runs and a
changed file, as a plan that appliance/reload.py carries out whole or not at all.

A key is live when whatever holds it takes a new value in place: apps (secrets, limits, per-app
settings), TURN REST secrets, TURN keys and the TURN limits, the admin and metrics tokens, [meet],
the health agent's timers, the drain time, and the backbone's peers when the process may change the
kernel's network (`net apply`). Every other key that changed needs a restart: the plan keeps its
running value, so the config it gives is the running one with the live changes only, and it names
both kinds of change.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import checks
from .checks import Finding
from .schema import Config

# Keys (dotted, without array indices) whose whole value is taken live, with everything under them.
LIVE = frozenset({
    "api.body_timeout", "api.metrics_token", "api.admin_token",
    "apps",
    "turn.secrets", "turn.keys", "turn.credential_max_ttl", "turn.public_host", "turn.max_lifetime",
    "turn.nonce_lifetime", "turn.user_quota", "turn.rest_quota", "turn.issuer_reserve", "turn.stream_idle_timeout",
    "turn.max_streams", "turn.max_peers", "turn.rate_limit_pps", "turn.rate_limit_bps", "turn.new_peers_per_second",
    "turn.new_peer_burst", "turn.usage_retention", "turn.max_revocations",
    "meet.token_ttl", "meet.max_participants",
    "announce.interval", "announce.timeout", "announce.rise", "announce.fall", "announce.hold_down",
    "drain.time",
})
# Live only while a meeting app is set before and after: the room service is made at start or not at all.
MEET_APP = "meet.app"
# Live only when the process may change the kernel's network: the peers' tunnels and slices are its.
BACKBONE_PEERS = "backbone.peers"


@dataclass(frozen=True)
class ReloadPlan:
    config: Config  # what the box runs with after the reload
    applied: tuple[str, ...]  # changed keys taken live, as "apps[demo].secret" or "turn.keys[new]" (added or removed)
    restart: tuple[str, ...]  # changed keys that keep their running value until a restart
    # Cross-key problems of `config`: live changes that do not fit the running values of keys that
    # need a restart (a new peer's slice overlapping the running relay ports, say). The reload is refused.
    conflicts: tuple[Finding, ...]
    # The backbone's peers change: `net apply` must make the kernel hold `config`'s first.
    net_apply: bool


def plan_reload(running: Config, wanted: Config, may_change_network: bool) -> ReloadPlan:
    """The reload from `running` to `wanted` (both valid); `may_change_network`: whether this process
    may change the kernel's network (else backbone peers need a restart)."""
    live = set(LIVE)
    if running.meet.app is not None and wanted.meet.app is not None:
        live.add(MEET_APP)
    if may_change_network:
        live.add(BACKBONE_PEERS)
    config, applied, restart = _merge(running, wanted, "", live.__contains__)
    conflicts = tuple(checks.findings(config)) if applied else ()
    peers_change = (running.backbone is not None and config.backbone is not None
                    and running.backbone.peers != config.backbone.peers)
    return ReloadPlan(config, tuple(applied), tuple(restart), conflicts, peers_change)


def _merge(old: Any, new: Any, path: str, live: Callable[[str], bool]) -> tuple[Any, list[str], list[str]]:
    """(the value to run with, live changes, changes that need a restart) for one key."""
    if old == new:
        return old, [], []
    if live(path):
        return new, changed_keys(old, new, path), []
    if _table(old) and type(old) is type(new):
        values, applied, restart = {}, [], []
        for f in dataclasses.fields(old):
            value, a, r = _merge(getattr(old, f.name), getattr(new, f.name), _join(path, f.name), live)
            values[f.name] = value
            applied += a
            restart += r
        return dataclasses.replace(old, **values), applied, restart
    return old, [], changed_keys(old, new, path)


def changed_keys(old: Any, new: Any, path: str) -> list[str]:
    """The keys under `path` that differ: down to the values, array elements named by their first
    key (an app's id, a peer's node), "path[id]" alone for one added or removed."""
    if old == new:
        return []
    if _table(old) and type(old) is type(new):
        return [key for f in dataclasses.fields(old)
                for key in changed_keys(getattr(old, f.name), getattr(new, f.name), _join(path, f.name))]
    before, after = _elements(old), _elements(new)
    if before is None or after is None or not (before or after):
        return [path]
    out: list[str] = []
    for name in [*before, *(n for n in after if n not in before)]:
        element = f"{path}[{name}]"
        if name in before and name in after:
            out += changed_keys(before[name], after[name], element)
        else:
            out.append(element)
    return out or [path]  # the same elements in another order


def _table(value: Any) -> bool:
    # Endpoint, Listener and PortRange are dataclasses too, but values: they parse from one string.
    return dataclasses.is_dataclass(value) and not hasattr(value, "parse")


def _elements(value: Any) -> dict[str, Any] | None:
    """An array of tables by each element's first key; None for anything else, or when those repeat."""
    if not isinstance(value, tuple) or not all(_table(v) for v in value):
        return None
    named = {str(getattr(v, dataclasses.fields(v)[0].name)): v for v in value}
    return named if len(named) == len(value) else None


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
