"""The media port's shell: its timer under uvloop, which the box runs on."""
import asyncio

import uvloop

from appliance.rtc.io import MediaIO
from appliance.rtc.port import MediaPort
from tests.unit.rtc.harness import PORT_CONTEXT


def test_a_deadline_already_past_and_then_a_later_one():
    # uvloop's call_at gives a Handle without when() for a time already past: a second wake must not ask it.
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        port = MediaPort(PORT_CONTEXT)
        io = MediaIO(loop, port)
        ran: list[float] = []
        handle_timer = port.handle_timer
        port.handle_timer = lambda now: (ran.append(now), handle_timer(now))  # type: ignore[method-assign]
        port.wake(loop.time() - 1)
        port.wake(loop.time() + 5)
        port.wake(loop.time() - 2)
        await asyncio.sleep(0.01)
        await io.close()
        return ran

    assert len(uvloop.run(main())) == 1
