"""A core's timer on the event loops the box runs (uvloop) and its tests use (asyncio's own)."""
import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from appliance.coretimer import CoreTimer

RUNNERS: dict[str, Callable[[Coroutine[Any, Any, Any]], Any]] = {"uvloop": uvloop.run, "asyncio": asyncio.run}


class Core:
    """What a sans-I/O core does with its timer: runs what is due at `now`, else asks again."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.calls: list[float] = []
        self.done = asyncio.Event()

    def get_timer(self) -> float | None:
        return None if self.done.is_set() else self.deadline

    def handle_timer(self, now: float) -> None:
        self.calls.append(now)
        if now >= self.deadline:
            self.done.set()


@pytest.mark.parametrize("loop", RUNNERS)
@pytest.mark.parametrize("past_tick", [0.0, 0.0004, 0.0006])
def test_a_deadline_is_met_with_one_call(loop: str, past_tick: float) -> None:
    # uvloop's clock counts whole milliseconds and rounds a delay: 0.4 ms past a tick fires at the
    # tick, before loop.time() reaches the deadline. Told the loop's time, the core would ask for the
    # same deadline again and the loop would spin (hundreds of calls) until its clock caught up.
    async def main() -> tuple[list[float], float]:
        running = asyncio.get_running_loop()
        core = Core(running.time() + 0.02 + past_tick)
        timer = CoreTimer(running, lambda now: (core.handle_timer(now), timer.set(core.get_timer())))
        timer.set(core.get_timer())
        await asyncio.wait_for(core.done.wait(), 5)
        return core.calls, core.deadline

    calls, deadline = RUNNERS[loop](main())
    assert len(calls) == 1 and calls[0] >= deadline


def test_a_deadline_accumulated_in_floats() -> None:
    # 1.1 + 0.1 is 1.2000000000000002: a deadline a float's error past the tick the core means.
    async def main() -> list[float]:
        running = asyncio.get_running_loop()
        core = Core(round(running.time(), 3) + 0.1 + 0.1 + 0.1)
        timer = CoreTimer(running, lambda now: (core.handle_timer(now), timer.set(core.get_timer())))
        timer.set(core.get_timer())
        await asyncio.wait_for(core.done.wait(), 5)
        return core.calls

    assert len(uvloop.run(main())) == 1


def test_set_replaces_and_cancel_disarms() -> None:
    async def main() -> list[float]:
        running = asyncio.get_running_loop()
        fired: list[float] = []
        timer = CoreTimer(running, fired.append)
        timer.set(running.time() + 5)
        timer.set(running.time() + 0.01)  # sooner: replaces the first
        assert timer.when is not None
        await asyncio.sleep(0.05)
        timer.set(running.time() + 0.01)
        timer.cancel()
        assert timer.when is None
        await asyncio.sleep(0.05)
        return fired

    assert len(uvloop.run(main())) == 1
