"""The compiled receive path (appliance/rtc/_recvbatch.c, `receive`) against what it stands for:
socket.recvfrom for its reads, pylibsrtp for its unprotect, and the media port's own per-datagram path
(`datagram_received`) for the port's batch API (`read_datagrams`). Real sockets on loopback.

Where a C compiler is on the machine `./build.sh setup` builds the extension, so it missing is a
failure here; the tests that need it are skipped only where no compiler could have built it.
"""
from __future__ import annotations

import shutil
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import pylibsrtp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.rtc import recvbatch, sendbatch
from appliance.rtc.dtls import SrtpKeys
from appliance.rtc.port import Listener, MediaPort
from appliance.plumbing.udp import READ_BATCH
from tests.lab.appliance import has_ipv6_loopback
from tests.unit.rtc.harness import PEER_CONTEXT, PEER_UFRAG, PORT_CONTEXT, PWD, UFRAG, Handler, Sink

needs_extension = pytest.mark.skipif(recvbatch.EXTENSION is None and shutil.which("cc") is None,
                                     reason="no C compiler: the extension cannot have been built")

LOOPBACKS = [(socket.AF_INET, "127.0.0.1"), pytest.param(
    socket.AF_INET6, "::1", marks=pytest.mark.skipif(not has_ipv6_loopback(), reason="no ::1"))]
KEY = bytes(range(30))  # AES_CM_128_HMAC_SHA1_80: 16 bytes of key, 14 of salt (AEAD_AES_128_GCM: the first 28)
CM, GCM = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM
PROFILE_NAMES = {CM: "SRTP_AES128_CM_SHA1_80", GCM: "SRTP_AEAD_AES_128_GCM"}
SSRC = 0x5EED5EED


def extension() -> recvbatch.RecvBatch:
    assert recvbatch.EXTENSION is not None, "a C compiler is here, so ./build.sh setup builds the extension"
    return recvbatch.EXTENSION


def srtp_session(profile: int, ssrc_type: int) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=KEY if profile == CM else KEY[:28], ssrc_type=ssrc_type, srtp_profile=profile)
    policy.allow_repeat_tx = True  # a sender may send a sequence number again: the receivers' replay checks meet it
    return pylibsrtp.Session(policy)


def rtp(seq: int, size: int = 172, ssrc: int = SSRC) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, seq * 3000 & 0xFFFFFFFF, ssrc) + bytes(size - 12)


def rtcp(ssrc: int = SSRC) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)  # an empty receiver report


@contextmanager
def sockets(family: int, host: str, count: int) -> Iterator[list[socket.socket]]:
    """`count` non-blocking sockets bound on `host`, with room for every datagram a test sends."""
    made = [socket.socket(family, socket.SOCK_DGRAM) for _ in range(count)]
    try:
        for sock in made:
            sock.bind((host, 0))
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
        yield made
    finally:
        for sock in made:
            sock.close()


class Counters:
    def __init__(self) -> None:
        self.unmatched = self.srtp_errors = 0


def receive(sock: socket.socket, limit: int = READ_BATCH, sessions: dict | None = None,
            counters: Counters | None = None) -> list[tuple[bytes, tuple]]:
    """What one `receive` call hands its fallback (every datagram, with no session in `sessions`)."""
    ext, got = extension(), []
    ext.receive(sock.fileno(), limit, sessions or {}, ext.rtp, ext.rtcp,
                lambda listener, data, addr, now: got.append((data, addr)), None, counters or Counters(), 0.0)
    return got


def recvfrom_loop(sock: socket.socket, limit: int = READ_BATCH) -> list[tuple[bytes, tuple]]:
    """The Python path the extension stands for (MediaIO._on_readable without it)."""
    got = []
    for _ in range(limit):
        try:
            got.append(sock.recvfrom(65536))
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            continue
    return got


# --- reading ---------------------------------------------------------------------------------------------


