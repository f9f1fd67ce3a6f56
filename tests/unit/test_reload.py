"""Reloading a box in-process (appliance/reload.py): a broken file changes nothing and says every problem
with its line; a good one is taken live by the API's secrets and limits, the TURN core and the health
agent, while keys that need a restart keep their running value."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from appliance import control
from appliance.announce import follow
from appliance.announce.agent import Agent
from appliance.announce.backbone import BackboneWatch
from appliance.announce.hysteresis import Verdict
from appliance.announce.probes import http_session
from appliance.api.server import ApiService
from appliance.config import PortRange, TurnConfig, TurnKeyConfig, load_config, parse_config
from appliance.control import ControlService
from appliance.reload import ConfigSource, describe
from appliance.runner import Box
from appliance.stun import Attr, Method
from appliance.turn.credentials import REST
from tests.lab.appliance import free_port
from tests.unit import test_control
from tests.unit.turn.harness import NOW, RELAY4, RELAY6, SECRET, Lab, error_code, ok

# The control socket's directory, the tests' own.
runtime = test_control.runtime

FILE = """\
[api]
listen = "127.0.0.1:{port}"

[[apps]]
id = "demo"
secret = "{secret}"

[turn]
enabled = false
secrets = ["rest-1"]
"""


def write(path: Path, port: int, secret: str = "demo-secret", extra: str = "") -> None:
    path.write_text(FILE.format(port=port, secret=secret) + extra)


def api_box(path: Path, drain_time: float | None = None) -> Box:
    source = ConfigSource(str(path), drain_time)
    box = Box(source.over(load_config(str(path))), source)
    box.services.append(ApiService(box))
    return box


async def status_with(client: TestClient, secret: str) -> int:
    response = await client.get("/v1/apps/demo/sessions/0123456789abcdef0123456789abcdef",
                                headers={"Authorization": f"Bearer {secret}"})
    return response.status


async def test_a_broken_file_changes_nothing_and_names_every_problem_with_its_line(tmp_path):
    path = tmp_path / "box.toml"
    write(path, 8080)
    box = api_box(path)
    running = box.config
    path.write_text(FILE.format(port=8080, secret="new").replace('id = "demo"', "id = 7")
                    + "[sfu]\nudp = \"nowhere\"\n")
    outcome = await box.reloader.reload()
    assert not outcome.ok and outcome.applied == () and outcome.restart == ()
    assert outcome.problems == (
        f"{path}:5: apps[0].id: expected an id of 1 to 63 letters, digits, '.', '_' or '-', starting with a "
        "letter or digit, found 7",
        f'{path}:12: sfu.udp: expected host:port, or a non-empty array of them (IPv6 as [::1]:3479), found "nowhere"',
    )
    assert box.config is running
    async with TestClient(TestServer(box.services[0].app)) as client:
        assert await status_with(client, "demo-secret") != 401


async def test_a_good_file_is_taken_live_and_keys_that_need_a_restart_are_named(tmp_path):
    port = free_port()
    path = tmp_path / "box.toml"
    write(path, port)
    box = api_box(path, drain_time=10.0)
    async with TestClient(TestServer(box.services[0].app)) as client:
        async def key_2() -> int:
            response = await client.post("/v1/turn/keys/key-2/credentials/generate-ice-servers",
                                         headers={"Authorization": "Bearer token-2"}, json={"ttl": 60})
            return response.status

        assert await status_with(client, "demo-secret") != 401 and await key_2() == 404
        write(path, free_port(), secret="demo-secret-2", extra='[[turn.keys]]\nid = "key-2"\ntoken = "token-2"\n')
        outcome = await box.reloader.reload()
        assert outcome.ok and outcome.applied == ("apps[demo].secret", "turn.keys[key-2]")
        assert outcome.restart == ("api.listen",)
        assert box.config.api.listen.port == port and box.config.drain.time == 10.0
        assert await status_with(client, "demo-secret") == 401
        assert await status_with(client, "demo-secret-2") not in (401, 404)
        assert await key_2() not in (401, 404)  # past auth: this box has no TURN service to mint with
    assert describe(outcome.to_dict()) == [
        f"{path}: reloaded", "  applied: apps[demo].secret, turn.keys[key-2]",
        "  needs a restart (the box keeps the running value): api.listen"]


async def test_a_box_on_the_embedded_default_has_no_file_to_reload():
    box = Box(load_config(None))
    outcome = await box.reloader.reload()
    assert not outcome.ok and "embedded default" in outcome.problems[0]


def test_the_turn_core_takes_new_secrets_keys_and_quotas_and_keeps_its_allocations():
    lab = Lab(keys={"key-1": "token-1"})
    before = lab.client(("198.51.100.20", 1))
    ok(before.allocate())
    lab.server.reconfigure(TurnConfig(
        secrets=("rest-2",), relay_address=RELAY4, relay_address_v6=RELAY6, relay_ports=PortRange(50000, 50099),
        keys=(TurnKeyConfig("key-2", "token-2", quota=1),), rate_limit_pps=7))
    ok(before.request(Method.REFRESH, (Attr.LIFETIME, 600), now=NOW + 1))  # the allocation lives on
    assert error_code(lab.client(("198.51.100.20", 2)).allocate()) == 401  # signed with the removed secret
    ok(lab.client(("198.51.100.20", 3), secret="rest-2").allocate())
    ok(lab.client(("198.51.100.20", 4), issuer="key-2").allocate())
    assert error_code(lab.client(("198.51.100.20", 5), issuer="key-2").allocate()) == 486  # its quota is 1
    with pytest.raises(ValueError):
        lab.server.credentials.mint(NOW, 60, "x", "key-1")
    assert lab.server.credentials.issuers == (REST, "key-2")
    assert {a.limits.packets_per_second for a in lab.server.allocations} == {7}
    assert SECRET not in lab.server.credentials.secrets


AGENT = """\
[api]
listen = "127.0.0.1:{port}"
[sfu]
enabled = false
[turn]
enabled = false
[anycast]
prefixes = ["203.0.113.10/32"]
[bgp]
local_asn = 65010
router_id = "192.0.2.2"
control_socket = "{tmp}/bird.ctl"
[announce]
interval = 0.5
rise = {rise}
hold_down = 0
bird_dir = "{tmp}/bird"
"""


@pytest.mark.usefixtures("runtime")
async def test_the_health_agent_follows_the_boxs_reloaded_timers(tmp_path):
    port = free_port()
    path = tmp_path / "box.toml"
    path.write_text(AGENT.format(port=port, tmp=tmp_path, rise=3))
    box = Box(load_config(str(path)), ConfigSource(str(path)))
    service = ControlService(box)
    box.services.append(service)
    await service.start()
    try:
        agent = Agent(load_config(str(path)))
        path.write_text(AGENT.format(port=port, tmp=tmp_path, rise=5).replace("interval = 0.5", "interval = 2"))
        answer = await asyncio.to_thread(control.request, box.config, "reload")
        assert answer["ok"] and answer["applied"] == ["announce.interval", "announce.rise"]
        assert agent.hysteresis.rise == 3
        async with http_session() as session:
            await agent.round(session)  # nothing answers its probes or BIRD's socket; the box answers its report
        assert agent.hysteresis.rise == 5 and agent.config.announce.interval == 2.0
        assert agent.config == box.config
    finally:
        await service.stop()


def test_the_agent_follows_the_boxs_backbone_peers_and_keeps_the_health_of_unchanged_ones(tmp_path):
    text = BACKBONE.format(state=tmp_path / "netconfig.json")
    running = parse_config(text, "box.toml")
    reloaded = parse_config(text + PAR_1, "box.toml")
    offered = json.loads(json.dumps(follow.offer(reloaded)))  # as the control socket carries it
    assert follow.merge(running, offered) == reloaded
    assert follow.merge(running, {"backbone_peers": [{"node": "x"}]}) == running  # what does not load is ignored
    watch = BackboneWatch(running)
    fra = watch.peers["fra-1"]
    fra.hysteresis.observe(Verdict.FAIL, 0.0)
    watch.reconfigure(reloaded)
    assert list(watch.peers) == ["fra-1", "par-1"] and watch.peers["fra-1"] is fra and fra.hysteresis.fails == 1
    watch.reconfigure(running)
    assert list(watch.peers) == ["fra-1"]


BACKBONE = """
[turn]
relay_address = "203.0.113.10"
relay_ports = "61000-61499"
[net]
state_file = "{state}"
[backbone]
underlay = "198.51.100.1"
overlay = "192.0.2.129/25"
[[backbone.peers]]
node = "fra-1"
underlay = "198.51.100.2"
overlay = "192.0.2.130"
relay_ports = "61500-61999"
"""
PAR_1 = """
[[backbone.peers]]
node = "par-1"
underlay = "198.51.100.3"
overlay = "192.0.2.131"
relay_ports = "62000-62499"
"""
