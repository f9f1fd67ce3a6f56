"""Streams by name, cluster-wide: a WHIP publisher claims a name for its session, and a WHEP player
on any box finds the session and tracks to pull under it (the tracks themselves reach that box
through the trunks, as any remote track does).

A name is held by one live session at a time: a claim fails while the session holding the name is
live, and takes over a name whose session is gone (ended without a DELETE, or its box died). Claims
are compare-and-set on the entry's revision, so two publishers racing for a name cannot both win.
A released name keeps an empty entry rather than being deleted, so that every later claim of the
name is a compare-and-set on that entry's revision.
"""
from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

from .store import STREAMS, Conflict, Store, key

# Compare-and-set rounds before a claim gives up (each lost round means another claim won meanwhile).
CLAIM_ROUNDS = 4


@dataclass(frozen=True)
class StreamRecord:
    session: str  # "" once released
    tracks: list[str] = field(default_factory=list)  # the publishing session's track names

    def encode(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def decode(cls, data: bytes) -> StreamRecord:
        """Raises ValueError or TypeError for what is not a stream record."""
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise TypeError("a stream record is an object")
        record = cls(**raw)
        if not isinstance(record.session, str) or not isinstance(record.tracks, list) \
                or not all(isinstance(t, str) for t in record.tracks):
            raise TypeError("a stream record names a session and track names")
        return record


def stream_key(app: str, name: str) -> str:
    return key(f"{app}/{name}")


class StreamDirectory:
    def __init__(self, store: Callable[[], Store | None]) -> None:
        self._store = store

    def _the_store(self) -> Store:
        store = self._store()
        if store is None:
            raise RuntimeError("the cluster store is not open yet")
        return store

    async def claim(self, app: str, name: str, record: StreamRecord,
                    live: Callable[[str], Awaitable[bool]]) -> bool:
        """Put `record` under the name unless a live session holds it; False when one does."""
        store, entry_key, value = self._the_store(), stream_key(app, name), record.encode()
        for _ in range(CLAIM_ROUNDS):
            entry = await store.get(STREAMS, entry_key)
            try:
                if entry is None or entry.value is None:
                    await store.create(STREAMS, entry_key, value)
                    return True
                holder = _readable(entry.value)
                if holder is not None and holder.session and holder.session != record.session \
                        and await live(holder.session):
                    return False
                await store.update(STREAMS, entry_key, value, entry.revision)
                return True
            except Conflict:
                continue
        return False

    async def find(self, app: str, name: str) -> StreamRecord | None:
        """The record of the session that holds the name, if any (live or not: the caller asks)."""
        entry = await self._the_store().get(STREAMS, stream_key(app, name))
        record = None if entry is None or entry.value is None else _readable(entry.value)
        return record if record is not None and record.session else None

    async def release(self, app: str, name: str, session: str) -> None:
        """Free the name if `session` still holds it."""
        store, entry_key = self._the_store(), stream_key(app, name)
        for _ in range(CLAIM_ROUNDS):
            entry = await store.get(STREAMS, entry_key)
            holder = None if entry is None or entry.value is None else _readable(entry.value)
            if entry is None or holder is None or holder.session != session:
                return
            try:
                await store.update(STREAMS, entry_key, StreamRecord("").encode(), entry.revision)
                return
            except Conflict:
                continue


def _readable(value: bytes) -> StreamRecord | None:
    """The record in `value`; None for one that does not read (as if the name were free)."""
    try:
        return StreamRecord.decode(value)
    except (ValueError, TypeError, RecursionError):  # json.loads raises RecursionError on deep nesting
        return None
