"""The SFU as the runner hosts it (service "sfu"), its only asyncio part: the media port's sockets,
the sans-I/O session model on them, the one timer the core asks for, and each session's SCTP
association (appliance.rtc.sctp, aiortc's, which runs on asyncio)."""
from __future__ import annotations

import asyncio
from collections.abc import Callable

from ..coretimer import CoreTimer
from ..logs import get_logger
from ..rtc.port import Session as PortSession
from ..rtc.sctp import Association, Message
from ..rtc.service import MediaService
from .datachannels import DataChannel
from .metrics import SfuCollector
from .sfu import Sfu

log = get_logger("sfu")


class SfuService:
    name = "sfu"

    def __init__(self, box) -> None:
        self.box = box
        self.media = MediaService(box)
        self.sfu = Sfu(self.media.port, self.media.candidates, self._associate, box.config.sfu.retransmissions)
        box.registry.register(SfuCollector(self.sfu))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: CoreTimer | None = None

    async def start(self) -> None:
        await self.media.start()
        self._loop = asyncio.get_running_loop()
        self.sfu.start(self._loop.time())
        self._timer = CoreTimer(self._loop, self._on_timer)
        self._timer.set(self.sfu.get_timer())

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None
        for session in list(self.sfu.sessions.values()):
            self.sfu.close_session(session)
        await self.media.stop()

    def _on_timer(self, now: float) -> None:
        if self._timer is None:
            return
        self.sfu.handle_timer(now)
        self._timer.set(self.sfu.get_timer())

    def _associate(self, port_session: PortSession, remote_port: int, max_message_size: int | None,
                   on_message: Callable[[DataChannel, Message], None]) -> Association[DataChannel]:
        loop = self._loop or asyncio.get_running_loop()
        return Association(self.media.port, port_session, loop.time, remote_port, max_message_size, on_message)

    def health(self) -> str | None:
        return self.media.health()

    def urls(self) -> list[str]:
        api = f"http://{self.box.config.api.listen}"
        return [*self.media.urls(), f"Calls API  {api}/v1/apps/<appId>  (Sessions and Tracks)"]
