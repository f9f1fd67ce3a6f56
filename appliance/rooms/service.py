"""The room service (service "rooms"): the WebSockets of the meeting pages this box serves, their
participants' entries in the cluster store (written on join and change, refreshed every REFRESH,
deleted on leave), and the rosters of every box's participants, from the store's watch, pushed to
this box's pages whenever their room changes."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

from ..cluster.seal import Sealer
from ..cluster.store import ROOMS, Bucket, key
from ..logs import get_logger
from .roster import REFRESH, Participant, Room, Rosters

log = get_logger("rooms")


class Shared(Protocol):
    """What the rooms ask of the cluster service (cluster/service.py): its ordered writes, its
    watches, and its sealer."""

    store_sealer: Sealer

    def write(self, bucket: Bucket, entry_key: str, value: bytes | None) -> None: ...

    async def watch(self, bucket: Bucket, apply: Callable[[str, bytes | None], None]) -> None: ...

    async def settled(self) -> None: ...


@dataclass(eq=False)
class Page:
    """One page's WebSocket and the participant it is."""

    participant: Participant
    socket: web.WebSocketResponse
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def room(self) -> Room:
        return (self.participant.app, self.participant.room)


class RoomService:
    name = "rooms"

    def __init__(self, box) -> None:
        self.box = box
        self.rosters = Rosters()
        self.pages: dict[Room, set[Page]] = {}
        self._tasks: list[asyncio.Task] = []
        self._cluster: Shared = box.service("cluster")

    async def start(self) -> None:
        self._tasks = [asyncio.create_task(job()) for job in (self._watch, self._refresh)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        for pages in list(self.pages.values()):
            for page in list(pages):
                await page.socket.close()
        await self._cluster.settled()

    def health(self) -> str | None:
        return None

    def urls(self) -> list[str]:
        meet = self.box.config.meet
        if meet.app is None:
            return []
        return [f"meeting    http://{self.box.config.api.listen}/meet/hello  (any room name; open it in two tabs)"]

    # --- pages ---------------------------------------------------------------------------------

    def count(self, app: str, room: str) -> int:
        return self.rosters.count((app, room))

    def enter(self, participant: Participant, socket: web.WebSocketResponse) -> Page:
        page = Page(participant, socket)
        self.pages.setdefault(page.room, set()).add(page)
        self._write(participant)
        page.changed.set()
        return page

    def update(self, page: Page, message: dict) -> None:
        """A page's news of itself; ValueError says what is wrong with it."""
        page.participant.update(message)
        self._write(page.participant)

    def leave(self, page: Page) -> None:
        pages = self.pages.get(page.room, set())
        pages.discard(page)
        if not pages:
            self.pages.pop(page.room, None)
        entry = self._key(page.participant)
        self._cluster_write(entry, None)
        self._changed(self.rosters.heard(entry, None, time.monotonic()))

    async def serve(self, page: Page) -> None:
        """Send the page its room's roster whenever it changes, until its socket closes."""
        while not page.socket.closed:
            await page.changed.wait()
            page.changed.clear()
            roster = [p.public() for p in self.rosters.roster(page.room)]
            with contextlib.suppress(ConnectionResetError):
                await page.socket.send_json({"type": "roster", "participants": roster})

    # --- the store -------------------------------------------------------------------------------

    @staticmethod
    def _key(participant: Participant) -> str:
        return key(f"{participant.app}/{participant.room}/{participant.id}")

    def _write(self, participant: Participant) -> None:
        entry = self._key(participant)
        self._cluster_write(entry, participant.encode())
        # This box's own pages see the change at once, before the watch brings it back.
        self._changed(self.rosters.heard(entry, participant, time.monotonic()))

    def _cluster_write(self, entry: str, value: bytes | None) -> None:
        cluster = self._cluster
        sealed = None if value is None else cluster.store_sealer.seal(value, f"{ROOMS.name}/{entry}")
        cluster.write(ROOMS, entry, sealed)

    def _apply(self, entry: str, value: bytes | None) -> None:
        participant = None
        if value is not None:
            try:
                participant = Participant.decode(self._cluster.store_sealer.open(value, f"{ROOMS.name}/{entry}"))
            except ValueError as e:
                log.warning("unreadable room entry", key=entry, reason=str(e))
        self._changed(self.rosters.heard(entry, participant, time.monotonic()))

    def _changed(self, room: Room | None) -> None:
        for page in self.pages.get(room, ()) if room is not None else ():
            page.changed.set()

    async def _watch(self) -> None:
        await self._cluster.watch(ROOMS, self._apply)

    async def _refresh(self) -> None:
        """Keep this box's participants' entries fresh, and time out those nobody refreshes."""
        while True:
            await asyncio.sleep(REFRESH)
            for pages in list(self.pages.values()):
                for page in pages:  # unchanged: written again only to stay alive, no page told
                    entry = self._key(page.participant)
                    self._cluster_write(entry, page.participant.encode())
                    self.rosters.heard(entry, page.participant, time.monotonic())
            for room in self.rosters.expire(time.monotonic()):
                self._changed(room)