@needs_extension
@pytest.mark.parametrize("family, host", LOOPBACKS)
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.binary(max_size=1500)), max_size=80), st.integers(1, READ_BATCH))
def test_receive_reads_what_recvfrom_reads(family, host, sent, limit):
    """The same datagrams from two sources into two sockets, one read by `receive` and one with the
    recvfrom loop: the same datagrams, the same addresses, the same count per batch, in order."""
    with sockets(family, host, 4) as (first, second, by_c, by_python):
        for source, data in sent:
            for target in (by_c, by_python):
                (first, second)[source].sendto(data, target.getsockname())
        batches_c, batches_python = [], []
        while True:
            batch_c, batch_python = receive(by_c, limit), recvfrom_loop(by_python, limit)
            batches_c.append(batch_c)
            batches_python.append(batch_python)
            if not batch_c and not batch_python:
                break
        assert batches_c == batches_python
        assert [data for batch in batches_c for data, _ in batch] == [data for _, data in sent]


@needs_extension
def test_a_datagram_of_any_size_is_read_whole():
    with sockets(socket.AF_INET, "127.0.0.1", 2) as (tx, rx):
        sizes = (0, 1, 1500, 9000, 65507)
        for size in sizes:
            tx.sendto(bytes([size & 0xFF]) * size, rx.getsockname())
        got = receive(rx)
        assert [len(data) for data, _ in got] == list(sizes)
        assert all(addr == tx.getsockname() for _, addr in got)


@needs_extension
def test_a_batch_stops_at_its_limit_and_the_rest_waits():
    with sockets(socket.AF_INET, "127.0.0.1", 2) as (tx, rx):
        for seq in range(5):
            tx.sendto(bytes([seq]), rx.getsockname())
        assert [data for data, _ in receive(rx, 3)] == [b"\x00", b"\x01", b"\x02"]
        assert receive(rx, 0) == []
        assert [data for data, _ in receive(rx, 3)] == [b"\x03", b"\x04"]
        assert receive(rx, 3) == []
        with pytest.raises(ValueError):
            receive(rx, READ_BATCH + 1)


@contextmanager
def refused() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected UDP socket whose last send met a closed port (the ICMP error waits on it for its
    next read), and a socket now on that port, which may send to it."""
    with sockets(socket.AF_INET, "127.0.0.1", 1) as (local,):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as gone:
            gone.bind(("127.0.0.1", 0))
            address = gone.getsockname()
        local.connect(address)
        local.send(b"to nobody")  # the ICMP error lands on `local` within this call
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as back:
            back.bind(address)
            yield local, back


def test_the_icmp_error_is_there_to_skip():
    with refused() as (local, back):
        with pytest.raises(ConnectionRefusedError):
            local.recvfrom(2048)


@needs_extension
def test_an_icmp_error_queued_on_the_socket_is_skipped_and_what_follows_is_read():
    """Both paths skip the error and read the datagrams behind it."""
    for read in (receive, recvfrom_loop):
        with refused() as (local, back):
            back.sendto(b"after the error", local.getsockname())
            assert read(local) == [(b"after the error", back.getsockname())]


# --- unprotect -----------------------------------------------------------------------------------------


class Recorder:
    """A session as `receive` reads one: its srtp_t's address and a handler that records."""

    def __init__(self, srtp: pylibsrtp.Session) -> None:
        self.srtp = srtp  # kept alive while its address is used
        self.rx_context = sendbatch.srtp_address(srtp)
        self.handler = self
        self.packets: list[tuple[str, bytes]] = []

    def rtp(self, packet: bytes, now: float) -> None:
        self.packets.append(("rtp", packet))

    def rtcp(self, packet: bytes, now: float) -> None:
        self.packets.append(("rtcp", packet))


