"""Revocations shared through the cluster store (cluster/revocations.py): real TURN services on
loopback sharing one in-process store, as the boxes of a cluster share NATS (the integration test
runs real processes on a real nats-server). `Outage` cuts the store off, as a lost quorum does."""
import asyncio
import json
import time

import pytest

from appliance.cluster import revocations
from appliance.cluster.memory import MemoryStore
from appliance.cluster.revocation_entries import encode
from appliance.cluster.revocations import ClusterRevocations
from appliance.cluster.store import REVOCATIONS, Bucket, StoreUnavailable, key
from appliance.config import parse_config
from appliance.runner import Box, assemble
from appliance.stun import Attr, Class
from appliance.turn.credentials import RestCredentials
from appliance.turn.revocation_store import RevocationFile
from appliance.turn.service import TurnService
from tests.lab.appliance import free_port
from tests.lab.turn_client import TurnUdpClient

BOUND = 5.0  # seconds: a bound on a hang, never a claim about speed


class Outage(MemoryStore):
    """A MemoryStore that refuses every read, write and new watch while `down`."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailable("no quorum (the test cut the store off)")

    async def put(self, bucket: Bucket, key: str, value: bytes) -> int:
        self._check()
        return await super().put(bucket, key, value)

    async def watch(self, bucket: Bucket):
        self._check()
        async for entry in super().watch(bucket):
            yield entry


def _config(state_dir, turn_port: int, nats: str = "", max_revocations: int = 100):
    return parse_config(f"""
