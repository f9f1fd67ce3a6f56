"""In-memory peers for the media port: a remote side built from the same sans-I/O pieces
(its checks with our STUN codec, its DTLS with `DtlsConnection`) and recording sinks."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from aiortc.rtcdtlstransport import RTCCertificate

from appliance.rtc.dtls import DtlsConnection, DtlsContext
from appliance.rtc.port import Listener, MediaPort
from appliance.stun import Attr, Class, Message, Method, short_term_key

# Certificates take milliseconds to make: one per role for the whole test run.
PORT_CONTEXT = DtlsContext(RTCCertificate.generateCertificate())
PEER_CONTEXT = DtlsContext(RTCCertificate.generateCertificate())

UFRAG, PWD = "sfuU", "sfu-password-of-22-chars"
PEER_UFRAG = "brws"
ADDR = ("192.0.2.10", 50000)
ADDR2 = ("2001:db8::10", 50002)


def exchange(a: DtlsConnection, b: DtlsConnection, drop: int = 0) -> None:
    """Carry datagrams both ways until neither has any; the first `drop` are lost."""
    while True:
        moved = False
        for source, target in ((a, b), (b, a)):
            for datagram in source.datagrams_to_send():
                moved = True
                if drop:
                    drop -= 1
                else:
                    target.receive(datagram)
        if not moved:
            return


def rtp(sequence: int, ssrc: int = 0x11223344, payload_type: int = 111, payload: bytes = b"\x01" * 160) -> bytes:
    return struct.pack("!BBHII", 0x80, payload_type, sequence, sequence * 960, ssrc) + payload


def receiver_report(ssrc: int = 0x11223344) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


@dataclass(eq=False)
class Sink:
    """A local transport's socket: remembers what the port sent, and where."""

    sent: list[tuple[bytes, Any]] = field(default_factory=list)

    def sendto(self, data: bytes, addr: Any) -> None:
        self.sent.append((data, addr))

    def take(self) -> list[tuple[bytes, Any]]:
        sent, self.sent = self.sent, []
        return sent


@dataclass(eq=False)
class Handler:
    """A session handler that records everything; `echo` sends each RTP packet back."""

    port: MediaPort | None = None
    session: Any = None
    echo: bool = False
    rtp_packets: list[bytes] = field(default_factory=list)
    rtcp_packets: list[bytes] = field(default_factory=list)
    received_data: list[bytes] = field(default_factory=list)
    events: list[Any] = field(default_factory=list)

    def rtp(self, packet: bytes, now: float) -> None:
        self.rtp_packets.append(packet)
        if self.echo:
            self.port.send_rtp(self.session, packet)

    def rtcp(self, packet: bytes, now: float) -> None:
        self.rtcp_packets.append(packet)

    def data(self, data: bytes) -> None:
        self.received_data.append(data)

    def event(self, event: Any, now: float) -> None:
        self.events.append(event)


class Peer:
    """The remote side of one session: checks it, runs DTLS through it, protects SRTP for it."""

    def __init__(self, port: MediaPort, listener: Listener, addr: Any = ADDR, server: bool = False) -> None:
        self.port = port
        self.listener = listener
        self.addr = addr
        self.dtls = DtlsConnection(PEER_CONTEXT, server, [PORT_CONTEXT.fingerprint])

    def check(self, now: float = 0.0, use_candidate: bool = True, password: str = PWD) -> None:
        attributes = [(Attr.USERNAME, f"{UFRAG}:{PEER_UFRAG}"), (Attr.ICE_CONTROLLING, 7), (Attr.PRIORITY, 1)]
        if use_candidate:
            attributes.append((Attr.USE_CANDIDATE, True))
        request = Message(Method.BINDING, Class.REQUEST, attributes=attributes)
        self.send(request.encode(short_term_key(password), fingerprint=True), now)

    def send(self, data: bytes, now: float = 0.0) -> None:
        self.port.datagram_received(self.listener, data, self.addr, now)

    def deliver(self, now: float = 0.0) -> int:
        """Carry DTLS both ways between the port's sink and this peer until quiet; the
        number of datagrams the port sent to this peer's address."""
        count = 0
        while True:
            moved = False
            for datagram in self.dtls.datagrams_to_send():
                moved = True
                self.send(datagram, now)
            for data, addr in self.listener.sink.take():
                if addr == self.addr and 19 < data[0] < 64:
                    moved = True
                    count += 1
                    self.dtls.receive(data)
            if not moved:
                return count
