"""The health agent's backbone watch: the ICMP echo codec, the rise/fall of a peer and the switch
of its slice (against stand-ins for the probe and for netconfig), and how status and /metrics
show it. The lab pings through real tunnels (tests/integration/test_backbone.py)."""
from __future__ import annotations

import struct

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from appliance.announce import backbone as watch_module
from appliance.announce.backbone import BackboneWatch
from appliance.announce.echo import checksum, is_reply, request
from appliance.announce.report import AgentReports
from appliance.config import parse_config
from appliance.status import render
from netconfig.apply import ApplyError, save_owned
from netconfig.peer_state import PeerCounters


def config(tmp_path):
    return parse_config(f"""
[turn]
relay_address = "203.0.113.10"
relay_ports = "61000-61499"
[net]
state_file = "{tmp_path}/net.json"
[announce]
rise = 2
fall = 2
[backbone]
underlay = "198.51.100.1"
overlay = "192.0.2.129/25"
[[backbone.peers]]
node = "b"
underlay = "198.51.100.2"
overlay = "192.0.2.130"
relay_ports = "61500-61999"
""", "box.toml")


def test_an_echo_request_carries_a_valid_checksum_and_its_reply_is_recognised():
    v4 = request(4, 0x1234, 7)
    assert v4[0] == 8 and checksum(v4) == 0
    assert request(6, 0x1234, 7)[:1] == bytes([128])
    reply = bytes([0, 0, 0, 0]) + struct.pack("!HH", 0x1234, 7) + b"payload"
    ip_header = bytes([0x45]) + bytes(19)
    assert is_reply(4, ip_header + reply, 0x1234, 7)
    assert not is_reply(4, ip_header + reply, 0x1234, 8) and not is_reply(4, ip_header + request(4, 0x1234, 7), 0x1234, 7)
    assert is_reply(6, bytes([129, 0, 0, 0]) + struct.pack("!HH", 1, 2), 1, 2)
    assert not is_reply(6, b"\x81\x00", 1, 2) and not is_reply(4, b"", 1, 2)


class Stand:
    """Stands in for the probe and for netconfig: answers as told, records the switches."""

    def __init__(self, monkeypatch, tmp_path):
        self.answers = True
        self.switched: list[tuple[str, bool]] = []
        self.refuse = False
        self.path = f"{tmp_path}/net.json"
        monkeypatch.setattr(watch_module, "echo", self.echo)
        monkeypatch.setattr(watch_module, "set_down", self.set_down)
        monkeypatch.setattr(watch_module, "read_counters", self.counters)

    async def echo(self, address, interface, timeout, ident, sequence):
        assert (address, interface) == ("192.0.2.130", "bb-b")
        return None if self.answers else f"{address} through {interface}: no echo reply within {timeout} s"

    def set_down(self, config, node, down):
        if self.refuse:
            raise ApplyError("refused")
        self.switched.append((node, down))
        save_owned(self.path, set(), {node} if down else set())
        return ["a change"]

    @staticmethod
    def counters(config):
        return [PeerCounters("b", "bb-b", True, 10, 1000, 3, landed=8, forwarded=6)]


async def test_a_peer_goes_down_after_fall_rounds_and_up_after_rise_rounds(monkeypatch, tmp_path):
    stand = Stand(monkeypatch, tmp_path)
    watch = BackboneWatch(config(tmp_path))
    report = await watch.round(0.0)
    assert report == {"b": {"up": True, "state": "up", "probe": "answers", "interface": "bb-b", "forwarding": True,
                            "tunnel_tx_packets": 10, "landed": 8, "forwarded": 6, "dropped": 2}}
    stand.answers = False
    assert (await watch.round(1.0))["b"]["state"] == "up (failing 1/2)" and stand.switched == []
    report = await watch.round(2.0)
    assert stand.switched == [("b", True)]
    assert report["b"]["up"] is False and "no echo reply" in report["b"]["probe"]
    await watch.round(3.0)
    assert stand.switched == [("b", True)]  # already so: nothing more
    stand.answers = True
    assert (await watch.round(4.0))["b"]["state"] == "down (answering 1/2)"
    await watch.round(5.0)
    assert stand.switched == [("b", True), ("b", False)]


async def test_a_restarted_agent_starts_from_the_recorded_state_and_retries_a_refused_switch(monkeypatch, tmp_path):
    stand = Stand(monkeypatch, tmp_path)
    save_owned(stand.path, set(), {"b"})
    watch = BackboneWatch(config(tmp_path))
    assert watch.peers["b"].describe() == "down"
    stand.refuse = True
    await watch.round(0.0)
    await watch.round(1.0)  # risen, but the switch is refused: tried again next round
    assert stand.switched == []
    stand.refuse = False
    await watch.round(2.0)
    assert stand.switched == [("b", False)]


@pytest.mark.parametrize(("state", "line"), [
    ({"up": True, "state": "up", "probe": "answers", "interface": "bb-b", "forwarding": True, "tunnel_tx_packets": 10,
      "landed": 8, "forwarded": 6, "dropped": 2},
     "backbone b (bb-b): up, its slice forwarded; packets forwarded 6, dropped 2, tunnel tx packets 10"),
    ({"up": False, "state": "down", "probe": "no echo reply", "interface": "bb-b", "forwarding": False},
     "backbone b (bb-b): down, its slice dropped here (no echo reply)"),
])
def test_status_shows_each_peer(state, line):
    agent = {"age_seconds": 0.2, "state": "announced", "probes": {}, "backbone": {"b": state}}
    box = {"node": "a", "draining": False, "services": {"turn": "ok"}, "agent": agent}
    assert line in render(box, None, None).splitlines()


def test_metrics_show_each_peer():
    registry = CollectorRegistry()
    reports = AgentReports(registry)
    reports.update({"backbone": {"b": {"up": False, "forwarded": 6, "dropped": 2}}}, 0.0)
    text = generate_latest(registry).decode()
    assert 'edgecall_backbone_peer_up{peer="b"} 0.0' in text
    assert 'edgecall_backbone_slice_packets{outcome="dropped",peer="b"} 2.0' in text
