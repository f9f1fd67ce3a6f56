"""The health agent's probes against real sockets on loopback: a small HTTP server, STUN responders."""
from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from appliance.announce.agent import verdict
from appliance.announce.hysteresis import Verdict
from appliance.announce.probes import (
    ApiProbe, ProbeResult, StunProbe, allocate_request, binding_request, bound, challenged, http_session, probes_for,
)
from appliance.config import Endpoint, parse_config
from appliance.stun import Attr, Message

LOOPBACK = "127.0.0.1"


async def healthz_server(status: int, body: dict) -> TestServer:
    async def healthz(request):
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    server = TestServer(app, host=LOOPBACK)
    await server.start_server()
    return server


@pytest.mark.parametrize(
    ("status", "body", "ok", "draining"),
    [(200, {"status": "ok"}, True, False), (503, {"status": "draining"}, False, True),
     (503, {"status": "failing"}, False, False), (200, {"status": "draining"}, False, True)],
    ids=["ok", "draining", "failing", "draining-200"],
)
async def test_api_probe(status, body, ok, draining):
    server = await healthz_server(status, body)
    try:
        async with http_session() as session:
            result = await ApiProbe(Endpoint.parse(f"{LOOPBACK}:{server.port}")).check(session, 1.0)
    finally:
        await server.close()
    assert (result.ok, result.draining) == (ok, draining)


async def test_api_probe_on_a_closed_port_fails():
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        async with http_session() as session:
            result = await ApiProbe(Endpoint.parse(f"{LOOPBACK}:{port}")).check(session, 1.0)
    assert not result.ok and "ClientConnectorError" in result.detail


class Responder(asyncio.DatagramProtocol):
    """Answers each STUN request with what `answer` makes of it (None: stays silent)."""

    def __init__(self, answer):
        self.answer = answer

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        reply = self.answer(Message.parse(data))
        if reply is not None:
            self.transport.sendto(reply.encode(), addr)


async def responder(answer) -> tuple[asyncio.DatagramTransport, Endpoint]:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: Responder(answer),
                                                                            local_addr=(LOOPBACK, 0))
    return transport, Endpoint.parse(f"{LOOPBACK}:{transport.get_extra_info('sockname')[1]}")


def turn_like(request: Message) -> Message:
    if request.get(Attr.REQUESTED_TRANSPORT) is None:
        return request.error(400)
    return request.error(401, (Attr.REALM, "edgecall"), (Attr.NONCE, "n"))


@pytest.mark.parametrize(
    ("answer", "request_", "judge", "ok"),
    [(turn_like, allocate_request, challenged, True),
     (lambda r: r.success(), allocate_request, challenged, False),
     (lambda r: r.success(), binding_request, bound, True),
     (lambda r: r.error(400), binding_request, bound, False)],
    ids=["turn-401", "turn-success-is-wrong", "sfu-binding", "sfu-error"],
)
async def test_stun_probes(answer, request_, judge, ok):
    transport, endpoint = await responder(answer)
    try:
        result = await StunProbe("p", endpoint, request_, judge).check(None, 1.0)
    finally:
        transport.close()
    assert result.ok is ok, result.detail


async def test_stun_probe_of_a_silent_service_times_out():
    transport, endpoint = await responder(lambda r: None)
    try:
        result = await StunProbe("p", endpoint, binding_request, bound).check(None, 0.1)
    finally:
        transport.close()
    assert not result.ok and "no answer within 0.1 s" in result.detail


async def test_stun_probe_of_a_closed_port_fails_at_once():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((LOOPBACK, 0))
        endpoint = Endpoint.parse(f"{LOOPBACK}:{s.getsockname()[1]}")
    result = await StunProbe("p", endpoint, allocate_request, challenged).check(None, 5.0)
    assert not result.ok and "refused" in result.detail.lower()


def test_probes_follow_the_enabled_services():
    config = parse_config('[api]\nlisten = "0.0.0.0:8080"\n[sfu]\nenabled = true\nudp = "[::]:3479"\n'
                          '[turn]\nlisten = ["udp://203.0.113.10:3478", "tcp://203.0.113.10:3478"]\n', "t.toml")
    probes = probes_for(config)
    assert [p.name for p in probes] == ["api", "turn udp://203.0.113.10:3478", "sfu [::]:3479"]
    assert probes[0].url == "http://127.0.0.1:8080/healthz"  # a wildcard listener is probed on loopback
    assert probes[2].address == ("::1", 3479)
    off = parse_config("[sfu]\nenabled = false\n[turn]\nenabled = false\n", "t.toml")
    assert [p.name for p in probes_for(off)] == ["api"]


def test_verdict_of_a_round():
    ok, bad, draining = ProbeResult("a", True), ProbeResult("b", False, "x"), ProbeResult("a", False, "draining", True)
    assert verdict([ok, ok]) is Verdict.PASS
    assert verdict([ok, bad]) is Verdict.FAIL
    assert verdict([draining, bad]) is Verdict.DRAINING
