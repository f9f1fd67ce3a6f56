"""Stream names across the cluster (appliance/cluster/streams.py) on the in-process store: a name is
held by one live session, taken over from a dead one, freed by its holder only, and two claims
racing for it never both win. tests/integration/test_cluster_streams.py runs the same on NATS."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from appliance.cluster.memory import MemoryStore
from appliance.cluster.store import STREAMS, Bucket, Entry
from appliance.cluster.streams import CLAIM_ROUNDS, StreamDirectory, StreamRecord, stream_key

APP, NAME = "demo", "cam"
FIRST = StreamRecord("session-1", ["cam-video", "cam-audio"])
SECOND = StreamRecord("session-2", ["other-video"])


class Liveness:
    """The `live` callback: which sessions are live, and whom the directory asked about."""

    def __init__(self, *live: str) -> None:
        self.live = set(live)
        self.asked: list[str] = []

    async def __call__(self, session: str) -> bool:
        self.asked.append(session)
        await asyncio.sleep(0)  # as the real one may (it asks the store)
        return session in self.live


def directory(store: MemoryStore) -> StreamDirectory:
    return StreamDirectory(lambda: store)


async def test_a_free_name_is_claimed_and_found():
    streams = directory(MemoryStore())
    assert await streams.find(APP, NAME) is None
    live = Liveness()
    assert await streams.claim(APP, NAME, FIRST, live)
    assert await streams.find(APP, NAME) == FIRST
    assert live.asked == []  # no holder to ask about
    assert await streams.find("other-app", NAME) is None and await streams.find(APP, "other") is None


async def test_a_name_a_live_session_holds_is_refused_to_another():
    streams = directory(MemoryStore())
    await streams.claim(APP, NAME, FIRST, Liveness())
    live = Liveness(FIRST.session)
    assert not await streams.claim(APP, NAME, SECOND, live)
    assert live.asked == [FIRST.session]
    assert await streams.find(APP, NAME) == FIRST


async def test_the_holder_claims_again_without_asking_and_its_tracks_change():
    streams = directory(MemoryStore())
    await streams.claim(APP, NAME, FIRST, Liveness())
    again = StreamRecord(FIRST.session, ["cam-video"])
    live = Liveness(FIRST.session)
    assert await streams.claim(APP, NAME, again, live)
    assert live.asked == [] and await streams.find(APP, NAME) == again


async def test_a_name_whose_session_is_gone_is_taken_over():
    streams = directory(MemoryStore())
    await streams.claim(APP, NAME, FIRST, Liveness())
    live = Liveness()  # FIRST's session ended without a DELETE, or its box died
    assert await streams.claim(APP, NAME, SECOND, live)
    assert live.asked == [FIRST.session] and await streams.find(APP, NAME) == SECOND


async def test_a_release_by_another_session_does_nothing():
    store = MemoryStore()
    streams = directory(store)
    await streams.claim(APP, NAME, FIRST, Liveness())
    before = await store.get(STREAMS, stream_key(APP, NAME))
    await streams.release(APP, NAME, SECOND.session)
    await streams.release(APP, NAME, "")  # not even the empty holder of a released name
    assert await store.get(STREAMS, stream_key(APP, NAME)) == before
    assert await streams.find(APP, NAME) == FIRST


async def test_a_released_name_is_free_and_claimed_again():
    store = MemoryStore()
    streams = directory(store)
    await streams.claim(APP, NAME, FIRST, Liveness())
    await streams.release(APP, NAME, FIRST.session)
    assert await streams.find(APP, NAME) is None
    left = await store.get(STREAMS, stream_key(APP, NAME))
    assert left is not None and StreamRecord.decode(left.value) == StreamRecord("")  # an empty entry, not a deletion
    live = Liveness(FIRST.session)
    assert await streams.claim(APP, NAME, SECOND, live)
    assert live.asked == [] and await streams.find(APP, NAME) == SECOND
    await streams.release(APP, NAME, SECOND.session)
    assert await streams.claim(APP, NAME, FIRST, Liveness())  # and again


async def test_releasing_a_name_never_claimed_writes_nothing():
    store = MemoryStore()
    await directory(store).release(APP, NAME, FIRST.session)
    assert await store.get(STREAMS, stream_key(APP, NAME)) is None


async def test_the_directory_needs_an_open_store():
    streams = StreamDirectory(lambda: None)
    with pytest.raises(RuntimeError, match="not open"):
        await streams.find(APP, NAME)


# --- what is in the store but does not read as a record: as if the name were free ----------------------

UNREADABLE = [b"", b"\xff\xfe", b"null", b"[]", b"{}", b'{"session": 5}', b'{"session": "s", "tracks": [1]}',
              b'{"session": "s", "extra": 1}', b'{"session": "s", "tracks": 5}', b"[" * 100_000]


def claims_over(garbage: bytes) -> tuple[bool, StreamRecord | None, StreamRecord | None, list[str]]:
    """(the claim's result, find before, find after, whom `live` was asked about) over `garbage`."""
    async def run() -> tuple[bool, StreamRecord | None, StreamRecord | None, list[str]]:
        store = MemoryStore()
        await store.put(STREAMS, stream_key(APP, NAME), garbage)
        streams = directory(store)
        before = await streams.find(APP, NAME)
        live = Liveness("s", FIRST.session)
        claimed = await streams.claim(APP, NAME, FIRST, live)
        return claimed, before, await streams.find(APP, NAME), live.asked
    return asyncio.run(run())


@pytest.mark.parametrize("garbage", UNREADABLE, ids=lambda g: repr(g[:20]))
def test_an_unreadable_entry_counts_as_free(garbage):
    assert claims_over(garbage) == (True, None, FIRST, [])


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=200))
@example(garbage=json.dumps({"session": "s", "tracks": []}).encode())  # readable: a live holder
def test_any_bytes_in_the_entry_are_a_holder_or_free(garbage):
    claimed, before, after, asked = claims_over(garbage)
    if asked:  # it read as a record naming a (live) session
        assert not claimed and before == after and before is not None
    else:
        assert claimed and after == FIRST


