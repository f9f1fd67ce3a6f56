"""The cluster store on NATS: JetStream key-value buckets (history 1, the bucket's TTL as max age,
replicated), core NATS request/reply. A thin shell over nats-py: what it adds is the mapping of
NATS's answers onto store.Store's (KeyWrongLastSequence is Conflict; timeouts, no servers and
JetStream unavailable are StoreUnavailable)."""
from __future__ import annotations

import asyncio
import math
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from ..logs import get_logger
from .store import Bucket, Conflict, Entry, Handler, StoreUnavailable

log = get_logger("cluster.nats")

CONNECT_TIMEOUT = 2.0
# A write that no server of the bucket's stream heard (no responders) was stored nowhere, so it is sent
# again, as nats.go does (its defaults: twice more, 0.25 s apart). nats-server 2.10+ answers a bucket's
# creation a moment before every server knows where its writes go (about 1 first write in 100 on three
# servers here, mostly for some 20 ms).
UNHEARD_RETRIES = 2
UNHEARD_WAIT = 0.25
# How long a watch's current entries may lag the leader's last sequence (a replica catching up).
CURRENT_WAIT = 2.0
# JetStream's "no suitable peers for placement": too few servers up to hold the replicas.
NO_PEERS = 10005
UNAVAILABLE = (
    asyncio.TimeoutError,  # nats.errors.TimeoutError among them: no answer in time (no quorum)
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.js.errors.ServiceUnavailableError,  # JetStream not enabled, or not ready
    nats.js.errors.ServerError,
    nats.js.errors.NoStreamResponseError,
)


@contextmanager
def _unavailable(what: str) -> Iterator[None]:
    """NATS's errors that mean "the store cannot be reached now" as StoreUnavailable."""
    try:
        yield
    except nats.js.errors.BadRequestError as error:
        if error.err_code != NO_PEERS:
            raise
        raise StoreUnavailable(f"{what}: {error.description}") from error
    except UNAVAILABLE as error:
        raise StoreUnavailable(f"{what}: {str(error) or type(error).__name__}") from error


T = TypeVar("T")


async def _until_heard(write: Callable[[], Awaitable[T]]) -> T:
    """`write()`, sent again while no server of the stream hears it (nats-py: NoStreamResponseError)."""
    for _ in range(UNHEARD_RETRIES):
        try:
            return await write()
        except nats.js.errors.NoStreamResponseError:
            await asyncio.sleep(UNHEARD_WAIT)
    return await write()


def _value(found: KeyValue.Entry) -> bytes:
    # nats-py reads a stored empty value back as None, which the store's Entry keeps for "deleted".
    return found.value or b""


def _revision(found: KeyValue.Entry) -> int:
    if found.revision is None:
        raise StoreUnavailable(f"NATS gave {found.bucket}/{found.key} no revision")
    return found.revision


