"""The compiled fan-out (appliance/sfu/_fanout.c) against the Python one (`forward_in_python`): for
random legs, packets, extension sets and transport-wide numbering, the same packets queued on the
media port (before protection, and the same after it: libsrtp protects what it is given) and the same
state left in the legs, the sessions' transport-wide records and the port.

Where a C compiler is on the machine `./build.sh setup` builds the extension, so it missing is a
failure here; the tests are skipped only where no compiler could have built it.
"""
from __future__ import annotations

import itertools
import random
import shutil
import socket
from dataclasses import dataclass
from typing import Any

import pylibsrtp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.rtc import sendbatch
from appliance.rtc.port import Listener, MediaPort, Session
from appliance.sfu import extensions, fanout
from appliance.sfu.forward import Leg, payload_offset
from appliance.sfu.transport import TransportSender
from tests.unit.rtc.harness import PORT_CONTEXT

pytestmark = pytest.mark.skipif(fanout.FANOUT is None and shutil.which("cc") is None,
                                reason="no C compiler: the extension cannot have been built")

KEY = bytes(range(30))
PT, OTHER_PT = 111, 100  # what the publisher sends; a leg maps one or both
UFRAGS = itertools.count()  # each session's own, as the port requires
LEG_STATE = ("last_seq", "last_ts", "sent_packet", "packets", "octets", "base_seq", "seq_delta", "ts_delta",
             "rebase", "pictures", "moved_from", "pid_delta", "tl0_delta", "rtx_seq", "pad_credit")


def compiled() -> fanout.Fanout:
    assert fanout.FANOUT is not None, "a C compiler is here, so ./build.sh setup builds the extension"
    return fanout.FANOUT


class Sink:
    """A UDP socket as the port sees it: batched packets wait in `pending`, the others (a session
    without a compiled-path target) are protected and sent at once, here recorded."""

    family = socket.AF_INET

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append(data)


@dataclass
class Subscriber:
    port_session: Session | None
    transport_out: TransportSender | None

    def bandwidth(self) -> float | None:
        return None

    def send_rtcp(self, packet: bytes) -> bool:
        return False


@dataclass(frozen=True)
class LegSpec:
    subscriber: int
    pts: dict[int, int]
    ssrc: int
    last_seq: int
    last_ts: int
    seq_delta: int
    ts_delta: int
    base_seq: int
    rebase: bool
    padding: float
    ext_map: dict[int, int]
    rtx: bool
    subclass: bool = False  # a subclass of Leg: the compiled fan-out knows only Leg's own slots


@dataclass(frozen=True)
class SubscriberSpec:
    connected: bool  # a selected path and SRTP: else the port refuses its packets
    batched: bool  # a compiled-path target
    transport: int | None  # its transport-wide sequence number, None without transport-cc
    ext_id: int


@dataclass(frozen=True)
class PacketSpec:
    seq: int
    ts: int
    pt: int
    marker: bool
    elements: dict[int, bytes] | None
    payload: bytes


