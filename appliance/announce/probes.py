"""The health agent's probes: each asks one service what a client would, over a real socket.

- API: GET /healthz answers 200 (503 with status "draining" means draining, not broken).
- TURN: an unauthenticated Allocate on each UDP listener is answered with 401 (RFC 8656 challenge).
- SFU media port: a STUN Binding is answered with success (ICE-lite answers them). Probed only
  when [sfu] is enabled; until the SFU exists, a box with [sfu] enabled never passes.
"""
from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector

from appliance.config import Config, Endpoint
from appliance.stun import TRANSPORT_UDP, Attr, Class, Message, Method, StunError


@dataclass(frozen=True)
class ProbeResult:
    name: str
    ok: bool
    detail: str = "ok"
    draining: bool = False


def _reachable(endpoint: Endpoint) -> tuple[str, int]:
    # A wildcard listener is reached on loopback of its family.
    host = endpoint.host
    if host.is_unspecified:
        host = ipaddress.ip_address("::1" if host.version == 6 else "127.0.0.1")
    return str(host), endpoint.port


class ApiProbe:
    def __init__(self, endpoint: Endpoint):
        host, port = _reachable(endpoint)
        self.name = "api"
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/healthz"

    async def check(self, session: ClientSession, timeout: float) -> ProbeResult:
        try:
            async with session.get(self.url, timeout=ClientTimeout(total=timeout)) as response:
                body = json.loads(await response.read())
        except (ClientError, asyncio.TimeoutError, ValueError, OSError) as e:
            return ProbeResult(self.name, False, f"GET {self.url}: {type(e).__name__} {e}".rstrip())
        state = body.get("status") if isinstance(body, dict) else None
        if response.status == 200 and state == "ok":
            return ProbeResult(self.name, True)
        if state == "draining":
            return ProbeResult(self.name, False, "draining", draining=True)
        return ProbeResult(self.name, False, f"GET {self.url}: {response.status} {state}")


def allocate_request() -> Message:
    return Message(Method.ALLOCATE, Class.REQUEST, attributes=[(Attr.REQUESTED_TRANSPORT, TRANSPORT_UDP)])


def challenged(response: Message) -> str | None:
    """None when `response` is TURN's 401 challenge to an unauthenticated Allocate, else what it is."""
    code = response.get(Attr.ERROR_CODE)
    if response.method == Method.ALLOCATE and response.message_class == Class.ERROR and code and code[0] == 401:
        return None
    return f"expected a 401 challenge to Allocate, got {response!r}"


def binding_request() -> Message:
    return Message(Method.BINDING, Class.REQUEST)


def bound(response: Message) -> str | None:
    if response.method == Method.BINDING and response.message_class == Class.SUCCESS:
        return None
    return f"expected a Binding success, got {response!r}"


class StunProbe:
    """One STUN request over UDP; `judge` returns None for the right answer, else what is wrong."""

    def __init__(self, name: str, endpoint: Endpoint, request: Callable[[], Message],
                 judge: Callable[[Message], str | None]):
        self.name = name
        self.address = _reachable(endpoint)
        self.request = request
        self.judge = judge

    async def check(self, session: ClientSession, timeout: float) -> ProbeResult:
        request = self.request()
        where = f"{self.address[0]}:{self.address[1]}"
        try:
            response = await asyncio.wait_for(_exchange(self.address, request), timeout)
        except asyncio.TimeoutError:
            return ProbeResult(self.name, False, f"{where}: no answer within {timeout} s")
        except OSError as e:
            return ProbeResult(self.name, False, f"{where}: {e.strerror or e}")
        wrong = self.judge(response)
        return ProbeResult(self.name, wrong is None, f"{where}: {wrong}" if wrong else "ok")


class _Answer(asyncio.DatagramProtocol):
    def __init__(self, transaction_id: bytes):
        self.transaction_id = transaction_id
        self.future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr) -> None:
        try:
            message = Message.parse(data)
        except StunError:
            return
        if message.transaction_id == self.transaction_id and not self.future.done():
            self.future.set_result(message)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable on a connected socket: nothing listens there.
        if not self.future.done():
            self.future.set_exception(exc)


async def _exchange(address: tuple[str, int], request: Message) -> Message:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(lambda: _Answer(request.transaction_id),
                                                              remote_addr=address)
    try:
        transport.sendto(request.encode(fingerprint=True))
        return await protocol.future
    finally:
        transport.close()


def probes_for(config: Config) -> list:
    """One probe per service the config enables, and per UDP TURN listener."""
    probes: list = [ApiProbe(config.api.listen)]
    if config.turn.enabled:
        probes += [StunProbe(f"turn {listener}", listener.endpoint, allocate_request, challenged)
                   for listener in config.turn.listen if listener.transport == "udp"]
    if config.sfu.enabled:
        probes += [StunProbe(f"sfu {endpoint}", endpoint, binding_request, bound) for endpoint in config.sfu.udp]
    return probes


def http_session() -> ClientSession:
    # A new connection for every probe, as a new client would open: a wedged accept loop shows.
    return ClientSession(connector=TCPConnector(force_close=True))
