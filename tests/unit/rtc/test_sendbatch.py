"""The compiled send path (appliance/rtc/_sendbatch.c) against pylibsrtp, and the media port batching
through it, with real sockets on loopback.

Where a C compiler is on the machine `./build.sh setup` builds the extension, so it missing is a
failure here; the tests that need it are skipped only where no compiler could have built it.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import socket
import struct
import sys
import tracemalloc
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import pylibsrtp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.rtc import sendbatch
from appliance.rtc.dtls import Connected
from appliance.rtc.io import MediaIO
from appliance.rtc.port import Listener, MediaPort
from tests.lab.appliance import has_ipv6_loopback
from tests.unit.rtc.harness import (
    PEER_CONTEXT, PEER_UFRAG, PORT_CONTEXT, PWD, UFRAG, Handler, Peer, receiver_report, rtp,
)

needs_extension = pytest.mark.skipif(sendbatch.EXTENSION is None and shutil.which("cc") is None,
                                     reason="no C compiler: the extension cannot have been built")

LOOPBACKS = [(socket.AF_INET, "127.0.0.1"), pytest.param(
    socket.AF_INET6, "::1", marks=pytest.mark.skipif(not has_ipv6_loopback(), reason="no ::1"))]
KEY = bytes(range(30))  # AES_CM_128_HMAC_SHA1_80: 16 bytes of key, 14 of salt (AEAD_AES_128_GCM: the first 28)
CM, GCM = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80, pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM
SSRC = 0x5EED5EED
SO_NO_CHECK = 11  # asm-generic/socket.h; Python's socket module does not name it


def extension() -> tuple[sendbatch.ProtectAndSend, int]:
    assert sendbatch.EXTENSION is not None, "a C compiler is here, so ./build.sh setup builds the extension"
    return sendbatch.EXTENSION


def session(profile: int, ssrc_type: int) -> pylibsrtp.Session:
    return pylibsrtp.Session(pylibsrtp.Policy(key=KEY if profile == CM else KEY[:28], ssrc_type=ssrc_type,
                                              srtp_profile=profile))


def sender(profile: int = CM) -> pylibsrtp.Session:
    return session(profile, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)


def receiver(profile: int = CM) -> pylibsrtp.Session:
    return session(profile, pylibsrtp.Policy.SSRC_ANY_INBOUND)


def packet(seq: int, size: int = 172, ssrc: int = SSRC) -> bytes:
    return struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, seq * 3000 & 0xFFFFFFFF, ssrc) + bytes(size - 12)


@contextmanager
def pair(family: int, host: str) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A non-blocking sending socket and a non-blocking receiving one, bound on `host`."""
    with socket.socket(family, socket.SOCK_DGRAM) as tx, socket.socket(family, socket.SOCK_DGRAM) as rx:
        for sock in (tx, rx):
            sock.bind((host, 0))
            sock.setblocking(False)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        yield tx, rx


def arrived(rx: socket.socket) -> list[bytes]:
    """What waits on `rx` (loopback delivers within the sending call)."""
    got = []
    for _ in range(1000):
        try:
            got.append(rx.recv(2048))
        except BlockingIOError:
            break
    return got


def send(tx: socket.socket, items: list) -> tuple[int, int, int]:
    protect_and_send, protect = extension()
    return protect_and_send(tx.fileno(), protect, items)


@needs_extension
@pytest.mark.parametrize("family, host", LOOPBACKS)
def test_what_the_extension_protects_unprotects_with_the_peers_keys(family, host):
    srtp, peer = sender(), receiver()
    with pair(family, host) as (tx, rx):
        target = sendbatch.target(srtp, family, rx.getsockname())
        packets = [packet(seq, size) for seq, size in enumerate((12, 172, 1112, 1356), start=1)]
        assert send(tx, [(target, p) for p in packets]) == (4, 0, 0)
        assert [peer.unprotect(data) for data in arrived(rx)] == packets


@needs_extension
def test_the_packet_index_is_the_sessions_own_before_and_after_and_across_the_rollover():
    """pylibsrtp and the extension protect under one srtp_t: the rollover counter the extension moves
    is the one pylibsrtp then uses, and the other way round; a twin session protecting every packet
    in pylibsrtp gives the same bytes, which it would not with another index."""
    srtp, twin, peer = sender(), sender(), receiver()
    seqs = range(65530, 65542)  # wraps to 0 in the extension's part: ROC 1 from there
    by_python = {65530, 65531, 65532, 65539, 65540, 65541}
    with pair(socket.AF_INET, "127.0.0.1") as (tx, rx):
        target = sendbatch.target(srtp, socket.AF_INET, rx.getsockname())
        sent = []
        for seq in seqs:
            if seq in by_python:
                sent.append(srtp.protect(packet(seq)))
            else:
                assert send(tx, [(target, packet(seq))]) == (1, 0, 0)
                sent.append(arrived(rx)[0])
    assert sent == [twin.protect(packet(seq)) for seq in seqs]
    assert [peer.unprotect(data) for data in sent] == [packet(seq) for seq in seqs]


