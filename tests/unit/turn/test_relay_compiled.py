"""The compiled relay of connected UDP sockets (appliance/turn/_relay.c) against the Python callbacks it
stands in for: twin shells on loopback, one reading its connected sockets in C and one in Python, are fed
the same datagrams, and the clients and peers must receive the same datagrams and both cores end in the
same state."""
import asyncio
import dataclasses
import math
import select
import socket
from typing import Any

import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.stun import TRANSPORT_UDP, Attr, Class, Message, Method, pack_channel_data
from appliance.turn import io as turn_io
from appliance.turn import relay
from appliance.turn.allocation import Allocation
from appliance.turn.ratelimit import RelayLimits
from tests.unit.turn.test_io import Shell

pytestmark = pytest.mark.skipif(relay.RELAY is None, reason="the compiled relay is not built")

CHANNELS = (0x4001, 0x4002)  # to peers 0 and 1; peer 2 has a permission only
LIMITS = RelayLimits(packets_per_second=1e6, bytes_per_second=1e9)


class Twin:
    """A shell with an allocation, two channels and a third peer's permission, read in C or in Python."""

    def __init__(self, listen: str, budget: int, compiled: bool) -> None:
        self.listen, self.budget, self.compiled = listen, budget, compiled

    async def open(self) -> None:
        saved = turn_io._RELAY
        if not self.compiled:
            turn_io._RELAY = None  # read at each connect: this shell's connected sockets get Python callbacks
        try:
            self.shell = shell = Shell(self.listen)
            shell.io._connected_budget = self.budget
            self.peers = [*shell.peers, socket.socket(socket.AF_INET, socket.SOCK_DGRAM)]
            self.peers[2].bind(("127.0.0.1", 0))
            self.relayed = (await shell.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, TRANSPORT_UDP))).get(
                Attr.XOR_RELAYED_ADDRESS)
            for number, peer in zip(CHANNELS, self.peers):
                await shell.request(Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, number),
                                    (Attr.XOR_PEER_ADDRESS, peer.getsockname()))
            await shell.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, self.peers[2].getsockname()))
        finally:
            turn_io._RELAY = saved
        (self.allocation,) = shell.io.core.allocations
        self.allocation.limits = LIMITS
        self.tokens(LIMITS.packet_burst, LIMITS.byte_burst)
        self.permissions = dict(self.allocation.permissions)
        self.xor_permissions = dict(self.allocation.xor_permissions)

    async def close(self) -> None:
        self.peers[2].close()
        await self.shell.close()

    def tokens(self, packets: float, octets: float) -> None:
        self.allocation.packet_tokens, self.allocation.byte_tokens = packets, octets

    def permit(self, present: bool) -> None:
        allocation = self.allocation
        allocation.permissions.clear()
        allocation.xor_permissions.clear()
        if present:
            allocation.permissions.update(self.permissions)
            allocation.xor_permissions.update(self.xor_permissions)

    def stop_clock(self) -> None:
        """No time accrues tokens at the next refill: the twins' clocks differ, their buckets must not."""
        self.allocation.refilled_at = math.inf

    def from_client(self, datagram: bytes) -> None:
        self.shell.client.sock.sendto(datagram, self.shell.server)

    def send_indication(self, peer: int, data: bytes) -> None:
        self.from_client(Message(Method.SEND, Class.INDICATION, None, [
            (Attr.XOR_PEER_ADDRESS, self.peers[peer].getsockname()), (Attr.DATA, data)]).encode())

    def from_peer(self, peer: int, data: bytes) -> None:
        self.peers[peer].sendto(data, self.relayed)

    async def settle(self) -> None:
        """Until every datagram sent to the shell has been handled (loopback delivers within the send, and a
        reader callback handles what it reads before the loop runs anything else)."""
        while select.select(list(self.shell.io._udp.values()), [], [], 0)[0]:
            await asyncio.sleep(0)

    def received(self) -> list[Any]:
        """What the client and the peers have received since last asked, the client's indications by
        peer (their transaction IDs and the relayed addresses are each twin's own)."""
        ports = {peer.getsockname()[1]: index for index, peer in enumerate(self.peers)}
        out: list[Any] = []
        for index, sock in enumerate([self.shell.client.sock, *self.peers]):
            while select.select([sock], [], [], 0)[0]:
                try:
                    datagram = sock.recv(65536)
                except OSError as e:  # an ICMP error queued on it
                    out.append((index, "error", e.errno))
                    continue
                if index == 0 and datagram[0] < 0x40:
                    message = Message.parse(datagram)
                    peer = message.get(Attr.XOR_PEER_ADDRESS)
                    out.append((index, message.method, message.message_class, ports.get(peer[1]) if peer else None,
                                message.get(Attr.DATA)))
                else:
                    out.append((index, datagram))
        return out

    def state(self) -> tuple:
        allocation = self.allocation
        return (
            allocation.packet_tokens, allocation.byte_tokens, allocation.bytes_from_client,
            allocation.packets_from_client, allocation.bytes_to_client, allocation.packets_to_client,
            allocation.dropped, dataclasses.asdict(self.shell.io.core.counters), self.shell.io.send_errors,
        )


payloads = st.one_of(st.binary(max_size=64), st.binary(min_size=500, max_size=1400),
                     st.integers(1400, 9000).map(lambda size: bytes(size)))
