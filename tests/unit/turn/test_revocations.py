"""Revocations kept on the state partition: the file store, and the TURN service restarted from it."""
import asyncio
import json
import os

import pytest
from aiohttp.test_utils import TestClient, TestServer

from appliance.api.server import make_app
from appliance.config import parse_config
from appliance.runner import Box
from appliance.stun import Attr, Class
from appliance.turn.revocation_store import RevocationFile
from appliance.turn.service import TurnService
from tests.lab.appliance import free_port
from tests.lab.turn_client import TurnUdpClient

NOW = 1_700_000_000


def _clock(now: float = NOW):
    return lambda: now


def _lines(path) -> list[str]:
    with open(path) as f:
        return f.read().splitlines()


async def test_the_file_keeps_what_was_added_for_the_next_start(tmp_path):
    path = str(tmp_path / "state" / "revocations.jsonl")
    store = RevocationFile(path, _clock())
    assert await store.load() == {}  # no file yet
    await store.add("1700003600:alice", 1700003600)
    await store.add("1700007200:bob", 1700007200)
    assert await RevocationFile(path, _clock()).load() == {"1700003600:alice": 1700003600, "1700007200:bob": 1700007200}
    assert os.listdir(tmp_path / "state") == ["revocations.jsonl"]  # no temp file left behind


async def test_appends_until_they_outnumber_the_last_rewrite_then_rewrites_without_the_expired(tmp_path):
    path = str(tmp_path / "revocations.jsonl")
    store = RevocationFile(path, _clock(), compact_after=2)
    await store.add("1700000010:soon", 1700000010)
    await store.add("1700003600:a", 1700003600)
    assert len(_lines(path)) == 2
    store.clock = _clock(NOW + 10)
    await store.add("1700003600:b", 1700003600)  # a third line would be more than compact_after
    assert _lines(path) == ['["1700003600:a", 1700003600]', '["1700003600:b", 1700003600]']
    await store.add("1700003600:c", 1700003600)
    assert len(_lines(path)) == 3  # appended again: the rewrite kept 2
    assert set(await RevocationFile(path).load()) == {"1700003600:a", "1700003600:b", "1700003600:c"}


async def test_adds_during_a_write_go_out_together(tmp_path, monkeypatch):
    path = str(tmp_path / "revocations.jsonl")
    store = RevocationFile(path, _clock())
    writes = []
    append = store._append
    monkeypatch.setattr(store, "_append", lambda batch: (writes.append(len(batch)), append(batch)))
    await asyncio.gather(*(store.add(f"17000036{i:02d}:u{i}", 1700003600 + i) for i in range(50)))
    assert len(await RevocationFile(path).load()) == 50
    assert writes == [1, 49]  # the first add's write, then one for all that came meanwhile


async def test_a_last_line_cut_short_by_a_crash_is_ignored(tmp_path, caplog):
    path = tmp_path / "revocations.jsonl"
    path.write_text('["1700003600:alice", 1700003600]\n["1700003600:bo')
    store = RevocationFile(str(path), _clock())
    assert await store.load() == {"1700003600:alice": 1700003600}
    assert "cut short" in caplog.text
    await store.add("1700003600:carol", 1700003600)  # not glued to the cut line
    assert await RevocationFile(str(path)).load() == {"1700003600:alice": 1700003600, "1700003600:carol": 1700003600}


@pytest.mark.parametrize("line", [b"{not json", b'["1700003600:x"]', b'["1700003600:x", "soon"]', b'{"a": 1}', b"\xff",
                                  b"", b"17"])
async def test_a_corrupt_file_is_reported_moved_aside_and_its_good_lines_kept(tmp_path, line, caplog):
    path = tmp_path / "revocations.jsonl"
    text = b'["1700003600:alice", 1700003600]\n' + line + b'\n["1700003600:bob", 1700003600]\n'
    path.write_bytes(text)
    store = RevocationFile(str(path), _clock())
    assert await store.load() == {"1700003600:alice": 1700003600, "1700003600:bob": 1700003600}
    [record] = [r for r in caplog.records if "the revocations file is corrupt" in r.getMessage()]
    assert record.fields["lines"] == [2]
    assert (tmp_path / "revocations.jsonl.corrupt").read_bytes() == text
    assert len(_lines(path)) == 2