[node]
state_dir = "{state_dir}"
[api]
listen = "127.0.0.1:{free_port()}"
[sfu]
enabled = false
[turn]
listen = ["udp://127.0.0.1:{turn_port}"]
secrets = ["rest-secret"]
relay_ports = "61000-61099"
max_revocations = {max_revocations}
[[turn.keys]]
id = "key"
token = "key-token"
[cluster]
nats = [{nats}]
secret = "the cluster secret of the unit tests"
""", "test.toml")


class Boxes:
    """TURN services, each with its own state directory and port, sharing `store`."""

    def __init__(self, tmp_path, store: MemoryStore) -> None:
        self.tmp_path, self.store = tmp_path, store
        self.running: list[TurnService] = []

    async def start(self, name: str, max_revocations: int = 100) -> TurnService:
        port = free_port("udp")
        service = TurnService(Box(_config(self.tmp_path / name, port, max_revocations=max_revocations)))
        service.port = port
        service.share_revocations(ClusterRevocations(lambda: self.store, service.revocation_store, service.wall))
        await service.start()
        self.running.append(service)
        return service

    async def stop(self, service: TurnService) -> None:
        self.running.remove(service)
        await service.stop()


@pytest.fixture
async def boxes(tmp_path):
    made = Boxes(tmp_path, Outage())
    yield made
    for service in list(made.running):
        await made.stop(service)


def _mint(identifier: str, ttl: int = 3600) -> tuple[str, str]:
    return RestCredentials(["rest-secret"], 48 * 3600, {"key": "key-token"}).mint(time.time(), ttl, identifier, "key")


def _filed(service: TurnService) -> set[str]:
    try:
        with open(service.revocation_store.file.path) as f:
            return {json.loads(line)[0] for line in f}
    except FileNotFoundError:
        return set()


async def _until(condition, what: str) -> None:
    deadline = time.monotonic() + BOUND
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {BOUND} s")
        await asyncio.sleep(0.01)


async def _allocate(service: TurnService, username: str, password: str):
    client = TurnUdpClient(("127.0.0.1", service.port), username, password)
    try:
        return await asyncio.to_thread(client.allocate)
    finally:
        client.close()


def _refused(answer) -> bool:
    return answer.message_class == Class.ERROR and answer.get(Attr.ERROR_CODE)[0] == 401


async def test_revoked_on_one_box_the_other_ends_its_allocations_refuses_it_and_files_it(boxes):
    a, b = await boxes.start("a"), await boxes.start("b")
    username, password = _mint("alice")
    assert (await _allocate(b, username, password)).message_class == Class.SUCCESS
    assert len(b.core.allocations) == 1
    assert await a.revoke(username)
    await _until(lambda: username in b.core.revocations, "b hears of the revocation")
    assert len(b.core.allocations) == 0
    assert _refused(await _allocate(b, username, password))
    await _until(lambda: username in _filed(b), "b writes it to its own file")
    other, other_password = _mint("bob")
    assert (await _allocate(b, other, other_password)).message_class == Class.SUCCESS


async def test_a_box_that_holds_all_it_can_reports_what_it_cannot_hold_and_keeps_following(boxes, caplog):
    a, b = await boxes.start("a"), await boxes.start("b", max_revocations=1)
    first, second, third = (_mint(name)[0] for name in ("first", "second", "third"))
    assert await a.revoke(first)
    await _until(lambda: first in b.core.revocations, "b holds the first")
    assert await a.revoke(second)
    await _until(lambda: "a revocation made on another box is not held here" in caplog.text, "b reports the second")
    assert second not in b.core.revocations
    assert await a.revoke(third)  # the watch goes on after the refusal
    await _until(lambda: caplog.text.count("a revocation made on another box is not held here") == 2,
                 "b reports the third")


async def test_a_box_restarted_with_no_file_refuses_what_the_store_keeps(boxes):
    a = await boxes.start("a")
    username, password = _mint("alice")
    assert await a.revoke(username)
    await boxes.stop(a)
    fresh = await boxes.start("fresh")  # a new box, or one whose state partition was lost
    assert username in fresh.core.revocations
    assert _refused(await _allocate(fresh, username, password))
    await _until(lambda: username in _filed(fresh), "the start writes the store's revocations to the file")


async def test_a_revocation_the_store_refuses_is_filed_then_written_when_the_store_is_back(boxes, monkeypatch, caplog):
    monkeypatch.setattr(revocations, "RETRY_DELAYS", (0.05,) * 100)
    a, b = await boxes.start("a"), await boxes.start("b")
    username, password = _mint("alice")
    boxes.store.down = True
    assert await a.revoke(username)
    assert username in _filed(a) and username in a.core.revocations
    assert "revocation not in the cluster store yet" in caplog.text
    await asyncio.sleep(0.2)  # retries meet the outage
    assert username not in b.core.revocations
    boxes.store.down = False
    await _until(lambda: username in b.core.revocations, "the retry writes it and b hears of it")
    assert _refused(await _allocate(b, username, password))


async def test_a_box_that_starts_without_the_store_refuses_what_its_file_knew_and_catches_up(boxes, monkeypatch):
    monkeypatch.setattr(revocations, "REWATCH_DELAY", 0.05)
    a = await boxes.start("a")
    known, known_password = _mint("known")
    assert await a.revoke(known)
    await boxes.stop(a)
    later, _ = _mint("later")
    await boxes.store.put(REVOCATIONS, *encode(later, int(later.partition(".")[0])))
    boxes.store.down = True
    a = await boxes.start("a")
    assert known in a.core.revocations and later not in a.core.revocations
    assert _refused(await _allocate(a, known, known_password))
    boxes.store.down = False
    await _until(lambda: later in a.core.revocations, "the watch brings what the start could not read")


async def test_a_start_makes_the_file_and_the_store_agree_and_ignores_what_is_no_revocation(boxes, caplog):
    a = await boxes.start("a")
    filed_only, _ = _mint("filed-only")
    await a.revocation_store.file.add(filed_only, int(filed_only.partition(".")[0]))  # its store write was lost
    await boxes.stop(a)
    stored_only, _ = _mint("stored-only")
    await boxes.store.put(REVOCATIONS, *encode(stored_only, int(stored_only.partition(".")[0])))
    await boxes.store.put(REVOCATIONS, "garbage", b"{not json")
    expired = "1600000000.00000000:old"
    await boxes.store.put(REVOCATIONS, *encode(expired, 1600000000))
    a = await boxes.start("a")
    assert filed_only in a.core.revocations and stored_only in a.core.revocations
    assert len(a.core.revocations) == 2
    assert "an entry of the cluster's revocations is no revocation" in caplog.text
    await _until(lambda: stored_only in _filed(a), "the store's revocation reaches the file")
    deadline = time.monotonic() + BOUND  # the first retry writes it
    while await boxes.store.get(REVOCATIONS, key(filed_only)) is None:
        assert time.monotonic() < deadline, f"the file's revocation not in the store within {BOUND} s"
        await asyncio.sleep(0.05)


def test_only_a_box_with_nats_shares_its_revocations(tmp_path):
    single = assemble(_config(tmp_path, free_port("udp")))
    assert isinstance(single.service("turn").revocation_store, RevocationFile)
    clustered = assemble(_config(tmp_path, free_port("udp"), nats='"nats://127.0.0.1:4222"'))
    shared = clustered.service("turn").revocation_store
    assert isinstance(shared, ClusterRevocations) and isinstance(shared.file, RevocationFile)
