"""Whether to announce, from one verdict per probe round: rise/fall counters and a hold-down.

Sans-I/O: fed verdicts and the time, it answers announce or not. BIRD has no route-flap
dampening, so the hold-down lives here: once withdrawn, the prefixes stay withdrawn for at
least `hold_down` seconds however well the probes go. Draining withdraws at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Verdict(Enum):
    PASS = "pass"
    FAIL = "fail"
    DRAINING = "draining"


@dataclass
class Hysteresis:
    rise: int
    fall: int
    hold_down: float
    announced: bool = False
    passes: int = 0
    fails: int = 0
    withdrawn_at: float | None = None
    draining: bool = False

    def retune(self, rise: int, fall: int, hold_down: float) -> None:
        """New thresholds (a reload); the counts so far stand."""
        self.rise, self.fall, self.hold_down = rise, fall, hold_down

    def observe(self, verdict: Verdict, now: float) -> bool:
        """Count one round's verdict; whether the prefixes should be announced now."""
        self.draining = verdict is Verdict.DRAINING
        if verdict is Verdict.PASS:
            self.fails = 0
            self.passes += 1
            if not self.announced and self.passes >= self.rise and self.held_until(now) is None:
                self.announced = True
        else:
            self.passes = 0
            self.fails += 1
            if self.announced and (self.draining or self.fails >= self.fall):
                self.announced = False
                self.withdrawn_at = now
        return self.announced

    def held_until(self, now: float) -> float | None:
        """When the hold-down ends, if it has not yet."""
        if self.withdrawn_at is None or now >= self.withdrawn_at + self.hold_down:
            return None
        return self.withdrawn_at + self.hold_down

    def describe(self, now: float) -> str:
        if self.announced:
            return f"announced (failing {self.fails}/{self.fall})" if self.fails else "announced"
        if self.draining:
            return "withdrawn: the service is draining"
        held = self.held_until(now)
        if held is not None and self.passes >= self.rise:
            return f"withdrawn: held down for {held - now:.1f} s more"
        if self.passes:
            return f"withdrawn: rising {self.passes}/{self.rise}"
        return "withdrawn: probes failing"
