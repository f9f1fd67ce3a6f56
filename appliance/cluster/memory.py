"""The cluster store in one process: the single box's store (no NATS needed), and the store several
boxes share when a test runs them in one process. Same contract as the NATS backend (store.Store),
which the contract tests check on both."""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from .store import Bucket, Conflict, Entry, Handler, StoreUnavailable


@dataclass
class _Value:
    value: bytes
    revision: int
    written: float


class MemoryStore:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._buckets: dict[str, dict[str, _Value]] = {}
        self._revision = 0
        self._watchers: dict[str, list[asyncio.Queue[Entry]]] = {}
        self._handlers: dict[str, Handler] = {}
        self._listeners: dict[str, list[Callable[[bytes], None]]] = {}
        self.operations = 0  # reads and writes, for the figures of a test

    def _live(self, bucket: Bucket, key: str) -> _Value | None:
        values = self._buckets.setdefault(bucket.name, {})
        found = values.get(key)
        if found is not None and bucket.ttl and self.clock() - found.written > bucket.ttl:
            del values[key]
            return None
        return found

    def _write(self, bucket: Bucket, key: str, value: bytes | None) -> int:
        self._revision += 1
        values = self._buckets.setdefault(bucket.name, {})
        if value is None:
            values.pop(key, None)
        else:
            values[key] = _Value(value, self._revision, self.clock())
        for queue in self._watchers.get(bucket.name, []):
            queue.put_nowait(Entry(key, value, self._revision))
        return self._revision

    async def get(self, bucket: Bucket, key: str) -> Entry | None:
        self.operations += 1
        found = self._live(bucket, key)
        return None if found is None else Entry(key, found.value, found.revision)

    async def put(self, bucket: Bucket, key: str, value: bytes) -> int:
        self.operations += 1
        return self._write(bucket, key, value)

    async def create(self, bucket: Bucket, key: str, value: bytes) -> int:
        self.operations += 1
        if self._live(bucket, key) is not None:
            raise Conflict(f"{bucket.name}/{key} exists")
        return self._write(bucket, key, value)

    async def update(self, bucket: Bucket, key: str, value: bytes, revision: int) -> int:
        self.operations += 1
        found = self._live(bucket, key)
        if found is None or found.revision != revision:
            raise Conflict(f"{bucket.name}/{key} is not at revision {revision}")
        return self._write(bucket, key, value)

    async def delete(self, bucket: Bucket, key: str) -> None:
        self.operations += 1
        if self._live(bucket, key) is not None:
            self._write(bucket, key, None)

    async def watch(self, bucket: Bucket) -> AsyncIterator[Entry | None]:
        queue: asyncio.Queue[Entry] = asyncio.Queue()
        self._watchers.setdefault(bucket.name, []).append(queue)
        try:
            for key in list(self._buckets.get(bucket.name, {})):
                found = self._live(bucket, key)
                if found is not None:
                    yield Entry(key, found.value, found.revision)
            yield None
            while True:
                yield await queue.get()
        finally:
            self._watchers[bucket.name].remove(queue)

    async def serve(self, subject: str, handler: Handler) -> None:
        self._handlers[subject] = handler

    async def request(self, subject: str, payload: bytes, timeout: float) -> bytes:
        handler = self._handlers.get(subject)
        if handler is None:
            raise StoreUnavailable(f"no one answers {subject}")
        try:
            return await asyncio.wait_for(handler(payload), timeout)
        except asyncio.TimeoutError:
            raise StoreUnavailable(f"{subject} did not answer within {timeout} s") from None

    async def publish(self, subject: str, payload: bytes) -> None:
        for handler in self._listeners.get(subject, []):
            handler(payload)

    async def listen(self, subject: str, handler: Callable[[bytes], None]) -> None:
        self._listeners.setdefault(subject, []).append(handler)

    async def close(self) -> None:
        self._handlers.clear()
        self._listeners.clear()

    @property
    def connected(self) -> bool:
        return True
