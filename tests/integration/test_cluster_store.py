"""The cluster store's contract (store.Store) on both backends: MemoryStore, and NatsStore on a real
nats-server, alone and in a cluster of three. Then what only a cluster shows: a write through one
server is watched through another, and writes go on when one of three servers stops.

Each test writes into buckets of its own (random names), so tests sharing a cluster do not meet.
"""
from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import nats
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from appliance.cluster.nats_store import UNHEARD_WAIT, NatsStore
from appliance.cluster.store import Bucket, Conflict, Entry, Store, StoreUnavailable, key
from tests.lab.appliance import free_port
from tests.lab.nats import clusters, nats_servers, pair

__all__ = ["clusters", "nats_servers", "pair"]  # the fixtures, used below by name

BOUND = 15.0  # seconds: only a bound on a hang, never a claim about speed
T = TypeVar("T")
ODD_TEXTS = ["", "a b", "a.b", "a/b", "*", ">", "ü", "日本", "😀", "-_=", "\n", "x" * 200]


def unique_bucket(prefix: str = "test", ttl: float = 0.0) -> Bucket:
    return Bucket(f"{prefix}-{secrets.token_hex(4)}", ttl=ttl)


async def within(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, BOUND)


async def eventually(attempt: Callable[[], Awaitable[T]], what: str) -> T:
    """`attempt()`'s result once it stops raising StoreUnavailable, for at most BOUND seconds."""
    deadline = time.monotonic() + BOUND
    while True:
        try:
            return await attempt()
        except StoreUnavailable:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: still unavailable after {BOUND} s") from None
        await asyncio.sleep(0.2)


async def initial(watch: AsyncIterator[Entry | None]) -> dict[str, Entry]:
    """A watch's current entries, up to its None marker."""
    entries: dict[str, Entry] = {}
    while (entry := await within(anext(watch))) is not None:
        entries[entry.key] = entry
    return entries


@pytest.fixture
def store(pair: tuple[Store, Store]) -> Store:
    return pair[0]


async def test_get_and_put(store):
    bucket = unique_bucket()
    assert await store.get(bucket, "k") is None
    first = await store.put(bucket, "k", b"one")
    assert await store.get(bucket, "k") == Entry("k", b"one", first)
    second = await store.put(bucket, "k", b"two")
    assert second > first
    assert await store.get(bucket, "k") == Entry("k", b"two", second)
    operations = store.operations
    await store.get(bucket, "k")
    assert store.operations == operations + 1


async def test_create_only_where_there_is_no_entry(store):
    bucket = unique_bucket()
    revision = await store.create(bucket, "k", b"first")
    with pytest.raises(Conflict):
        await store.create(bucket, "k", b"second")
    assert await store.get(bucket, "k") == Entry("k", b"first", revision)
    await store.delete(bucket, "k")
    again = await store.create(bucket, "k", b"again")  # a deleted key has no entry
    assert await store.get(bucket, "k") == Entry("k", b"again", again)


async def test_update_is_compare_and_set(pair):
    first, second = pair
    bucket = unique_bucket()
    revision = await first.put(bucket, "k", b"v1")
    updated = await second.update(bucket, "k", b"v2", revision)
    with pytest.raises(Conflict):
        await first.update(bucket, "k", b"lost", revision)  # the other box was first
    assert await first.get(bucket, "k") == Entry("k", b"v2", updated)
    with pytest.raises(Conflict):
        await first.update(bucket, "absent", b"v", revision)
    with pytest.raises(Conflict):
        await first.update(bucket, "absent", b"v", 0)  # no revision is 0, not even "none yet"
    assert await first.get(bucket, "absent") is None


async def test_an_empty_value_is_a_value(store):
    bucket = unique_bucket()
    revision = await store.put(bucket, "k", b"")
    assert await store.get(bucket, "k") == Entry("k", b"", revision)
    watch = store.watch(bucket)
    try:
        assert await initial(watch) == {"k": Entry("k", b"", revision)}
        again = await store.put(bucket, "k", b"")
        assert await within(anext(watch)) == Entry("k", b"", again)
    finally:
        await watch.aclose()


async def test_delete(store):
    bucket = unique_bucket()
    await store.put(bucket, "k", b"v")
    await store.put(bucket, "other", b"w")
    await store.delete(bucket, "k")
    assert await store.get(bucket, "k") is None
    assert (await store.get(bucket, "other")).value == b"w"
    await store.delete(bucket, "never-written")  # nothing to delete is no error
    assert await store.get(bucket, "never-written") is None