@needs_extension
@settings(max_examples=300, deadline=None)
@given(st.sampled_from([CM, GCM]),
       st.lists(st.tuples(st.integers(12, 1400), st.binary(min_size=1400, max_size=1400)), min_size=1, max_size=3))
def test_the_extension_protects_any_packet_as_pylibsrtp_does(profile, batch):
    """Packets of 12 to 1400 bytes, any header after the version bits: the extension sends what
    pylibsrtp's protect returns on a twin session, and refuses (counting SRTP errors) what it refuses."""
    srtp, twin = sender(profile), sender(profile)
    packets = [bytes([0x80 | data[0] & 0x3F]) + data[1:size] for size, data in batch]
    expected = []
    for p in packets:
        try:
            expected.append(twin.protect(p))
        except (pylibsrtp.Error, ValueError):
            pass
    with pair(socket.AF_INET, "127.0.0.1") as (tx, rx):
        target = sendbatch.target(srtp, socket.AF_INET, rx.getsockname())
        assert send(tx, [(target, p) for p in packets]) == (len(expected), len(packets) - len(expected), 0)
        assert arrived(rx) == expected


@contextmanager
def receivers(family: int, host: str, count: int) -> Iterator[list[socket.socket]]:
    with contextlib.ExitStack() as stack:
        out = []
        for _ in range(count):
            rx = stack.enter_context(socket.socket(family, socket.SOCK_DGRAM))
            rx.bind((host, 0))
            rx.setblocking(False)
            rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
            out.append(rx)
        yield out


def send_to_each(family: int, host: str, batch: list[tuple[int, int]], no_checksum: bool = False) -> None:
    """Send `batch` ((receiver, size) pairs) in one call: each receiver gets its own packets, whole, in
    order, each its own datagram, however the runs to one address were segmented (UDP_SEGMENT)."""
    srtp, twin = sender(), sender()
    packets = [packet(seq, size) for seq, (_, size) in enumerate(batch, start=1)]
    expected = [twin.protect(p) for p in packets]
    with socket.socket(family, socket.SOCK_DGRAM) as tx, receivers(family, host, 3) as rxs:
        tx.bind((host, 0))
        tx.setblocking(False)
        if no_checksum:  # the kernel refuses to segment for a socket that sends without UDP checksums
            tx.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
        targets = [sendbatch.target(srtp, family, rx.getsockname()) for rx in rxs]
        assert send(tx, [(targets[to], p) for (to, _), p in zip(batch, packets)]) == (len(batch), 0, 0)
        for i, rx in enumerate(rxs):
            assert arrived(rx) == [data for (to, _), data in zip(batch, expected) if to == i]


@needs_extension
@pytest.mark.parametrize("family, host", LOOPBACKS)
@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.one_of(st.sampled_from([200, 1100, 1356]), st.integers(12, 1356))),
                min_size=1, max_size=150))
def test_runs_to_one_address_arrive_as_the_datagrams_they_were(family, host, batch):
    send_to_each(family, host, batch)


@needs_extension
def test_a_run_longer_than_one_segmented_message_holds_arrives_whole():
    # 150 packets of 1356 bytes to one address: past one message's segments and bytes, and past a chunk.
    send_to_each(socket.AF_INET, "127.0.0.1", [(0, 1356)] * 150 + [(1, 100)] + [(0, 1356)] * 3 + [(0, 12)])


@needs_extension
def test_a_run_the_kernel_will_not_segment_goes_packet_by_packet():
    send_to_each(socket.AF_INET, "127.0.0.1", [(0, 1100)] * 10 + [(1, 200), (1, 200), (0, 1100), (0, 50)],
                 no_checksum=True)


