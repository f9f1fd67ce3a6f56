"""The one timer a sans-I/O core asks for (`get_timer`/`handle_timer`), armed on an asyncio loop:
the media port's, the SFU's and TURN's shells share it."""
from __future__ import annotations

import asyncio
from collections.abc import Callable


class CoreTimer:
    """Calls `fire(now)` once the deadline last `set` is reached.

    A loop fires a timer when its own clock says the deadline has come, which may be a little before
    `loop.time()` reaches it: asyncio runs what falls within its clock resolution, and uvloop counts
    whole milliseconds and rounds delays (a deadline like 1.1 + 0.1 also lies a float's error past
    the tick it means). Told the loop's time then, a core finds nothing due, asks again for the same
    deadline, and the loop spins on zero timeouts until its clock catches up: about 30 empty
    epoll_pwait calls at each of the SFU's ten feedback rounds a second, most of an idle box's CPU. So
    `fire` is told the deadline itself when the loop's time is short of it."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fire: Callable[[float], None]) -> None:
        self.loop = loop
        self.fire = fire
        self.when: float | None = None  # the deadline armed, None when nothing is
        self._handle: asyncio.Handle | None = None

    def set(self, when: float | None) -> None:
        """Arm for `when` (None: nothing), replacing the deadline armed before."""
        if when == self.when and self._handle is not None:
            return  # the usual case after each packet: the deadline has not moved
        self.cancel()
        if when is not None:
            self._handle = self.loop.call_at(when, self._fired)
            self.when = when

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self.when = None

    def _fired(self) -> None:
        when = self.when
        self._handle = self.when = None
        now = self.loop.time()
        self.fire(now if when is None or now >= when else when)