async def test_watch_gives_current_entries_then_none_then_changes_in_order(pair):
    watcher, writer = pair
    bucket = unique_bucket()
    a = await writer.put(bucket, "a", b"a1")
    b = await writer.put(bucket, "b", b"b1")
    await writer.put(bucket, "gone", b"x")
    await writer.delete(bucket, "gone")
    watch = watcher.watch(bucket)
    try:
        assert await initial(watch) == {"a": Entry("a", b"a1", a), "b": Entry("b", b"b1", b)}
        a2 = await writer.put(bucket, "a", b"a2")
        await writer.delete(bucket, "b")
        c = await writer.create(bucket, "c", b"c1")
        changes = [await within(anext(watch)) for _ in range(3)]
    finally:
        await watch.aclose()
    assert changes[0] == Entry("a", b"a2", a2)
    assert changes[1] is not None and (changes[1].key, changes[1].value) == ("b", None)
    assert a2 < changes[1].revision < c
    assert changes[2] == Entry("c", b"c1", c)


async def test_watch_of_an_empty_bucket_starts_with_none(store):
    watch = store.watch(unique_bucket())
    try:
        assert await within(anext(watch)) is None
    finally:
        await watch.aclose()


async def test_an_entry_expires_after_the_buckets_ttl(store):
    bucket = unique_bucket("test-ttl", ttl=1.0)
    revision = await store.put(bucket, "k", b"v")
    assert await store.get(bucket, "k") == Entry("k", b"v", revision)
    deadline = time.monotonic() + BOUND
    while await store.get(bucket, "k") is not None:
        assert time.monotonic() < deadline, f"k still in {bucket.name} {BOUND} s after its 1 s TTL"
        await asyncio.sleep(0.1)
    # An expired entry is not a current one. Each server of a replicated bucket expires entries on its
    # own, and a watch may read another server than a get (nats-server 2.15 on three: up to 0.2 s later).
    while not await starts_empty(store.watch(bucket)):
        assert time.monotonic() < deadline, f"k still watched in {bucket.name} {BOUND} s after its 1 s TTL"
        await asyncio.sleep(0.1)


async def starts_empty(watch: AsyncIterator[Entry | None]) -> bool:
    """Whether the watch has no current entries (its first item is the None marker)."""
    try:
        return await within(anext(watch)) is None
    finally:
        await watch.aclose()


async def test_request_and_reply(pair):
    server, client = pair
    subject = f"test.echo.{secrets.token_hex(4)}"

    async def echo(payload: bytes) -> bytes:
        return b"echo:" + payload

    await server.serve(subject, echo)
    # The subscription reaches the cluster's other servers a moment after serve() returns.
    assert await eventually(lambda: client.request(subject, b"hi", timeout=2.0), "first answer") == b"echo:hi"
    assert await client.request(subject, b"\x00" * 1000, timeout=5.0) == b"echo:" + b"\x00" * 1000


async def test_requests_are_answered_concurrently(pair):
    server, client = pair
    subject = f"test.gate.{secrets.token_hex(4)}"
    gate = asyncio.Event()

    async def handler(payload: bytes) -> bytes:
        if payload == b"wait":
            await gate.wait()  # answered only once the second request got in
        else:
            gate.set()
        return payload

    await server.serve(subject, handler)
    await eventually(lambda: client.request(subject, b"ping", timeout=2.0), "first answer")
    gate.clear()
    answers = await asyncio.gather(client.request(subject, b"wait", timeout=5.0),
                                   client.request(subject, b"go", timeout=5.0))
    assert answers == [b"wait", b"go"]


async def test_a_request_no_one_serves_is_unavailable(store):
    with pytest.raises(StoreUnavailable):
        await within(store.request(f"test.nobody.{secrets.token_hex(4)}", b"?", timeout=1.0))


async def test_keys_made_from_odd_text_round_trip(store):
    bucket = unique_bucket()
    for text in ODD_TEXTS:
        await store.put(bucket, key(text), text.encode())
    for text in ODD_TEXTS:
        found = await store.get(bucket, key(text))
        assert found is not None and found.value == text.encode(), text
    watch = store.watch(bucket)
    try:
        assert {entry.value for entry in (await initial(watch)).values()} == {t.encode() for t in ODD_TEXTS}
    finally:
        await watch.aclose()


ALLOWED = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=")


@given(st.text())
@example("")
@example("a.b")
def test_a_key_has_only_allowed_characters(text):
    made = key(text)
    assert made and set(made) <= ALLOWED