class NatsStore:
    def __init__(self, client: Client, replicas: int) -> None:
        self._client = client
        self._js = client.jetstream()
        self.replicas = replicas
        self._buckets: dict[str, KeyValue] = {}
        self._opening = asyncio.Lock()
        self._answering: set[asyncio.Task[None]] = set()
        self.last_error: Exception | None = None
        self.operations = 0  # reads and writes, for the figures of a test

    @classmethod
    async def connect(cls, servers: Sequence[str], name: str, credentials: str | Path | None = None,
                      ca: str | Path | None = None, replicas: int | None = None,
                      connect_timeout: float = CONNECT_TIMEOUT, token: str | None = None) -> NatsStore:
        """Connect to the first of `servers` that answers (in the order given: the box's own first),
        presenting `token` when given (servers that ask for none ignore it).
        Buckets are made on first use, with `replicas` copies (by default as many as servers were
        given, at most 3). Raises StoreUnavailable when none answers within `connect_timeout` s
        for each server given."""
        if not servers:
            raise ValueError("NatsStore needs at least one server")
        store = cls(Client(), replicas if replicas is not None else min(3, len(servers)))
        bound = connect_timeout * len(servers)
        try:
            await asyncio.wait_for(store._client.connect(
                # nats-py's per-server timeout is typed int; the bound around it is exact.
                list(servers), name=name, error_cb=store._note_error, connect_timeout=math.ceil(connect_timeout),
                dont_randomize=True, max_reconnect_attempts=-1,  # a box never gives up on its cluster
                tls=ssl.create_default_context(cafile=str(ca)) if ca else None,
                user_credentials=str(credentials) if credentials else None, token=token,
            ), bound)
        except (asyncio.TimeoutError, OSError, nats.errors.Error) as error:
            # nats-py retries server after server, reporting each failure to _note_error.
            await store._client.close()
            why = store.last_error or error
            raise StoreUnavailable(f"cannot connect to NATS at {', '.join(servers)} within {bound:g} s: "
                                   f"{str(why) or type(why).__name__}") from error
        return store

    async def _note_error(self, error: Exception) -> None:
        # nats-py reports connection trouble here (a server refused, went away) as it reconnects.
        self.last_error = error
        log.warning("NATS", error=str(error) or type(error).__name__)

    async def _bucket(self, bucket: Bucket) -> KeyValue:
        """The bucket's key-value handle: bound when the bucket exists, else made (once per store)."""
        found = self._buckets.get(bucket.name)
        if found is None:
            async with self._opening:
                found = self._buckets.get(bucket.name) or await self._open(bucket)
                self._buckets[bucket.name] = found
        return found

    async def _open(self, bucket: Bucket) -> KeyValue:
        with _unavailable(f"bucket {bucket.name}"):
            try:
                return await self._js.key_value(bucket.name)
            except nats.js.errors.BucketNotFoundError:
                pass
            # Gets go to the stream's leader (not "direct" to any replica) to read the latest write.
            return await self._js.create_key_value(
                bucket=bucket.name, history=1, ttl=bucket.ttl or None, replicas=self.replicas, direct=False)

    async def get(self, bucket: Bucket, key: str) -> Entry | None:
        self.operations += 1
        kv = await self._bucket(bucket)
        with _unavailable(f"get {bucket.name}/{key}"):
            try:
                found = await kv.get(key)
            except nats.js.errors.KeyNotFoundError:  # deleted ones too
                return None
        return Entry(key, _value(found), _revision(found))

    async def put(self, bucket: Bucket, key: str, value: bytes) -> int:
        self.operations += 1
        kv = await self._bucket(bucket)
        with _unavailable(f"put {bucket.name}/{key}"):
            return await _until_heard(lambda: kv.put(key, value))

    async def create(self, bucket: Bucket, key: str, value: bytes) -> int:
        self.operations += 1
        kv = await self._bucket(bucket)
        with _unavailable(f"create {bucket.name}/{key}"):
            try:
                return await _until_heard(lambda: kv.create(key, value))
            except nats.js.errors.KeyWrongLastSequenceError:
                raise Conflict(f"{bucket.name}/{key} exists") from None
            except nats.js.errors.KeyNotFoundError:
                # A replicated stream's leader also refuses a create while another write to the key is
                # still in flight (nats-server#4320's fix); nats-py's follow-up read, looking for a delete
                # marker to create over, then finds nothing yet and raises this instead.
                raise Conflict(f"{bucket.name}/{key} is being written") from None

    async def update(self, bucket: Bucket, key: str, value: bytes, revision: int) -> int:
        self.operations += 1
        kv = await self._bucket(bucket)
        conflict = Conflict(f"{bucket.name}/{key} is not at revision {revision}")
        if revision < 1:  # NATS reads "last revision 0" as "no entry yet" (a create); no entry is at 0
            raise conflict
        with _unavailable(f"update {bucket.name}/{key}"):
            try:
                return await _until_heard(lambda: kv.update(key, value, last=revision))
            except nats.js.errors.KeyWrongLastSequenceError:
                raise conflict from None

    async def delete(self, bucket: Bucket, key: str) -> None:
        self.operations += 1
        kv = await self._bucket(bucket)
        with _unavailable(f"delete {bucket.name}/{key}"):
            await _until_heard(lambda: kv.delete(key))

    async def watch(self, bucket: Bucket) -> AsyncIterator[Entry | None]:
        kv = await self._bucket(bucket)
        loop = asyncio.get_running_loop()
        with _unavailable(f"watch {bucket.name}"):
            # The current entries end at the stream's last sequence as its leader has it when the watch
            # starts: a watch served by a replica that lags gets nats-py's end marker before them.
            state = (await self._js.stream_info(f"KV_{bucket.name}")).state
            last = state.last_seq if state.messages else 0
            watcher = await kv.watchall()
            try:
                current = last > 0  # until the None marker: the bucket's current entries
                if not current:
                    yield None
                deadline = loop.time() + CURRENT_WAIT
                while True:
                    try:
                        found = await watcher.updates(max(deadline - loop.time(), 0.001) if current else None)
                    except nats.errors.TimeoutError:  # the last entry never came (it expired meanwhile)
                        current = False
                        yield None
                        continue
                    if found is KeyValue.KeyWatcher.STOP_ITER:
                        return
                    if found is None:  # nats-py's marker: ours is the last sequence
                        continue
                    deleted = found.operation in (KV_DEL, KV_PURGE)
                    # NATS keeps a deleted key's marker as its last entry; it is not a current entry.
                    if not (deleted and current):
                        yield Entry(found.key, None if deleted else _value(found), _revision(found))
                    if current and _revision(found) >= last:
                        current = False
                        yield None
            finally:
                if not self._client.is_closed:
                    await watcher.stop()

    async def serve(self, subject: str, handler: Handler) -> None:
        async def answer(request: Msg) -> None:
            # Each request in its own task: nats-py calls a subscription's callback one message at
            # a time, and one slow answer must not hold up the others.
            task = asyncio.create_task(self._answer(subject, handler, request))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)

        with _unavailable(f"serve {subject}"):
            await self._client.subscribe(subject, cb=answer)

    @staticmethod
    async def _answer(subject: str, handler: Handler, request: Msg) -> None:
        try:
            await request.respond(await handler(request.data))
        except Exception as error:
            # The requester hears nothing and gives up (StoreUnavailable) at its timeout.
            log.warning("no answer to a request", subject=subject, error=repr(error))

    async def request(self, subject: str, payload: bytes, timeout: float) -> bytes:
        with _unavailable(f"request {subject}"):
            return (await self._client.request(subject, payload, timeout=timeout)).data

    async def publish(self, subject: str, payload: bytes) -> None:
        with _unavailable(f"publish {subject}"):
            await self._client.publish(subject, payload)

    async def listen(self, subject: str, handler: Callable[[bytes], None]) -> None:
        async def heard(message: Msg) -> None:
            handler(message.data)

        with _unavailable(f"listen {subject}"):
            await self._client.subscribe(subject, cb=heard)

    @property
    def connected(self) -> bool:
        return self._client.is_connected

    async def close(self) -> None:
        for task in self._answering:
            task.cancel()
        await self._client.close()
