"""The SFU as the runner hosts it (service "sfu"): the media port, the session model, and the
timers of both (RTCP sender reports, the sweep of idle sessions and tracks)."""
from __future__ import annotations

import asyncio
import contextlib

from ..logs import get_logger
from ..rtc.service import MediaService
from .metrics import SfuCollector
from .sfu import Sfu
from .transport import FEEDBACK_INTERVAL

log = get_logger("sfu")

REPORT_INTERVAL = 1.0
SWEEP_INTERVAL = 5.0
ADAPT_INTERVAL = 0.5  # simulcast layer choice


class SfuService:
    name = "sfu"

    def __init__(self, box) -> None:
        self.box = box
        self.media = MediaService(box)
        self.sfu = Sfu(self.media, box.config.sfu.retransmissions)
        box.registry.register(SfuCollector(self.sfu))
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        await self.media.start()
        self.sfu.clock = asyncio.get_running_loop().time
        self._tasks = [
            asyncio.create_task(self._every(REPORT_INTERVAL, self.sfu.send_reports)),
            asyncio.create_task(self._every(SWEEP_INTERVAL, self.sfu.sweep)),
            asyncio.create_task(self._every(ADAPT_INTERVAL, self.sfu.adapt)),
            asyncio.create_task(self._every(FEEDBACK_INTERVAL, self.sfu.send_transport_feedback)),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for session in list(self.sfu.sessions.values()):
            self.sfu.close_session(session)
        await self.media.stop()

    @staticmethod
    async def _every(interval: float, job) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                job(asyncio.get_running_loop().time())
            except Exception:  # one failed round must not end the timer for the box's lifetime
                log.exception("periodic job failed", job=job.__name__)

    def health(self) -> str | None:
        return self.media.health()

    def urls(self) -> list[str]:
        api = f"http://{self.box.config.api.listen}"
        return [*self.media.urls(), f"Calls API  {api}/v1/apps/<appId>  (Sessions and Tracks)"]