def unprotect_both(profile: int, inputs: list[bytes]) -> tuple[tuple, tuple]:
    """What pylibsrtp and `receive` make of the same datagrams from a session's address, each on its
    own receiving session under the same key (the replay window moves alike): the packets handed to
    the handler, the refusals counted, and what is not SRTP (left to the port's Python)."""
    by_python = srtp_session(profile, pylibsrtp.Policy.SSRC_ANY_INBOUND)
    python: list[tuple[str, bytes]] = []
    refused, others = 0, []
    for data in inputs:
        if len(data) < 12 or not 127 < data[0] < 192:
            others.append(data)
            continue
        is_rtcp = 191 < data[1] < 224
        try:
            python.append(("rtcp", by_python.unprotect_rtcp(data)) if is_rtcp else ("rtp", by_python.unprotect(data)))
        except (pylibsrtp.Error, ValueError):
            refused += 1
    with sockets(socket.AF_INET, "127.0.0.1", 2) as (tx, rx):
        for data in inputs:
            tx.sendto(data, rx.getsockname())
        session, counters = Recorder(srtp_session(profile, pylibsrtp.Policy.SSRC_ANY_INBOUND)), Counters()
        got: list[tuple[bytes, tuple]] = []
        for _ in range(len(inputs) + 1):  # a call reads one datagram at least while any waits
            got += receive(rx, READ_BATCH, {tx.getsockname(): session}, counters)
        assert counters.unmatched == 0
        return (python, refused, others), (session.packets, counters.srtp_errors, [data for data, _ in got])


@needs_extension
@settings(max_examples=300, deadline=None)
@given(st.sampled_from([CM, GCM]), st.lists(st.tuples(
    st.sampled_from(["rtp", "rtcp", "replay", "swap", "tamper", "raw"]), st.integers(0, 0xFFFF), st.integers(12, 1600),
    st.binary(min_size=1, max_size=1600)), max_size=12))