@needs_extension
@pytest.mark.parametrize("family, host", LOOPBACKS)
def test_a_fan_outs_batch_reaches_each_leg_whole_and_in_order(family, host):
    # As the SFU queues: each packet to every leg in turn, each leg its own session and SRTP context;
    # the extension groups them by target, so each leg's packets leave in one segmented message.
    legs = 5
    packets = [packet(seq, 1100 if seq % 4 else 160) for seq in range(1, 41)]
    senders, twins = [sender(GCM) for _ in range(legs)], [sender(GCM) for _ in range(legs)]
    with socket.socket(family, socket.SOCK_DGRAM) as tx, receivers(family, host, legs) as rxs:
        tx.bind((host, 0))
        tx.setblocking(False)
        targets = [sendbatch.target(srtp, family, rx.getsockname()) for srtp, rx in zip(senders, rxs)]
        assert send(tx, [(target, p) for p in packets for target in targets]) == (legs * len(packets), 0, 0)
        for rx, twin in zip(rxs, twins):
            assert arrived(rx) == [twin.protect(p) for p in packets]


@needs_extension
def test_a_full_socket_drops_the_rest_of_the_chunk_and_counts_it():
    """On a full socket buffer sendmmsg says EAGAIN: the datagrams it did not take are dropped and
    counted. A local datagram socket stands in for UDP here: loopback UDP never fills, the kernel
    frees a datagram's buffer as loopback delivers it (the receiver drops instead)."""
    srtp = sender()
    name = f"\0edgecall-test-sendbatch-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx, socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as tx:
        rx.bind(name)
        rx.setblocking(False)
        tx.setblocking(False)
        target = (sendbatch.srtp_address(srtp), struct.pack("=H", socket.AF_UNIX) + name.encode(), srtp)
        sent, srtp_errors, send_errors = send(tx, [(target, packet(seq)) for seq in range(200)])
        assert srtp_errors == 0 and send_errors > 0 and sent + send_errors == 200
        assert len(arrived(rx)) == sent


@needs_extension
def test_a_datagram_the_kernel_refuses_is_counted_and_the_others_go():
    srtp, peer = sender(), receiver()
    with pair(socket.AF_INET, "127.0.0.1") as (tx, rx):
        target = sendbatch.target(srtp, socket.AF_INET, rx.getsockname())
        wrong = (target[0], sendbatch.sockaddr(socket.AF_INET6, ("::1", 9, 0, 0)), srtp)  # not an IPv4 socket's
        assert send(tx, [(target, packet(1)), (wrong, packet(2)), (target, packet(3))]) == (2, 0, 1)
        assert [peer.unprotect(data) for data in arrived(rx)] == [packet(1), packet(3)]


@needs_extension
@pytest.mark.parametrize("items", [
    [("not a tuple")],
    [((1, b"\x02\x00"), "not bytes")],
    [((0, b"\x02\x00"), b"\x80" * 12)],  # a null srtp_t
    [((1, b"\x02"), b"\x80" * 12)],  # a sockaddr too short for its family
    [((1, bytes(200)), b"\x80" * 12)],  # longer than any sockaddr
])
def test_a_malformed_batch_raises_before_anything_is_sent(items):
    srtp = sender()
    with pair(socket.AF_INET, "127.0.0.1") as (tx, rx):
        good = (sendbatch.target(srtp, socket.AF_INET, rx.getsockname()), packet(1))
        with pytest.raises((TypeError, ValueError)):
            send(tx, [good, *items])
        assert arrived(rx) == []


@needs_extension
def test_calls_leak_neither_references_nor_memory():
    srtp = sender()
    with pair(socket.AF_INET, "127.0.0.1") as (tx, rx):
        target = sendbatch.target(srtp, socket.AF_INET, rx.getsockname())
        items = [(target, packet(seq)) for seq in range(4)]
        held = [sys.getrefcount(x) for x in (target, *items, *(p for _, p in items))]
        protect_and_send, protect = extension()
        tracemalloc.start()
        try:
            protect_and_send(tx.fileno(), protect, items)  # anything made once is made before the count
            arrived(rx)
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(5000):
                protect_and_send(tx.fileno(), protect, items)
                arrived(rx)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert grown < 5000 * 16  # a result tuple kept per call would be 5000 x 64 bytes
        assert [sys.getrefcount(x) for x in (target, *items, *(p for _, p in items))] == held


# --- the media port batching through it ---------------------------------------------------------------


def port_session(port: MediaPort, listener: Listener, peer_sock: socket.socket) -> tuple[Handler, Peer]:
    """A session on `port`, connected with DTLS to an in-memory peer at `peer_sock`'s address: what the
    port sends goes out on the listener's socket to `peer_sock`."""
    handler = Handler(port)
    handler.session = port.add_session(handler, UFRAG, PWD, remote_ufrag=PEER_UFRAG,
                                       remote_fingerprints=[PEER_CONTEXT.fingerprint], server=True)
    peer = Peer(port, listener, peer_sock.getsockname())
    peer.check()
    peer.dtls.start()
    for _ in range(20):
        for datagram in peer.dtls.datagrams_to_send():
            peer.send(datagram)
        for data in arrived(peer_sock):
            if 19 < data[0] < 64:
                peer.dtls.receive(data)
        if Connected("SRTP_AEAD_AES_128_GCM") in handler.events:
            return handler, peer
    raise AssertionError("DTLS did not connect")