async def test_a_write_that_fails_raises_and_the_next_add_writes_it_too(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    store = RevocationFile(str(blocker / "revocations.jsonl"), _clock())
    with pytest.raises(OSError):
        await store.add("1700003600:alice", 1700003600)
    blocker.unlink()
    await store.add("1700003600:bob", 1700003600)
    assert set(await RevocationFile(str(blocker / "revocations.jsonl")).load()) == {"1700003600:alice", "1700003600:bob"}


# --- the TURN service and the credentials API, on loopback ----------------------------------------


def _config(state_dir, turn_port: int, **turn: object):
    extra = "".join(f"{key} = {json.dumps(value)}\n" for key, value in turn.items())
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
{extra}[[turn.keys]]
id = "key"
token = "key-token"
""", "test.toml")


async def _allocate(port: int, username: str, password: str):
    client = TurnUdpClient(("127.0.0.1", port), username, password)
    try:
        return await asyncio.to_thread(client.allocate)
    finally:
        client.close()


async def test_a_revoked_credential_is_still_refused_after_a_restart(tmp_path):
    port = free_port("udp")
    config = _config(tmp_path, port)
    first = TurnService(Box(config))
    await first.start()
    try:
        username, password = first.mint(3600, "alice", "key")
        assert (await _allocate(port, username, password)).message_class == Class.SUCCESS
        assert await first.revoke(username)
        assert (await _allocate(port, username, password)).get(Attr.ERROR_CODE)[0] == 401
    finally:
        await first.stop()
    second = TurnService(Box(config))  # a new process would build the service the same way
    await second.start()
    try:
        assert username in second.core.revocations
        assert (await _allocate(port, username, password)).get(Attr.ERROR_CODE)[0] == 401
        other, other_password = second.mint(3600, "bob", "key")
        assert (await _allocate(port, other, other_password)).message_class == Class.SUCCESS
    finally:
        await second.stop()


async def test_a_corrupt_revocations_file_does_not_stop_the_service(tmp_path):
    (tmp_path / "turn-revocations.jsonl").write_text("{\n")
    service = TurnService(Box(_config(tmp_path, free_port("udp"))))
    await service.start()
    try:
        assert service.health() is None and len(service.core.revocations) == 0
    finally:
        await service.stop()


@pytest.fixture
async def api(tmp_path):
    box = Box(_config(tmp_path, free_port("udp"), max_revocations=3))
    turn = TurnService(box)
    box.services.append(turn)
    await turn.start()
    async with TestClient(TestServer(make_app(box))) as client:
        client.turn = turn
        yield client
    await turn.stop()


async def _revoke(api, username: str):
    return await api.post(f"/v1/turn/keys/key/credentials/{username}/revoke",
                          headers={"Authorization": "Bearer key-token"})


async def test_the_api_refuses_names_the_box_never_minted_and_stops_at_the_cap(api):
    far = (await _revoke(api, "9999999999:" + "x" * 4096))
    assert far.status == 404 and (await far.json())["errorCode"] == "not_found"
    names = [api.turn.mint(3600, f"user{i}", "key")[0] for i in range(4)]
    for name in names[:3]:
        assert (await _revoke(api, name)).status == 204
    assert (await _revoke(api, names[0])).status == 204  # again: already held
    full = await _revoke(api, names[3])
    assert full.status == 503
    assert "3 revocations are held" in (await full.json())["errorDescription"]
    assert len(api.turn.core.revocations) == 3
    assert {json.loads(line)[0] for line in _lines(api.turn.revocation_store.path)} == set(names[:3])
