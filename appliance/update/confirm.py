"""`appliance update --confirm`, run at boot by appliance-update-confirm.service while an update is pending:
record what became of the last trial, and when this boot is one, mark the slot good once the box is
healthy, or reboot into the good slot when it is not healthy by the deadline."""
from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from . import grubenv, lifecycle, store
from .health import Health, probe
from .layout import Layout

EVERY = 2.0  # seconds between health probes


def reboot_now() -> None:
    """No drain: a box that is not healthy announces nothing."""
    subprocess.run(["systemctl", "reboot"], check=True, timeout=60)


def confirm(layout: Layout, deadline: float, check: Callable[[], Health] = probe,
            reboot: Callable[[], None] = reboot_now, clock: Callable[[], float] = time.monotonic,
            sleep: Callable[[float], None] = time.sleep, say: Callable[[str], None] = print) -> int:
    running, version = layout.booted_slot(), layout.running_version()
    record = store.load(layout)
    changes, on_trial = lifecycle.booted(record, grubenv.read(layout.grubenv), running, version, store.now())
    store.set_env(layout, changes)
    store.save(layout, record)
    if not on_trial:
        store.set_pending(layout, record.trial is not None)  # armed with --no-reboot: still to be tried
        say(record.last or f"{version} (slot {running}) is the good slot")
        return 0
    say(f"{version} (slot {running}) is on trial: it is marked good once healthy within {deadline:.0f} s")
    give_up = clock() + deadline
    health = check()
    while not health.healthy and not health.final and clock() < give_up:
        sleep(EVERY)
        health = check()
    if health.healthy:
        store.set_env(layout, lifecycle.confirmed(record, running, version, clock(), store.now()))
        store.save(layout, record)
        store.set_pending(layout, False)
        say(record.last or "")
        return 0
    reason = health.reason if health.final else f"not within {deadline:.0f} s: {health.reason}"
    store.set_env(layout, lifecycle.failed(record, grubenv.read(layout.grubenv), running, version, reason,
                                           store.now()))
    store.save(layout, record)
    say(record.last or "")
    reboot()
    return 1
