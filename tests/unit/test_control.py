"""The control socket, the drain state and what /healthz and /metrics make of them, in-process."""
from __future__ import annotations

import asyncio
import json
import socket

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from appliance import control
from appliance.api.server import make_app
from appliance.config import parse_config
from appliance.control import ControlService, control_address
from appliance.runner import Box
from tests.lab.appliance import free_port

REPORT = {
    "announced": True,
    "state": "announced",
    "probes": {"api": {"ok": True, "detail": "ok"}, "turn udp://203.0.113.10:3478": {"ok": False, "detail": "timeout"}},
    "bgp": {"sessions": [{"name": "peer_192_0_2_1", "neighbor": "192.0.2.1", "asn": 65000, "state": "up",
                          "info": "Established", "since": "12:00:00", "exported": ["203.0.113.10/32"]}],
            "announced": ["203.0.113.10/32"], "error": None},
}


@pytest.fixture
async def box():
    # api.listen names the control socket; nothing listens on the port itself here.
    config = f'[api]\nlisten = "127.0.0.1:{free_port()}"\n[turn]\nenabled = false\n'
    the_box = Box(parse_config(config, "test.toml"))
    service = ControlService(the_box)
    the_box.services.append(service)
    await service.start()
    yield the_box
    await service.stop()


async def ask(box, command: str, **fields):
    return await asyncio.to_thread(control.request, box.config, command, **fields)


async def test_drain_and_undrain_toggle_the_state(box):
    assert (await ask(box, "status"))["draining"] is False
    answer = await ask(box, "drain")
    assert answer["ok"] and answer["draining"] and answer["draining_for"] >= 0
    assert box.drain.active
    assert (await ask(box, "undrain"))["draining"] is False
    assert not box.drain.active


async def test_reports_are_kept_with_their_age(box):
    assert (await ask(box, "status"))["agent"] is None
    await ask(box, "report", report=REPORT)
    agent = (await ask(box, "status"))["agent"]
    assert agent["state"] == "announced" and agent["age_seconds"] >= 0
    assert agent["bgp"]["sessions"][0]["name"] == "peer_192_0_2_1"


async def test_bad_requests_are_answered_not_fatal(box):
    assert "unknown command" in (await ask(box, "reboot"))["error"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        await asyncio.to_thread(sock.connect, control_address(box.config))
        await asyncio.to_thread(sock.sendall, b"not json\n")
        answer = json.loads(await asyncio.to_thread(sock.recv, 4096))
    assert answer["ok"] is False and "expected one JSON object" in answer["error"]
    assert (await ask(box, "status"))["ok"]


async def test_a_second_box_on_the_same_api_endpoint_cannot_take_the_socket(box):
    from appliance.service import StartError

    with pytest.raises(StartError, match="named after api.listen"):
        await ControlService(Box(box.config)).start()


async def test_healthz_says_draining_with_503_and_metrics_show_it(box):
    async with TestClient(TestServer(make_app(box))) as client:
        res = await client.get("/healthz")
        assert res.status == 200 and (await res.json())["draining"] is False
        box.drain.start(0.0, "test")
        box.agent.update(REPORT, 0.0)
        res = await client.get("/healthz")
        body = await res.json()
        assert res.status == 503 and body["status"] == "draining" and body["draining"] is True
        assert body["details"]["agent"]["probes"]["api"]["ok"] is True
        families = {f.name: f for f in text_string_to_metric_families(await (await client.get("/metrics")).text())}
    samples = {(f, tuple(sorted(s.labels.items()))): s.value for f in families for s in families[f].samples}
    assert samples[("edgecall_draining", ())] == 1
    assert samples[("edgecall_anycast_announced", ())] == 1
    assert samples[("edgecall_anycast_prefix_exported", (("prefix", "203.0.113.10/32"),))] == 1
    assert samples[("edgecall_bgp_session_established", (("neighbor", "192.0.2.1"), ("session", "peer_192_0_2_1")))] == 1
    assert samples[("edgecall_probe_ok", (("probe", "turn udp://203.0.113.10:3478"),))] == 0
    assert samples[("edgecall_announce_report_age_seconds", ())] > 0


def test_drain_time_already_served_counts():
    box = Box(parse_config("", "test.toml"))
    assert box.drain.remaining(10.0, 100.0) == 0.0
    box.drain.start(100.0, "appliance drain")
    box.drain.start(104.0, "stopping")  # already draining: the first start counts
    assert box.drain.remaining(10.0, 104.0) == 6.0
    assert box.drain.remaining(10.0, 120.0) == 0.0