def test_unprotect_gives_what_pylibsrtp_gives(profile, steps):
    """Protected RTP and RTCP, replays, a flipped bit, any bytes, over-long packets: the extension hands
    over what pylibsrtp's unprotect gives, counts a refusal exactly where pylibsrtp raises, and leaves
    what is not SRTP to the port's Python."""
    sender = srtp_session(profile, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    inputs: list[bytes] = []
    next_seq = 0
    for kind, step, size, data in steps:
        if kind == "rtp":  # forward in steps of 1 to 4 (a sender refuses to go back); "swap" reorders
            next_seq += 1 + step % 4
            inputs.append(sender.protect(rtp(next_seq, min(size, 1356))))
        elif kind == "rtcp":
            inputs.append(sender.protect_rtcp(rtcp()))
        elif kind == "replay" and inputs:
            inputs.append(inputs[-1])
        elif kind == "swap" and len(inputs) > 1:
            inputs[-2:] = inputs[:-3:-1]
        elif kind == "tamper" and inputs:
            last = inputs[-1]
            at = step % len(last)
            inputs.append(last[:at] + bytes([last[at] ^ 0x40]) + last[at + 1:])
        else:  # any bytes, RTP- or RTCP-looking (RFC 5761), or neither
            inputs.append(bytes([(0x80 | data[0] & 0x3F) if step % 5 else data[0]]) + data[1:])
    python, c = unprotect_both(profile, inputs)
    assert c == python


@needs_extension
def test_unprotect_reads_a_valid_packet_and_refuses_its_replay_and_an_overlong_one():
    # A check that the property above is not vacuous: real packets do come out.
    sender = srtp_session(GCM, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    packet = sender.protect(rtp(7))
    python, c = unprotect_both(GCM, [packet, packet, packet + bytes(1500)])
    assert c == python == ([("rtp", rtp(7))], 2, [])


# --- the port's batch API --------------------------------------------------------------------------------


def resumed_port(profile: int, compiled: bool, addr: tuple) -> tuple[MediaPort, Handler, Listener]:
    """A port carrying on a session on `addr` under fixed keys (no handshake), so that two ports read the
    same datagrams alike: one with the compiled receive path, one without."""
    port = MediaPort(PORT_CONTEXT)
    if not compiled:
        port.recvbatch = None
    handler = Handler(port)
    handler.session = port.add_session(handler, UFRAG, PWD, remote_ufrag=PEER_UFRAG,
                                       remote_fingerprints=[PEER_CONTEXT.fingerprint], server=True)
    listener = Listener(Sink())
    port.add_udp(listener, ("192.0.2.1", 3478))
    key = KEY if profile == CM else KEY[:28]
    port.resume(handler.session, listener, addr, SrtpKeys(PROFILE_NAMES[profile], rx=key, tx=key[::-1]), {}, {}, {},
                now=1.0)
    return port, handler, listener


def read_both(profile: int, datagrams: list[tuple[bytes, int]]) -> list[tuple]:
    """The same datagrams (data, from the session's address 0 or a stranger's 1) through a port's
    `read_datagrams` off a real socket and through another port's `datagram_received`: what each
    port's handler heard and what each port counted and sent."""
    outcomes = []
    with sockets(socket.AF_INET, "127.0.0.1", 3) as (path, stranger, rx):
        sources = (path, stranger)
        for compiled in (True, False):
            port, handler, listener = resumed_port(profile, compiled, path.getsockname())
            assert (handler.session.rx_context is not None) == compiled
            if compiled:
                for data, source in datagrams:
                    sources[source].sendto(data, rx.getsockname())
                for _ in range(len(datagrams) + 1):  # a call reads one datagram at least while any waits
                    port.read_datagrams(listener, rx.fileno(), READ_BATCH, 2.0)
            else:
                for data, source in datagrams:
                    port.datagram_received(listener, data, sources[source].getsockname(), 2.0)
            # Events hold each port's own objects: compared by kind and address.
            events = [(type(event).__name__, getattr(event, "addr", None)) for event in handler.events]
            outcomes.append((handler.rtp_packets, handler.rtcp_packets, events, port.counters, listener.sink.sent))
    return outcomes


@needs_extension
@settings(max_examples=150, deadline=None)
@given(st.sampled_from([CM, GCM]), st.lists(st.tuples(
    st.sampled_from(["rtp", "rtcp", "replay", "swap", "tamper", "raw", "stranger"]), st.integers(0, 0xFFFF),
    st.integers(12, 1400), st.binary(min_size=1, max_size=200)), max_size=20))
def test_the_batch_api_does_what_datagram_received_does(profile, steps):
    """The same datagrams, SRTP and not, from the session's path and from elsewhere: the handler hears
    the same packets and events, the port counts the same and sends the same."""
    sender = srtp_session(profile, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    datagrams: list[tuple[bytes, int]] = []
    next_seq = 0
    for kind, step, size, data in steps:
        if kind in ("rtp", "stranger"):
            next_seq += 1 + step % 4
        if kind == "rtp":
            datagrams.append((sender.protect(rtp(next_seq, min(size, 1356))), 0))
        elif kind == "rtcp":
            datagrams.append((sender.protect_rtcp(rtcp()), 0))
        elif kind == "replay" and datagrams:
            datagrams.append(datagrams[-1])
        elif kind == "swap" and len(datagrams) > 1:
            datagrams[-2:] = datagrams[:-3:-1]
        elif kind == "tamper" and datagrams:
            last = datagrams[-1][0]
            at = step % len(last)
            datagrams.append((last[:at] + bytes([last[at] ^ 0x01]) + last[at + 1:], 0))
        elif kind == "stranger":
            datagrams.append((sender.protect(rtp(next_seq, min(size, 1356))), 1))
        else:
            datagrams.append((data, 0))
    compiled, python = read_both(profile, datagrams)
    assert compiled == python


@needs_extension
def test_the_batch_api_hands_over_packets_and_counts_refusals():
    # The property above compares the two paths; this pins what they both do.
    sender = srtp_session(GCM, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    first, report = sender.protect(rtp(1)), sender.protect_rtcp(rtcp())
    compiled, python = read_both(GCM, [(first, 0), (report, 0), (first, 0), (b"\x80" * 11, 0)])
    rtp_packets, rtcp_packets, _, counters, _ = compiled
    assert compiled == python
    assert rtp_packets == [rtp(1)] and rtcp_packets == [rtcp()]
    assert (counters.srtp_errors, counters.malformed) == (1, 1)
