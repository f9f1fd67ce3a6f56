"""TURN revocations shared by the boxes of a cluster (turn.revocation_store.SharedRevocations).

Each box keeps its own file of revocations (turn.revocation_store.RevocationFile) and writes every
revocation to the cluster store's REVOCATIONS bucket as well; every box watches the bucket and has its
TURN core refuse at once what any box revoked. The bucket is what outlives any box; the file is what a
box that starts while the store cannot be reached still knows (its own revocations and the ones it
heard of). A start reads both, returns them together, and writes each what it lacks of the other.

A write the store refuses (StoreUnavailable, or no answer in time) is kept by the file all the same
and retried in the background, a bounded number of times. The entries' format and checks are in
revocation_entries.py; this module only moves them.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping

from ..logs import get_logger
from ..turn.revocation_store import RevocationStore
from .revocation_entries import Unreadable, decode, encode, missing
from .store import REVOCATIONS, Entry, Store, StoreUnavailable

log = get_logger("cluster.revocations")

# Reading the bucket at start holds up the TURN listeners (nothing may be allowed ahead of a
# revocation), so it is bounded; what it did not get to, the watch brings right after.
LOAD_TIMEOUT = 5.0
# A revocation through the API waits this long for the store before it answers.
WRITE_TIMEOUT = 2.0
# Seconds before each retry of the writes the store refused; then they are given up (the file keeps
# them, and the box's next start writes them again).
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 60.0, 60.0)
REWATCH_DELAY = 1.0


class ClusterRevocations:
    """`store()` is the cluster service's store, which exists once that service has started (before
    the TURN service, which calls `load`); `file` is the box's own store of revocations."""

    def __init__(self, store: Callable[[], Store | None], file: RevocationStore,
                 wall: Callable[[], float] = time.time) -> None:
        self._store_of = store
        self.file = file
        self.wall = wall
        self._watching: AsyncIterator[Entry | None] | None = None  # the start's watch, which `follow` goes on with
        self._unsent: dict[str, int] = {}  # kept by the file, not yet by the store
        self._unfiled: dict[str, int] = {}  # heard from the store, not yet written to the file
        self._sending: asyncio.Task[None] | None = None
        self._filing: asyncio.Task[None] | None = None
        self._why = ""  # the store's last refusal, for the logs

    def _store(self) -> Store:
        store = self._store_of()
        if store is None:
            raise StoreUnavailable("the cluster service has not started")
        return store

    # --- turn.revocation_store.SharedRevocations ----------------------------------------------------

    async def load(self) -> dict[str, int]:
        filed = await self.file.load()
        stored: dict[str, int] = {}
        try:
            async with asyncio.timeout(LOAD_TIMEOUT):
                await self._read_bucket(stored)
        except (StoreUnavailable, TimeoutError) as e:
            self._watching = None  # ended by the error: `follow` watches anew
            log.warning("the cluster store's revocations not read whole at start; the watch brings the rest",
                        read=len(stored), reason=str(e) or f"no answer within {LOAD_TIMEOUT:g} s")
        else:
            wall = self.wall()
            self._file(missing(filed, stored, wall))
            self._send(missing(stored, filed, wall))
        return {**filed, **stored}

    async def add(self, username: str, expiry: int) -> None:
        file_error: OSError | None = None
        try:
            await self.file.add(username, expiry)
        except OSError as e:
            file_error = e
        if await self._put(username, expiry):
            if file_error is not None:
                log.error("revocation not written to this box's file; the cluster store keeps it", username=username,
                          reason=str(file_error))
            return
        self._send({username: expiry})
        if file_error is not None:
            raise file_error
        log.warning("revocation not in the cluster store yet: other boxes accept the credential until a retry "
                    "writes it", username=username, reason=self._why)

    async def follow(self, revoked: Callable[[str], bool]) -> None:
        try:
            while True:
                watch, self._watching = self._watching, None
                try:
                    async for entry in watch or self._store().watch(REVOCATIONS):
                        read = self._read(entry)
                        if read is not None and revoked(read[0]):
                            self._file({read[0]: read[1]})
                except StoreUnavailable as e:
                    log.warning("revocations watch lost; watching again", reason=str(e))
                except Exception:
                    log.exception("following the cluster's revocations failed; watching again")
                await asyncio.sleep(REWATCH_DELAY)
        finally:
            for task in (self._sending, self._filing):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    # --- reading the bucket ---------------------------------------------------------------------------

    async def _read_bucket(self, into: dict[str, int]) -> None:
        """The bucket's current entries into `into`, through a watch that `follow` then goes on with."""
        self._watching = watch = self._store().watch(REVOCATIONS)
        while (entry := await anext(watch)) is not None:
            read = self._read(entry)
            if read is not None:
                into[read[0]] = read[1]

    def _read(self, entry: Entry | None) -> tuple[str, int] | None:
        """(username, expiry) of a revocation in force; None for the watch's marker, a deletion (a
        credential once revoked stays so), an expired entry or one that is no revocation."""
        if entry is None or entry.value is None:
            return None
        try:
            username, expiry = decode(entry.key, entry.value)
        except Unreadable as e:
            log.warning("an entry of the cluster's revocations is no revocation; ignored", key=entry.key, reason=str(e))
            return None
        return (username, expiry) if expiry > self.wall() else None

    # --- writes in the background ---------------------------------------------------------------------

    async def _put(self, username: str, expiry: int) -> bool:
        entry_key, value = encode(username, expiry)
        try:
            async with asyncio.timeout(WRITE_TIMEOUT):
                await self._store().put(REVOCATIONS, entry_key, value)
        except (StoreUnavailable, TimeoutError) as e:
            self._why = str(e) or f"no answer within {WRITE_TIMEOUT:g} s"
            return False
        return True

    def _send(self, revocations: Mapping[str, int]) -> None:
        self._unsent.update(revocations)
        if self._unsent and (self._sending is None or self._sending.done()):
            self._sending = asyncio.create_task(self._send_unsent())

    async def _send_unsent(self) -> None:
        for delay in RETRY_DELAYS:
            await asyncio.sleep(delay)
            for username, expiry in list(self._unsent.items()):
                if expiry > self.wall() and not await self._put(username, expiry):
                    break
                if self._unsent.get(username) == expiry:
                    del self._unsent[username]
            if not self._unsent:
                return
        log.error("revocations not written to the cluster store: other boxes accept these credentials (this box's "
                  "next start writes them again)", count=len(self._unsent), reason=self._why)
        self._unsent.clear()

    def _file(self, revocations: Mapping[str, int]) -> None:
        self._unfiled.update(revocations)
        if self._unfiled and (self._filing is None or self._filing.done()):
            self._filing = asyncio.create_task(self._file_unfiled())

    async def _file_unfiled(self) -> None:
        while self._unfiled:
            batch, self._unfiled = self._unfiled, {}
            # Together, so that the file writes them in one go (RevocationFile batches what waits).
            results = await asyncio.gather(*(self.file.add(u, e) for u, e in batch.items()), return_exceptions=True)
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                log.error("revocations heard from the cluster not written to this box's file; they rely on the "
                          "cluster store at its next start", count=len(failed), reason=str(failed[0]))