class World:
    """A port, its sessions and a stream's legs, built the same way twice from the specs."""

    def __init__(self, subscribers: list[SubscriberSpec], legs: list[LegSpec], sink: Any = None,
                 address: tuple[str, int] = ("127.0.0.1", 9)) -> None:
        self.port = MediaPort(PORT_CONTEXT)
        self.listener = Listener(sink or Sink())
        self.listener.batched = True
        self.address = address
        self.subscribers = [self._subscriber(spec) for spec in subscribers]
        self.legs = [self._leg(spec) for spec in legs]

    def _subscriber(self, spec: SubscriberSpec) -> Subscriber:
        session = self.port.add_session(_Handler(), f"ufrag{next(UFRAGS)}", "password-of-22-chars!!")
        if spec.connected:
            srtp = pylibsrtp.Session(pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
            session.srtp_tx, session.listener, session.addr = srtp, self.listener, self.address
            session.tx_target = sendbatch.target(srtp, socket.AF_INET, self.address) if spec.batched else None
        transport = None
        if spec.transport is not None:
            transport = TransportSender(spec.ext_id)
            transport.seq = spec.transport
        return Subscriber(session, transport)

    def _leg(self, spec: LegSpec) -> Leg:
        leg = (OtherLeg if spec.subclass else Leg)(self.port.send_rtp, spec.ssrc, dict(spec.pts), "0", self.subscribers[spec.subscriber])
        leg.last_seq, leg.last_ts = spec.last_seq, spec.last_ts
        leg.seq_delta, leg.ts_delta, leg.base_seq, leg.rebase = spec.seq_delta, spec.ts_delta, spec.base_seq, spec.rebase
        leg.rtx_seq = 1000
        leg.padding = spec.padding
        if spec.rtx:
            leg.rtx_ssrc, leg.rtx_pts = spec.ssrc ^ 1, {pt: 97 for pt in spec.pts.values()}
        leg.set_extensions(dict(spec.ext_map))
        return leg

    def state(self) -> dict[str, Any]:
        """Everything the fan-out may have changed, with legs named by their index."""
        index = {id(leg): i for i, leg in enumerate(self.legs)}
        sessions = {id(s.port_session.srtp_tx): i for i, s in enumerate(self.subscribers) if s.port_session is not None}
        transports = []
        for subscriber in self.subscribers:
            transport = subscriber.transport_out
            if transport is None:
                continue
            estimator = transport.estimator
            transports.append((transport.seq, [None if leg is None else index[id(leg)] for leg in transport._legs],
                               transport._out_seqs.tobytes(), bytes(transport._resends), estimator._seq.tobytes(),
                               estimator._sent_at.tobytes(), estimator._size.tobytes(), bytes(estimator._state)))
        return {
            "queued": [(sessions[id(target[2])], target[1], packet) for target, packet in self.listener.pending],
            "sent": list(getattr(self.listener.sink, "sent", [])),
            "listeners": len(self.port._queued),
            "legs": [{name: getattr(leg, name) for name in LEG_STATE} for leg in self.legs],
            "transports": transports,
        }


class OtherLeg(Leg):
    __slots__ = ()


class _Handler:
    def rtp(self, packet: bytes, now: float) -> None: ...

    def rtcp(self, packet: bytes, now: float) -> None: ...

    def data(self, data: bytes) -> None: ...

    def event(self, event: Any, now: float) -> None: ...


def rtp_packet(spec: PacketSpec) -> bytes:
    header = bytes((0x80, (0x80 if spec.marker else 0) | spec.pt)) + spec.seq.to_bytes(2, "big")
    header += spec.ts.to_bytes(4, "big") + (0x11223344).to_bytes(4, "big")
    if spec.elements is None:
        return header + spec.payload
    body = b"".join(bytes((ext_id << 4 | len(data) - 1,)) + data for ext_id, data in spec.elements.items())
    body += bytes(-len(body) % 4)
    block = extensions.ONE_BYTE_PROFILE + (len(body) // 4).to_bytes(2, "big") + body
    return bytes((header[0] | 0x10,)) + header[1:] + block + spec.payload


def run(world: World, send: fanout.Fanout, packets: list[PacketSpec]) -> dict[str, Any]:
    for i, spec in enumerate(packets):
        packet = rtp_packet(spec)
        found = extensions.elements(packet) if spec.elements is not None else None
        send(world.legs, packet, packet[payload_offset(packet):], spec.seq, spec.ts, found, 10.0 + i / 100)
    return world.state()


near_wrap = st.one_of(st.integers(0, 0xFFFF), st.integers(0xFFF0, 0xFFFF), st.integers(0, 16))
ext_ids = st.integers(1, 14)
mostly = st.sampled_from([True, True, True, False])
subscriber_specs = st.builds(SubscriberSpec, connected=mostly, batched=mostly, transport=st.none() | near_wrap,
                             ext_id=ext_ids)


# Distances around the boundaries the forwarding path tests (0x4000: a window's start moves; 0x8000: a
# packet from before the leg's source, or older than the latest sent).
distances = st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0, 1, 0x3FFF, 0x4000, 0x4001, 0x7FFF, 0x8000, 0x8001,
                                                               0xFFFF]))


@st.composite
def leg_specs(draw: st.DrawFn, subscribers: int, seq: int) -> LegSpec:
    """A leg, its windows placed near the boundaries for a stream now at `seq`."""
    seq_delta = draw(near_wrap)
    return LegSpec(
        subscriber=draw(st.integers(0, subscribers - 1)),
        pts=draw(st.sampled_from([{PT: 96}, {PT: 96, OTHER_PT: 98}, {OTHER_PT: 98}, {PT: 127}])),
        ssrc=draw(st.integers(0, 0xFFFFFFFF)),
        last_seq=(seq + seq_delta - draw(distances)) & 0xFFFF,
        last_ts=draw(st.integers(0, 0xFFFFFFFF)),
        seq_delta=seq_delta,
        ts_delta=draw(st.integers(0, 0xFFFFFFFF)),
        base_seq=(seq - draw(distances)) & 0xFFFF,
        rebase=draw(st.sampled_from([False, False, False, True])),
        padding=draw(st.sampled_from([0.0, 0.0, 0.0, 0.5, 2.0])),
        ext_map=draw(st.dictionaries(ext_ids, ext_ids, max_size=3)),
        rtx=draw(st.booleans()),
        subclass=draw(st.sampled_from([False, False, False, True])),
    )


