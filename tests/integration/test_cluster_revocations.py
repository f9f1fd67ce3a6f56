"""TURN revocations across a cluster, with real parts on loopback: two appliance processes clustered
through a real nats-server (JetStream), the project's own TURN client. A credential revoked through
one box's API is refused by the other box's TURN server, and by that box restarted with nothing of
its own (a fresh state directory: only the cluster store can tell it)."""
from __future__ import annotations

import json
import time

import pytest

from appliance.stun import Attr, Class
from tests.lab.appliance import STATE_DIR, box_config, free_port, request
from tests.lab.nats import nats_servers
from tests.lab.turn_client import TurnUdpClient

__all__ = ["nats_servers"]  # the fixture, used below by name

SECRET = "a cluster secret for the loopback lab"
KEY = {"Authorization": "Bearer test-key-token"}
BOUND = 5.0  # seconds a revocation may take to reach the other box: a bound on a hang, not a speed claim


def clustered(node: str, nats_url: str, state_dir, relay_ports: str, ports: tuple[int, int, int]) -> str:
    text = box_config(*ports, f'\n[cluster]\nnats = ["{nats_url}"]\nsecret = "{SECRET}"\n')
    return (text.replace('id = "test-box"', f'id = "{node}"', 1).replace(STATE_DIR, str(state_dir))
            .replace('relay_ports = "61000-61999"', f'relay_ports = "{relay_ports}"'))


def _ports() -> tuple[int, int, int]:
    return free_port("tcp"), free_port("udp"), free_port("udp", "tcp")


def _turn_port(box) -> int:
    return int(box.config_path.read_text().split('listen = ["udp://127.0.0.1:')[1].split('"')[0])


def _mint(box, identifier: str) -> tuple[str, str]:
    # Its own identifier: two credentials minted in the same second would otherwise be the same one.
    body = json.dumps({"ttl": 600, "customIdentifier": identifier}).encode()
    status, raw = request("POST", box.url("/v1/turn/keys/test-key/credentials/generate-ice-servers"), body,
                          {**KEY, "Content-Type": "application/json"})
    assert status == 201, raw
    turn = json.loads(raw)["iceServers"][-1]
    return turn["username"], turn["credential"]


def _revoke(box, username: str) -> None:
    status, raw = request("POST", box.url(f"/v1/turn/keys/test-key/credentials/{username}/revoke"), headers=KEY)
    assert status == 204, raw


def _allocate(box, username: str, password: str):
    client = TurnUdpClient(("127.0.0.1", _turn_port(box)), username, password)
    try:
        return client.allocate()
    finally:
        client.close()


def _refused(answer) -> bool:
    return answer.message_class == Class.ERROR and answer.get(Attr.ERROR_CODE)[0] == 401


def _refused_soon(box, username: str, password: str) -> None:
    deadline = time.monotonic() + BOUND
    while not _refused(answer := _allocate(box, username, password)):
        assert answer.message_class == Class.SUCCESS, answer
        if time.monotonic() > deadline:
            pytest.fail(f"{box.api} still allocates for {username} {BOUND} s after its revocation")
        time.sleep(0.05)


def test_a_revocation_on_one_box_holds_on_every_box_and_across_restarts(nats_servers, appliance, tmp_path):
    # nats_servers first: torn down last, so the boxes stop with their store still there.
    nats = nats_servers(1).urls[0]
    ports_b = _ports()
    a = appliance(clustered("box-a", nats, tmp_path / "a", "61000-61499", _ports()))
    b = appliance(clustered("box-b", nats, tmp_path / "b", "61500-61999", ports_b))

    username, password = _mint(a, "alice")
    assert _allocate(b, username, password).message_class == Class.SUCCESS  # B takes A's credentials
    _revoke(a, username)
    _refused_soon(b, username, password)

    b.stop()
    b = appliance(clustered("box-b", nats, tmp_path / "b-again", "61500-61999", ports_b))
    assert "revocations restored" in b.logs()
    assert _refused(_allocate(b, username, password))  # at once: revocations load before the listeners open

    other, other_password = _mint(a, "bob")
    assert _allocate(a, other, other_password).message_class == Class.SUCCESS
    _revoke(b, other)
    _refused_soon(a, other, other_password)
