"""`appliance net apply`: make the kernel hold what the config wants, all or nothing.

What netconfig made is recorded in a state file (`[net] state_file`), not marked in the kernel:
routes could carry a protocol number, but addresses have no such field on the image's kernel
(IFA_PROTO came in Linux 6.3), and one record serves every kind of item, policy rules included.
The file lives in /run, which empties at boot just as the kernel's network state does. Losing it
only makes netconfig leave things in place; it never makes it remove what it did not create.

The same file records which backbone peers the health agent found down, so that `net apply` wants
what the agent set (their slices dropped) instead of undoing it. Both take a lock on the file
(`<state_file>.lock`) for the whole read-change-record.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from appliance.config import Config

from .kernel import Kernel
from .netstate import Item, from_record, to_record, wanted
from .plan import Change, Plan, plan
from .tunnel import public_key

STATE_VERSION = 1


class ApplyError(Exception):
    """Nothing was left changed: either nothing was tried, or what was done was undone."""


@dataclass(frozen=True)
class State:
    owned: set[Item] = field(default_factory=set)
    # Backbone peers whose slices are dropped (the health agent found their backbone down).
    down: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Outcome:
    plan: Plan
    wanted: set[Item]
    actual: set[Item]
    down: frozenset[str] = frozenset()


def read_state(path: str) -> State:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return State()
    if data.get("version") != STATE_VERSION:
        raise ApplyError(f"{path}: a state file of version {data.get('version')!r}, not {STATE_VERSION}")
    return State({from_record(record) for record in data["items"]}, frozenset(data.get("down", ())))


def save_owned(path: str, items: Iterable[Item], down: Iterable[str] = ()) -> None:
    # Written aside and renamed: a crash leaves the old record or the new one, never half of one.
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    records = sorted((to_record(item) for item in items), key=lambda r: json.dumps(r, sort_keys=True))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".netconfig-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": STATE_VERSION, "items": records, "down": sorted(down)}, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


@contextlib.contextmanager
def locked(path: str) -> Iterator[None]:
    """Hold the state file's lock: `net apply` and the health agent never interleave."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def survey(config: Config, kernel: Kernel) -> Outcome:
    """What `net apply` would do, reading the kernel and the state file but changing nothing."""
    state = read_state(config.net.state_file)
    peers = {peer.node for peer in config.backbone.peers} if config.backbone else set()
    down = state.down & peers
    want = wanted(config, down)
    try:
        actual = kernel.read(want | state.owned)
        interfaces = kernel.interfaces()
    except (OSError, NetlinkError) as e:
        raise ApplyError(f"nothing changed: cannot read the kernel's state: {e}") from e
    return Outcome(plan(want, actual, state.owned, interfaces), want, actual, down)


def kernel_for(config: Config, ipr: IPRoute) -> Kernel:
    """The kernel, holding the WireGuard private key the config gives (items carry the public one)."""
    key = config.backbone.private_key if config.backbone else None
    return Kernel(ipr, {public_key(key): key} if key else {})


def run_changes(kernel: Kernel, changes: list[Change]) -> None:
    """Make `changes` in order; if one fails, undo those made, newest first, and raise ApplyError."""
    done: list[Change] = []
    for change in changes:
        try:
            _make(kernel, change)
        except Exception as e:
            failures = _undo(kernel, done)
            detail = f"; could not undo: {'; '.join(failures)}" if failures else f"; undid {len(done)} change(s)"
            raise ApplyError(f"{change}: {e}{detail}") from e
        done.append(change)


def _make(kernel: Kernel, change: Change) -> None:
    (kernel.add if change.action == "add" else kernel.remove)(change.item)


def _undo(kernel: Kernel, done: list[Change]) -> list[str]:
    failures = []
    for change in reversed(done):
        undo = change.undo()
        try:
            _make(kernel, undo)
        except Exception as e:
            failures.append(f"{undo}: {e}")
    return failures


def record(config: Config, kernel: Kernel, changes: list[Change], owned: set[Item], down: Iterable[str]) -> None:
    """Save what netconfig now owns; if that fails, take the changes back (nobody could remove them later)."""
    try:
        save_owned(config.net.state_file, owned, down)
    except OSError as e:
        failures = _undo(kernel, changes)
        raise ApplyError(f"cannot record the changes in {config.net.state_file}: {e}; "
                         + ("undid them" if not failures else f"could not undo: {'; '.join(failures)}")) from e


def apply(config: Config) -> Outcome:
    """Apply `config`'s network state in this network namespace; raise ApplyError leaving it as found."""
    with locked(config.net.state_file), IPRoute() as ipr:
        kernel = kernel_for(config, ipr)
        outcome = survey(config, kernel)
        if outcome.plan.problems:
            raise ApplyError("nothing changed:\n" + "\n".join(f"  {p}" for p in outcome.plan.problems))
        run_changes(kernel, outcome.plan.changes)
        # BIRD starts after this (appliance-net.service, then bird.service) and refuses an include
        # pattern whose directory does not exist; the directory empty means withdrawn.
        os.makedirs(config.announce.bird_dir, mode=0o755, exist_ok=True)
        record(config, kernel, outcome.plan.changes, outcome.plan.owned, outcome.down)
    return outcome