@given(st.text(), st.text())
@example("a b", "a_b")
def test_distinct_texts_give_distinct_keys(one, other):
    if one != other:
        assert key(one) != key(other)


def test_a_text_shaped_like_an_encoded_key_does_not_collide():
    assert key("b32-") != key("")
    assert key("b32-MFRGG") != key("abc")


async def test_a_write_through_one_server_is_watched_through_another(clusters):
    urls = clusters(3).urls
    writer = await NatsStore.connect([urls[0]], "test-writer", replicas=3)
    watcher = await NatsStore.connect([urls[1]], "test-watcher", replicas=3)
    watch = watcher.watch(bucket := unique_bucket())
    try:
        assert await within(anext(watch)) is None
        revision = await writer.put(bucket, "k", b"from n0")
        assert await within(anext(watch)) == Entry("k", b"from n0", revision)
    finally:
        await watch.aclose()
        await writer.close()
        await watcher.close()


async def stream_leader(url: str, bucket: Bucket) -> str:
    """The name of the server that leads the bucket's stream (nats-py names it KV_<bucket>)."""
    client = await nats.connect(url)
    try:
        info = await client.jetstream().stream_info(f"KV_{bucket.name}")
    finally:
        await client.close()
    assert info.cluster is not None and info.cluster.leader is not None
    return info.cluster.leader


async def test_a_write_no_server_hears_is_sent_again(clusters):
    # For a moment after nats-server 2.10+ made a replicated bucket, the server a box is on may not yet
    # know where the bucket's writes go (no responders). Shown here without the race: the bucket's
    # stream is removed, and made again while a write waits.
    url = clusters(1).urls[0]
    store = await NatsStore.connect([url], "test-unheard")
    client = await nats.connect(url)
    try:
        bucket = unique_bucket()
        await store.put(bucket, "k", b"before")
        js = client.jetstream()
        stream = await js.stream_info(f"KV_{bucket.name}")
        await js.delete_stream(stream.config.name)
        with pytest.raises(StoreUnavailable, match="no response from stream"):
            await within(store.put(bucket, "k", b"nobody hears"))  # the bucket's stream is gone for good
        write = asyncio.ensure_future(store.put(bucket, "k", b"heard"))
        await asyncio.sleep(UNHEARD_WAIT / 2)  # the write's first try is turned away meanwhile
        await js.add_stream(stream.config)
        revision = await within(write)
        assert await store.get(bucket, "k") == Entry("k", b"heard", revision)
    finally:
        await client.close()
        await store.close()


async def test_writes_go_on_when_the_buckets_leader_stops(nats_servers):
    cluster = nats_servers(3)
    urls = cluster.urls
    bucket = unique_bucket()
    first = await NatsStore.connect(urls, "test-first")
    try:
        assert first.replicas == 3
        await first.put(bucket, "k", b"before")
    finally:
        await first.close()
    # The server that goes is the one the bucket's data lives on if it has a single copy.
    gone = [server.name for server in cluster.servers].index(await stream_leader(urls[0], bucket))
    stays = (gone + 1) % 3
    leaving = await NatsStore.connect(urls[gone:] + urls[:gone], "test-leaving")  # on the server that stops
    staying = await NatsStore.connect(urls[stays:] + urls[:stays], "test-staying")
    try:
        cluster.stop(gone)
        # Until `leaving` reconnects to another server and the other two elect a new leader.
        revision = await eventually(lambda: leaving.put(bucket, "k", b"after"), "a write after the leader stopped")
        assert await staying.get(bucket, "k") == Entry("k", b"after", revision)
        second = await staying.update(bucket, "k", b"again", revision)
        assert await leaving.get(bucket, "k") == Entry("k", b"again", second)
        with pytest.raises(Conflict):
            await leaving.create(bucket, "k", b"taken")
    finally:
        await leaving.close()
        await staying.close()


async def test_connecting_where_no_server_listens_is_unavailable():
    url = f"nats://127.0.0.1:{free_port()}"
    with pytest.raises(StoreUnavailable, match=url):
        await within(NatsStore.connect([url], "test-nobody", connect_timeout=0.5))


async def test_a_server_without_jetstream_is_unavailable(nats_servers):
    urls = nats_servers(1, jetstream=False).urls
    store = await NatsStore.connect(urls, "test-no-jetstream")
    try:
        with pytest.raises(StoreUnavailable):
            await within(store.put(unique_bucket(), "k", b"v"))
    finally:
        await store.close()
