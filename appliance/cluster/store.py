"""The cluster store's seam: key-value buckets with revisions and a time to live, watched for
changes, plus request/reply between boxes. Two backends implement it: `memory.MemoryStore` (one
process: a single box, or several boxes in a test) and `nats_store.NatsStore` (NATS JetStream
key-value, when `[cluster] nats` lists servers).

Values are bytes; what must not be readable in the store is sealed first (`seal.Sealer`).
Keys are what NATS accepts: letters, digits and `-_=.` (`key()` makes one from any text).
"""
from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Bucket:
    """A bucket and how long its entries live after their last write (0: until deleted)."""

    name: str
    ttl: float = 0.0


# The buckets the box uses, with their lifetimes. A node's entry lives as long as its heartbeats
# keep coming; sessions and tracks until deleted, or a day after their last write when their owner
# died before it could delete them; revocations as long as the longest credential can.
NODES = Bucket("edgecall-nodes", ttl=5.0)
SESSIONS = Bucket("edgecall-sessions", ttl=86400.0)
TRACKS = Bucket("edgecall-tracks", ttl=86400.0)
REVOCATIONS = Bucket("edgecall-revocations", ttl=7 * 86400.0)
SECRETS = Bucket("edgecall-secrets")  # the cluster certificate, sealed
STREAMS = Bucket("edgecall-streams", ttl=86400.0)  # WHIP streams by name: the session publishing each
ROOMS = Bucket("edgecall-rooms", ttl=60.0)  # meeting rooms' participants, refreshed by their boxes
# Connected sessions' media checkpoints (SRTP keys, stream state), sealed: what another box carries
# them on with (failover). Rewritten every few seconds while the session lives.
MEDIA = Bucket("edgecall-media", ttl=3600.0)
BUCKETS = (NODES, SESSIONS, TRACKS, REVOCATIONS, SECRETS, STREAMS, ROOMS, MEDIA)


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes | None  # None: deleted (or expired)
    revision: int


class Conflict(Exception):
    """A create found the key taken, or an update found another revision than it expected."""


class StoreUnavailable(Exception):
    """The store cannot be reached (no quorum, no server): the caller decides what to do without it."""


Handler = Callable[[bytes], Awaitable[bytes]]


class Store(Protocol):
    async def get(self, bucket: Bucket, key: str) -> Entry | None:
        """The key's current entry, or None when it has none (or was deleted)."""

    async def put(self, bucket: Bucket, key: str, value: bytes) -> int:
        """Write whatever is there; the new revision."""

    async def create(self, bucket: Bucket, key: str, value: bytes) -> int:
        """Write only when the key has no entry; raises Conflict otherwise."""

    async def update(self, bucket: Bucket, key: str, value: bytes, revision: int) -> int:
        """Write only when the key's entry is still at `revision` (compare-and-set); raises Conflict."""

    async def delete(self, bucket: Bucket, key: str) -> None: ...

    def watch(self, bucket: Bucket) -> AsyncIterator[Entry | None]:
        """Every current entry, then None (the initial values are all delivered), then each change
        as it happens (a deletion as an entry whose value is None), until the iterator is closed.
        An entry that expires is not announced (NATS does not): a watcher that must see a writer
        go (nodes) times entries out itself."""

    async def serve(self, subject: str, handler: Handler) -> None:
        """Answer requests sent to `subject` with what `handler` returns."""

    async def request(self, subject: str, payload: bytes, timeout: float) -> bytes:
        """Send a request and wait for its answer; raises StoreUnavailable when none comes in time."""

    async def publish(self, subject: str, payload: bytes) -> None:
        """Send `payload` to whoever listens on `subject` now (no store, no answer: NATS core, which
        keeps working while a bucket elects a new leader)."""

    async def listen(self, subject: str, handler: Callable[[bytes], None]) -> None:
        """Call `handler` with every payload published on `subject` from now on."""

    async def close(self) -> None: ...

    @property
    def connected(self) -> bool:
        """Whether the store can be reached now (a NATS client between reconnections cannot)."""


ENCODED = "b32-"


def key(text: str) -> str:
    """A store key for any text: itself when NATS takes it as it is, else its base32 (no padding);
    text that starts like an encoded key is encoded too, so two texts never share a key."""
    if text and not text.startswith(ENCODED) and all(c.isalnum() and c.isascii() or c in "-_=" for c in text):
        return text
    return ENCODED + base64.b32encode(text.encode()).decode().rstrip("=")
