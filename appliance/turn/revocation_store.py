"""Where TURN revocations outlive the process: the store's seam, and a file on the state partition.

The core holds the revocations in force (`credentials.Revocations`); a store keeps them for the next
start. A store that boxes share (`SharedRevocations`: cluster/revocations.py, on the cluster store's
bucket) also reports the revocations the other boxes make, for the core to refuse at once.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from ..logs import get_logger

log = get_logger("turn")


class RevocationStore(Protocol):
    async def load(self) -> dict[str, int]:
        """The revocations kept, username -> expiry (some may have expired since)."""

    async def add(self, username: str, expiry: int) -> None:
        """Keep `username` revoked until `expiry`: kept once this returns; raises OSError when it cannot be."""


class SharedRevocations(RevocationStore, Protocol):
    async def follow(self, revoked: Callable[[str], bool]) -> None:
        """Until cancelled, call `revoked(username)` for each revocation any box makes, as it comes;
        `revoked` answers whether it was news to this box (this box's own come back too). Writes
        still waiting in the background for a retry are given up when this is cancelled."""


class RevocationFile:
    """Revocations as lines of JSON, `["<username>", <expiry>]`, appended and fsynced as they come
    (adds that arrive during a write go out together in the next one), so each costs one short write.
    A crash can only cut the last line short, which loading ignores. Once as many lines have been
    appended as the last rewrite kept (and at least `compact_after`), the file is rewritten whole
    without the expired entries: temp file, fsync, rename, so a crash leaves the old file or the new.
    Expiries are Unix times (the usernames'), so `clock` is the wall clock."""

    def __init__(self, path: str, clock: Callable[[], float] = time.time, compact_after: int = 1024) -> None:
        self.path = path
        self.clock = clock
        self.compact_after = compact_after
        self._entries: dict[str, int] = {}
        self._pending: list[tuple[str, int]] = []
        self._lock = asyncio.Lock()
        self._kept = 0  # lines the last rewrite wrote
        self._appended = 0  # lines appended since
        self._rewrite_next = False

    async def load(self) -> dict[str, int]:
        """What the file holds. A line that does not parse is reported, the file moved aside for the
        operator to look at, and the rest kept; an unreadable file is reported and the box starts
        without it."""
        try:
            self._entries, lines, bad, cut = await asyncio.to_thread(self._read)
        except FileNotFoundError:
            return {}
        except OSError as e:
            log.error("cannot read the revocations; revoked credentials work again", path=self.path, reason=str(e))
            return {}
        self._appended = lines
        if bad:
            aside = self.path + ".corrupt"
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            log.error("the revocations file is corrupt: lines that do not parse are dropped, the rest kept",
                      path=self.path, lines=bad, kept_as=aside)
        elif cut:
            log.warning("the revocations file's last line was cut short (a crash while writing); it is ignored",
                        path=self.path)
        if bad or cut:
            # Appending after a cut line would garble the next one: rewrite first.
            self._rewrite_next = True
            try:
                await self._compact()
            except OSError as e:
                log.error("cannot rewrite the revocations file; the next revocation tries again", path=self.path,
                          reason=str(e))
        return dict(self._entries)

    async def add(self, username: str, expiry: int) -> None:
        self._entries[username] = expiry
        self._pending.append((username, expiry))
        async with self._lock:
            if not self._pending:
                return  # a write made while this one waited carried it
            batch, self._pending = self._pending, []
            try:
                if self._rewrite_next or self._appended + len(batch) > max(self.compact_after, self._kept):
                    await self._compact()
                else:
                    await asyncio.to_thread(self._append, batch)
                    self._appended += len(batch)
            except BaseException:
                self._pending[:0] = batch  # the next add tries them again
                raise

    async def _compact(self) -> None:
        now = self.clock()
        self._entries = {username: expiry for username, expiry in self._entries.items() if expiry > now}
        await asyncio.to_thread(self._rewrite, dict(self._entries))
        self._kept, self._appended, self._rewrite_next = len(self._entries), 0, False

    def _read(self) -> tuple[dict[str, int], int, list[int], bool]:
        """(entries, lines, numbers of the lines that do not parse, whether the last was cut short)."""
        with open(self.path, "rb") as f:
            lines = f.read().split(b"\n")
        cut = lines.pop() != b""
        entries: dict[str, int] = {}
        bad = []
        for number, line in enumerate(lines, 1):
            try:
                username, expiry = json.loads(line)
                if not isinstance(username, str) or type(expiry) is not int:
                    raise ValueError
            except (ValueError, TypeError):
                bad.append(number)
                continue
            entries[username] = expiry
        return entries, len(lines), bad, cut

    def _append(self, batch: list[tuple[str, int]]) -> None:
        directory = self._directory()
        created = not os.path.exists(self.path)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(_lines(batch))
            f.flush()
            os.fsync(f.fileno())
        if created:
            _sync_directory(directory)

    def _rewrite(self, entries: dict[str, int]) -> None:
        directory = self._directory()
        fd, temp = tempfile.mkstemp(prefix=".revocations-", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(_lines(entries.items()))
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        _sync_directory(directory)

    def _directory(self) -> str:
        directory = os.path.dirname(self.path) or "."
        os.makedirs(directory, mode=0o700, exist_ok=True)
        return directory


def _lines(entries: Iterable[tuple[str, int]]) -> str:
    return "".join(json.dumps([username, expiry]) + "\n" for username, expiry in entries)


def _sync_directory(directory: str) -> None:
    # A new name in a directory is durable once the directory is.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