@contextmanager
def batching_port(family: int, host: str, flushes: list[int]):
    """A port whose shell is this test (`flush_soon` counted in `flushes`) on a UDP socket, and a peer socket."""
    port = MediaPort(PORT_CONTEXT)
    port.flush_soon = lambda: flushes.append(1)
    with pair(family, host) as (sock, peer_sock):
        listener = Listener(sock)
        port.add_udp(listener, sock.getsockname())
        yield port, listener, peer_sock


@needs_extension
@pytest.mark.parametrize("family, host", LOOPBACKS)
def test_the_port_queues_rtp_until_flush_and_counts_what_libsrtp_refuses(family, host):
    extension()
    flushes: list[int] = []
    with batching_port(family, host, flushes) as (port, listener, peer_sock):
        handler, peer = port_session(port, listener, peer_sock)
        assert port.send_rtp(handler.session, rtp(1)) and port.send_rtp(handler.session, rtp(2))
        assert port.send_rtp(handler.session, rtp(3, payload=bytes(1400)))  # too long: refused at the flush
        assert arrived(peer_sock) == [] and flushes == [1]  # asked once for the whole batch
        assert port.send_rtcp(handler.session, receiver_report())  # RTCP goes out at once
        assert len(arrived(peer_sock)) == 1
        port.flush()
        assert [peer.dtls.srtp_rx.unprotect(data) for data in arrived(peer_sock)] == [rtp(1), rtp(2)]
        assert port.counters.srtp_errors == 1 and port.counters.send_errors == 0
        port.flush()
        assert arrived(peer_sock) == [] and flushes == [1]
        assert port.send_rtp(handler.session, rtp(5)) and flushes == [1, 1]  # a new batch asks again


@needs_extension
def test_queued_packets_go_out_after_their_session_is_gone():
    """The queue holds the pylibsrtp session, so that its libsrtp context outlives the session."""
    extension()
    with batching_port(socket.AF_INET, "127.0.0.1", []) as (port, listener, peer_sock):
        handler, peer = port_session(port, listener, peer_sock)
        assert port.send_rtp(handler.session, rtp(1))
        srtp = weakref.ref(handler.session.srtp_tx)
        port.remove_session(handler.session, quietly=True)
        handler.session.dtls = None  # the port's last hold on it, besides the queue
        gc.collect()
        assert srtp() is not None
        port.flush()
        assert [peer.dtls.srtp_rx.unprotect(data) for data in arrived(peer_sock)] == [rtp(1)]
        gc.collect()
        assert srtp() is None


def test_without_the_extension_the_port_sends_at_once(monkeypatch):
    monkeypatch.setattr(sendbatch, "EXTENSION", None)
    flushes: list[int] = []
    with batching_port(socket.AF_INET, "127.0.0.1", flushes) as (port, listener, peer_sock):
        handler, peer = port_session(port, listener, peer_sock)
        assert port.send_rtp(handler.session, rtp(1))
        assert not port.send_rtp(handler.session, rtp(2, payload=bytes(1400)))
        assert [peer.dtls.srtp_rx.unprotect(data) for data in arrived(peer_sock)] == [rtp(1)]
        assert flushes == [] and port.counters.srtp_errors == 1


@needs_extension
async def test_the_shell_flushes_rtp_sent_outside_its_callbacks_and_at_close():
    extension()
    port = MediaPort(PORT_CONTEXT)
    media = MediaIO(asyncio.get_running_loop(), port)
    address = media.open_udp("127.0.0.1", 0)
    listener = port.udp_listener(address)
    assert listener is not None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer_sock:
        peer_sock.bind(("127.0.0.1", 0))
        peer_sock.setblocking(False)
        try:
            handler, peer = port_session(port, listener, peer_sock)
            assert port.send_rtp(handler.session, rtp(1)) and arrived(peer_sock) == []
            await asyncio.sleep(0)  # one round of the loop: no datagram needed
            assert [peer.dtls.srtp_rx.unprotect(data) for data in arrived(peer_sock)] == [rtp(1)]
            assert port.send_rtp(handler.session, rtp(2))
        finally:
            await media.close()
        assert [peer.dtls.srtp_rx.unprotect(data) for data in arrived(peer_sock)] == [rtp(2)]