packet_specs = st.builds(
    PacketSpec, seq=near_wrap, ts=st.integers(0, 0xFFFFFFFF), pt=st.sampled_from([PT, PT, OTHER_PT, 5]),
    marker=st.booleans(), elements=st.none() | st.dictionaries(ext_ids, st.binary(min_size=1, max_size=16), max_size=4),
    payload=st.binary(max_size=64))


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[SubscriberSpec], list[LegSpec], list[PacketSpec]]:
    subscribers = draw(st.lists(subscriber_specs, min_size=1, max_size=4))
    first = draw(packet_specs)
    legs = draw(st.lists(leg_specs(len(subscribers), first.seq), min_size=1, max_size=6))
    # Then mostly the stream's next packets, so that the legs' windows and the numbering wrap as they go.
    steps = draw(st.lists(st.integers(-3, 40), max_size=8))
    packets = [first]
    for step in steps:
        previous = packets[-1]
        packets.append(draw(packet_specs.map(lambda p, seq=(previous.seq + step) & 0xFFFF: PacketSpec(
            seq, p.ts, p.pt, p.marker, p.elements, p.payload))))
    return subscribers, legs, packets


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_the_compiled_fan_out_sends_and_records_what_the_python_one_does(scenario) -> None:
    subscribers, legs, packets = scenario
    random.seed(0)  # padding and moves draw nothing random, but keep both runs alike if they ever do
    python = run(World(subscribers, legs), fanout.forward_in_python, packets)
    c = run(World(subscribers, legs), compiled(), packets)
    assert c == python


def test_common_case_legs_do_not_go_through_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Else the property above would compare the Python path with itself."""
    calls: list[Leg] = []
    forward = Leg.forward

    def counted(leg: Leg, *args: Any) -> None:
        calls.append(leg)
        forward(leg, *args)

    monkeypatch.setattr(Leg, "forward", counted)
    subscriber = SubscriberSpec(connected=True, batched=True, transport=0xFFFF, ext_id=5)
    common = LegSpec(0, {PT: 96}, 7, 10, 20, 5, 6, 0, False, 0.0, {1: 2}, False)
    rebasing = LegSpec(0, {PT: 96}, 8, 10, 20, 5, 6, 0, True, 0.0, {}, False)
    world = World([subscriber], [common, rebasing])
    packet = PacketSpec(100, 1000, PT, True, {1: b"\x7f", 3: b"ab"}, b"payload")
    state = run(world, compiled(), [packet])
    assert calls == [world.legs[1]]
    (target, data), second = world.listener.pending
    assert data[:12] == bytes((0x90, 0x80 | 96)) + (105).to_bytes(2, "big") + (1006).to_bytes(4, "big") + (7).to_bytes(4, "big")
    # Audio level under the subscriber's id 2, then transport-wide number 0 (wrapped) under id 5, padded.
    assert data[12:24] == b"\xbe\xde\x00\x02" + b"\x20\x7f" + b"\x51\x00\x00" + b"\x00\x00\x00"
    assert data[24:] == b"payload"
    assert state["transports"][0][0] == 1  # the rebasing leg's packet took the next number
    assert world.legs[0].packets == 1 and world.legs[0].sent_packet == rtp_packet(packet)


def test_what_the_port_sends_decrypts_to_the_python_paths_packets() -> None:
    """Through the compiled send path (protect, sendmmsg) to a socket on loopback: the subscriber
    decrypts the packets the Python fan-out would have queued, each subscriber's in the same order
    (the send path groups a batch by target: here both subscribers' targets name one socket)."""
    subscribers = [SubscriberSpec(True, True, 0xFFFE, 4), SubscriberSpec(True, True, None, 4)]
    legs = [LegSpec(0, {PT: 96}, 7, 10, 20, 5, 6, 0, False, 0.0, {1: 3}, False),
            LegSpec(1, {PT: 96}, 9, 0xFFFF, 20, 0, 6, 0, False, 0.0, {}, False),
            LegSpec(0, {PT: 96}, 11, 10, 20, 5, 6, 0, True, 0.0, {}, False)]
    packets = [PacketSpec(100 + i, 1000 + 960 * i, PT, i == 2, {1: bytes((i,))}, bytes(100 + i)) for i in range(4)]
    python = World(subscribers, legs)
    run(python, fanout.forward_in_python, packets)
    by_target: dict[int, list[bytes]] = {}
    for target, packet in python.listener.pending:
        by_target.setdefault(id(target), []).append(packet)
    expected = [packet for queued in by_target.values() for packet in queued]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        sender.bind(("127.0.0.1", 0))
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(5)
        world = World(subscribers, legs, sender, receiver.getsockname())
        run(world, compiled(), packets)
        assert world.port._sendbatch is not None, "the compiled send path is built beside the fan-out"
        world.port.flush()
        srtp = pylibsrtp.Session(pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
        got = [srtp.unprotect(receiver.recv(2048)) for _ in expected]
    assert got == expected and len(got) == 12