# --- racing claims ------------------------------------------------------------------------------------


class Interleaved:
    """The in-process store, but each operation first lets other tasks run for a drawn number of
    turns: MemoryStore's operations never suspend, so without this a claim would run whole before
    another starts, and the compare-and-set would never be tested."""

    def __init__(self, store: MemoryStore, turns: Callable[[], int]) -> None:
        self.store = store
        self.turns = turns

    async def _wait(self) -> None:
        for _ in range(self.turns()):
            await asyncio.sleep(0)

    async def get(self, bucket: Bucket, key: str) -> Entry | None:
        await self._wait()
        return await self.store.get(bucket, key)

    async def create(self, bucket: Bucket, key: str, value: bytes) -> int:
        await self._wait()
        return await self.store.create(bucket, key, value)

    async def update(self, bucket: Bucket, key: str, value: bytes, revision: int) -> int:
        await self._wait()
        return await self.store.update(bucket, key, value, revision)


def race(held_by: StreamRecord | None, claimants: list[StreamRecord], turns: Callable[[], int],
         live: Callable[[str], Awaitable[bool]]) -> tuple[list[bool], StreamRecord | None]:
    async def run() -> tuple[list[bool], StreamRecord | None]:
        store = MemoryStore()
        if held_by is not None:
            await store.put(STREAMS, stream_key(APP, NAME), held_by.encode())
        streams = StreamDirectory(lambda: Interleaved(store, turns))
        results = await asyncio.gather(*(streams.claim(APP, NAME, record, live) for record in claimants))
        return list(results), await directory(store).find(APP, NAME)
    return asyncio.run(run())


CLAIMANTS = [StreamRecord(f"claimant-{n}", [f"track-{n}"]) for n in range(3)]


@settings(max_examples=300, deadline=None)
@given(schedule=st.lists(st.integers(0, 3), max_size=64), count=st.integers(2, 3),
       held_by=st.sampled_from([None, StreamRecord("gone"), StreamRecord("")]))
def test_claims_racing_for_a_free_name_never_both_win(schedule, count, held_by):
    """Free, held by a dead session, or released: the claimants are all live, so the first write wins
    and every other claim sees a live holder (or loses its compare-and-set and then sees one)."""
    turns = iter(schedule)
    live = Liveness(*(c.session for c in CLAIMANTS))
    results, holder = race(held_by, CLAIMANTS[:count], lambda: next(turns, 0), live)
    assert results.count(True) == 1
    assert holder == CLAIMANTS[:count][results.index(True)]


def test_two_claims_that_read_the_free_name_together_do_not_both_win():
    # Each operation yields once: both read "free" before either writes, so both write; one must lose.
    live = Liveness(*(c.session for c in CLAIMANTS))
    results, holder = race(None, CLAIMANTS[:2], lambda: 1, live)
    assert results == [True, False] and holder == CLAIMANTS[0]
    assert live.asked == [CLAIMANTS[0].session]  # the loser looked again and found a live holder
    results, holder = race(StreamRecord("gone"), CLAIMANTS[:2], lambda: 1, Liveness(*(c.session for c in CLAIMANTS)))
    assert results == [True, False] and holder == CLAIMANTS[0]


def test_a_claim_that_keeps_losing_gives_up_after_its_rounds():
    """A holder that another claim replaces between every read and write of ours: bounded, and False."""
    async def run() -> tuple[bool, int]:
        store = MemoryStore()
        streams = directory(store)
        rounds = 0

        async def live(session: str) -> bool:
            nonlocal rounds
            rounds += 1
            await store.put(STREAMS, stream_key(APP, NAME), StreamRecord(f"churn-{rounds}").encode())
            return False  # dead: ours may take over, but its update finds another revision
        await store.put(STREAMS, stream_key(APP, NAME), StreamRecord("churn-0").encode())
        return await streams.claim(APP, NAME, FIRST, live), rounds
    assert asyncio.run(run()) == (False, CLAIM_ROUNDS)