steps = st.one_of(
    st.tuples(st.just("channel"), st.sampled_from((*CHANNELS, 0x4003, 0x7FFF)), payloads,
              st.sampled_from((0, 0, 0, 1, 7, -1, -3))),
    st.tuples(st.just("send"), st.integers(0, 2), payloads),
    st.tuples(st.just("garbage"), st.one_of(st.binary(max_size=3), st.binary(min_size=4, max_size=40).map(
        lambda data: bytes([0x80 | data[0]]) + data[1:]), st.binary(max_size=40).map(lambda data: b"\x00\x16" + data))),
    st.tuples(st.just("peer"), st.integers(0, 2), payloads),
    st.tuples(st.just("permit"), st.booleans()),
    # Low buckets to drop or refill at; full ones to relay again.
    st.tuples(st.just("tokens"), st.sampled_from((0.0, 1.0, 3.0, 1e6)), st.sampled_from((0.0, 100.0, 2000.0, 1e9))),
)


def _step(twin: Twin, step: tuple) -> None:
    twin.stop_clock()  # a step charges once at most
    kind = step[0]
    if kind == "channel":
        number, data, skew = step[1:]
        frame = pack_channel_data(number, data)
        declared = max(0, min(0xFFFF, len(data) + skew))  # over the data it is malformed; under it, shorter
        twin.from_client(frame[:2] + declared.to_bytes(2, "big") + frame[4:])
    elif kind == "send":
        twin.send_indication(step[1], step[2])
    elif kind == "garbage":
        twin.from_client(step[1])
    elif kind == "peer":
        twin.from_peer(step[1], step[2])
    elif kind == "permit":
        twin.permit(step[1])
    else:
        twin.tokens(*step[1:])


def _run(main) -> Any:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


async def _twins(listen: str, budget: int) -> tuple[Twin, Twin]:
    twins = Twin(listen, budget, True), Twin(listen, budget, False)
    for twin in twins:
        await twin.open()
    return twins


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(listen=st.sampled_from(("127.0.0.1", "0.0.0.0")), budget=st.sampled_from((1, 64)),
       run=st.lists(steps, min_size=10, max_size=60))
def test_both_paths_relay_the_same_datagrams_and_leave_the_same_state(listen: str, budget: int, run: list) -> None:
    # Budget 1: only the client's socket is connected (the channels send on the relay socket); a wildcard
    # listener: only the channels' are (the client is answered from the listener).
    async def main() -> None:
        twins = await _twins(listen, budget)
        try:
            for step in run:
                seen = []
                for twin in twins:
                    _step(twin, step)
                    await twin.settle()
                    seen.append((twin.received(), twin.state()))
                assert seen[0] == seen[1], step
        finally:
            for twin in twins:
                await twin.close()

    _run(main)


class _Refusing:
    """A sink whose sends fail, as a socket's do when the kernel refuses them."""

    def sendto(self, data: bytes, addr: Any = None) -> None:
        raise OSError("refused")


def test_send_errors_are_counted_on_both_paths() -> None:
    async def main() -> list[tuple]:
        twins = await _twins("127.0.0.1", 64)
        try:
            for twin in twins:
                allocation: Allocation = twin.allocation
                allocation.client_sink = _Refusing()  # a sink the compiled path calls sendto on
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                closed = allocation.channels[CHANNELS[1]].sink = turn_io._ConnectedSink(sock)
                sock.close()
                closed.fd = -1  # as the shell leaves a sink whose socket it closed
                twin.from_peer(0, b"to the client")
                twin.from_client(pack_channel_data(CHANNELS[1], b"to a closed socket"))
                twin.from_client(pack_channel_data(CHANNELS[0], b"through"))
                await twin.settle()
            return [(twin.received(), twin.state()) for twin in twins]
        finally:
            for twin in twins:
                await twin.close()

    compiled, python = _run(main)
    assert compiled == python
    assert compiled[1][-1] == 2 and compiled[0] == [(1, b"through")]


def test_channel_data_in_order_takes_the_compiled_path(monkeypatch) -> None:
    fallen_back: list[bytes] = []
    for name in ("_peer_datagram", "_client_datagram"):
        python = getattr(turn_io.TurnIO, name)

        def counted(io, data, arg, python=python):
            fallen_back.append(data)
            python(io, data, arg)

        monkeypatch.setattr(turn_io.TurnIO, name, counted)

    async def main() -> tuple[list, tuple]:
        twin = Twin("127.0.0.1", 64, True)
        await twin.open()
        fallen_back.clear()  # the requests after the Allocate came through the client's socket: STUN is Python's
        try:
            for i in range(50):
                twin.from_client(pack_channel_data(CHANNELS[i % 2], b"up %d" % i))
                twin.from_peer(i % 2, b"down %d" % i)
                await twin.settle()
            return twin.received(), twin.state()
        finally:
            await twin.close()

    received, state = _run(main)
    assert fallen_back == []
    ups = sorted(item for item in received if item[0] != 0)
    assert ups == sorted((1 + i % 2, b"up %d" % i) for i in range(50))
    assert [item for item in received if item[0] == 0] == [
        (0, pack_channel_data(CHANNELS[i % 2], b"down %d" % i)) for i in range(50)]
    assert state[2:6] == (sum(len(b"up %d" % i) for i in range(50)), 50, sum(len(b"down %d" % i) for i in range(50)), 50)
