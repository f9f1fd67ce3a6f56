"""The life of an update, as plain data: what the box records and what it tells GRUB at each step.

GRUB reads two variables from its environment block (image/grub/grub.cfg):
  edgecall_good  the slot marked good, booted by default (a when unset)
  edgecall_try   a slot to boot once: GRUB clears it as it boots it
So a slot on trial that never gets marked good is left by the next boot, whatever stopped it
(a failed health check that reboots, a kernel panic, a power cut, an operator's reset).

The record (JSON on the state partition) keeps each slot's version, the trial under way and a short
history, so that `appliance update --status` can say what happened. Every step here mutates the
record and returns the GRUB variables to change; the caller writes both.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .layout import SLOTS

GOOD, TRY = "edgecall_good", "edgecall_try"
HISTORY = 20


def good_slot(env: dict[str, str]) -> str:
    value = env.get(GOOD, "")
    return value if value in SLOTS else SLOTS[0]


def armed_slot(env: dict[str, str]) -> str | None:
    value = env.get(TRY, "")
    return value if value in SLOTS else None


@dataclass
class Trial:
    slot: str
    version: str
    previous: str  # the good slot the box goes back to
    previous_version: str
    booted: bool = False
    failure: str | None = None


@dataclass
class Record:
    versions: dict[str, str] = field(default_factory=dict)  # slot -> the version written there
    trial: Trial | None = None
    history: list[str] = field(default_factory=list)

    @property
    def last(self) -> str | None:
        return self.history[-1] if self.history else None

    def log(self, now: str, text: str) -> None:
        self.history = [*self.history, f"{now} {text}"][-HISTORY:]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Record:
        """The record in `text`; a fresh one, saying so, when it cannot be read."""
        try:
            data = json.loads(text)
            trial = data.get("trial")
            return cls(versions={k: str(v) for k, v in data.get("versions", {}).items() if k in SLOTS},
                       trial=Trial(**trial) if trial else None,
                       history=[str(line) for line in data.get("history", [])][-HISTORY:])
        except (ValueError, TypeError, AttributeError):
            return cls(history=["the update record was unreadable and was started afresh"])


def writing(record: Record, env: dict[str, str], slot: str) -> dict[str, str]:
    """Before the first byte goes to `slot`: nothing may boot it until it is whole again."""
    record.versions.pop(slot, None)
    if record.trial is not None and record.trial.slot == slot:
        record.trial = None
    return {TRY: ""} if armed_slot(env) == slot else {}


def armed(record: Record, slot: str, version: str, running: str, running_version: str, now: str) -> dict[str, str]:
    """`slot` holds `version` whole: the next boot tries it once."""
    record.versions[slot] = version
    record.versions[running] = running_version
    record.trial = Trial(slot, version, running, running_version)
    record.log(now, f"wrote {version} to slot {slot}: the next boot tries it once, and it is marked good "
                    f"once healthy, else the box goes back to {running_version} (slot {running})")
    return {TRY: slot}


def booted(record: Record, env: dict[str, str], slot: str, version: str, now: str) -> tuple[dict[str, str], bool]:
    """At boot: what became of a trial, and whether this boot is one (the slot is not the good one)."""
    changes = {TRY: ""} if armed_slot(env) == slot else {}  # GRUB could not clear it: no second try
    record.versions[slot] = version
    trial = record.trial
    if trial is not None and trial.slot == slot:
        if not trial.booted:
            trial.booted = True
            record.log(now, f"booted {version} (slot {slot}) on trial")
    elif trial is not None and armed_slot(env) != trial.slot:
        # GRUB used the one try up (or its kernel did not load), and the good slot runs again.
        what = trial.failure or "did not come up (its boot never reached the health check)"
        record.log(now, f"{trial.version} (slot {trial.slot}) {what}: rolled back to {version} (slot {slot})")
        record.trial = None
    return changes, slot != good_slot(env)


def confirmed(record: Record, slot: str, version: str, seconds: float, now: str) -> dict[str, str]:
    record.trial = None
    record.log(now, f"{version} (slot {slot}) healthy {seconds:.0f} s after boot: marked good")
    return {GOOD: slot, TRY: ""}


def failed(record: Record, env: dict[str, str], slot: str, version: str, reason: str, now: str) -> dict[str, str]:
    """The slot on trial did not become healthy: the next boot is the good slot's."""
    failure = f"failed to become healthy ({reason})"
    good = good_slot(env)
    if record.trial is None or record.trial.slot != slot:
        record.trial = Trial(slot, version, good, record.versions.get(good, "unknown"), booted=True)
    record.trial.failure = failure
    record.log(now, f"{version} (slot {slot}) {failure}: rebooting into slot {good}")
    return {TRY: ""}


def status_lines(record: Record, env: dict[str, str], running: str, running_version: str) -> list[str]:
    """`appliance update --status`: both slots, which runs, which is good, and what happened last."""
    good, armed_for = good_slot(env), armed_slot(env)
    lines = []
    for slot in SLOTS:
        version = running_version if slot == running else record.versions.get(slot, "empty")
        notes = []
        if slot == running:
            notes.append("booted")
        if slot == good:
            notes.append("marked good")
        elif slot == running:
            notes.append("on trial: marked good once healthy")
        if slot == armed_for:
            notes.append("tried once at the next boot")
        lines.append(f"slot {slot}: {version:<24} {', '.join(notes)}".rstrip())
    lines.append(f"last: {record.last or 'no update yet'}")
    return lines
