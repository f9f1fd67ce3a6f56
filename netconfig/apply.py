"""`appliance net apply`: make the kernel hold what the config wants, all or nothing.

What netconfig made is recorded in a state file (`[net] state_file`), not marked in the kernel:
routes could carry a protocol number, but addresses have no such field on the image's kernel
(IFA_PROTO came in Linux 6.3), and one record serves every kind of item, policy rules included.
The file lives in /run, which empties at boot just as the kernel's network state does. Losing it
only makes netconfig leave things in place; it never makes it remove what it did not create.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2 import IPRoute

from appliance.config import Config

from .kernel import Kernel
from .netstate import Item, from_record, to_record, wanted
from .plan import Change, Plan, plan

STATE_VERSION = 1


class ApplyError(Exception):
    """Nothing was left changed: either nothing was tried, or what was done was undone."""


@dataclass(frozen=True)
class Outcome:
    plan: Plan
    wanted: set[Item]
    actual: set[Item]


def load_owned(path: str) -> set[Item]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return set()
    if data.get("version") != STATE_VERSION:
        raise ApplyError(f"{path}: a state file of version {data.get('version')!r}, not {STATE_VERSION}")
    return {from_record(record) for record in data["items"]}


def save_owned(path: str, items: Iterable[Item]) -> None:
    # Written aside and renamed: a crash leaves the old record or the new one, never half of one.
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    records = sorted((to_record(item) for item in items), key=lambda r: json.dumps(r, sort_keys=True))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".netconfig-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"version": STATE_VERSION, "items": records}, f, indent=1)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def survey(config: Config, kernel: Kernel) -> Outcome:
    """What `net apply` would do, reading the kernel and the state file but changing nothing."""
    want = wanted(config)
    actual = kernel.read()
    return Outcome(plan(want, actual, load_owned(config.net.state_file), kernel.interfaces()), want, actual)


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


def apply(config: Config) -> Outcome:
    """Apply `config`'s network state in this network namespace; raise ApplyError leaving it as found."""
    with IPRoute() as ipr:
        kernel = Kernel(ipr)
        outcome = survey(config, kernel)
        if outcome.plan.problems:
            raise ApplyError("nothing changed:\n" + "\n".join(f"  {p}" for p in outcome.plan.problems))
        run_changes(kernel, outcome.plan.changes)
        # BIRD starts after this (appliance-net.service, then bird.service) and refuses an include
        # pattern whose directory does not exist; the directory empty means withdrawn.
        os.makedirs(config.announce.bird_dir, mode=0o755, exist_ok=True)
        try:
            save_owned(config.net.state_file, outcome.plan.owned)
        except OSError as e:
            # Changes nobody recorded could never be removed later: take them back.
            failures = _undo(kernel, outcome.plan.changes)
            raise ApplyError(f"cannot record the changes in {config.net.state_file}: {e}; "
                             + ("undid them" if not failures else f"could not undo: {'; '.join(failures)}")) from e
    return outcome
