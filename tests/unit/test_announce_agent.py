"""The health agent's loop against a real HTTP server and a fake BIRD control socket."""
from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from appliance.announce.agent import Agent
from appliance.announce.probes import http_session
from appliance.config import parse_config
from netconfig.bird_conf import announcement_path
from tests.unit.test_bird_control import READING, SHOW_PROTOCOLS, FakeBird

REPLIES = {"configure": [READING + "0003 Reconfigured\n"], "show protocols": [SHOW_PROTOCOLS]}


@pytest.fixture
async def service():
    """A /healthz whose answer the test sets through `state["status"]`."""
    state = {"status": "ok"}

    async def healthz(request):
        return web.json_response(state, status=200 if state["status"] == "ok" else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield server.port, state
    await server.close()


def agent_config(tmp_path, port: int):
    return parse_config(f"""
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
control_socket = "{tmp_path}/bird.ctl"
[announce]
rise = 2
fall = 1
hold_down = 0
bird_dir = "{tmp_path}/bird"
""", "agent.toml")


async def test_announces_after_rise_and_withdraws_at_once_on_draining(tmp_path, service):
    port, state = service
    bird = FakeBird(tmp_path / "bird.ctl", REPLIES)
    try:
        config = agent_config(tmp_path, port)
        agent = Agent(config)
        path = tmp_path / "bird" / "announce.conf"
        assert announcement_path(config) == str(path)
        async with http_session() as session:
            await agent.round(session)  # BIRD is told "withdrawn" first: the agent knew nothing of it
            assert not path.exists() and bird.commands.count("configure") == 1 and agent.told is False
            await agent.round(session)
            assert "route 203.0.113.10/32 blackhole;" in path.read_text()
            assert bird.commands.count("configure") == 2 and agent.told is True
            await agent.round(session)  # nothing new to tell BIRD
            assert bird.commands.count("configure") == 2
            state["status"] = "draining"
            await agent.round(session)
            assert not path.exists() and bird.commands.count("configure") == 3 and agent.told is False
    finally:
        bird.stop()


async def test_stopping_withdraws_first(tmp_path, service):
    port, _ = service
    bird = FakeBird(tmp_path / "bird.ctl", REPLIES)
    try:
        agent = Agent(agent_config(tmp_path, port))
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        path = tmp_path / "bird" / "announce.conf"
        while not path.exists():
            await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 10)
        assert not path.exists() and agent.told is False
        assert bird.commands[-1] == "configure"
    finally:
        bird.stop()


async def test_bird_unreachable_is_retried_next_round(tmp_path, service):
    port, _ = service
    agent = Agent(agent_config(tmp_path, port))
    async with http_session() as session:
        for _ in range(2):
            await agent.round(session)
        assert agent.told is None  # the file is written, BIRD not told: try again
        bird = FakeBird(tmp_path / "bird.ctl", REPLIES)
        try:
            await agent.round(session)
            assert agent.told is True and bird.commands.count("configure") == 1
        finally:
            bird.stop()
