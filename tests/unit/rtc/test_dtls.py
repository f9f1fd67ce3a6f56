"""DTLS in memory: our connections with each other, and with aiortc's RTCDtlsTransport."""
import asyncio
import time

import pytest
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsFingerprint, RTCDtlsParameters, RTCDtlsTransport
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.rtc.dtls import (
    MTU, ApplicationData, Closed, Connected, DtlsConnection, Failed, State, split_records,
)
from tests.unit.rtc.harness import PEER_CONTEXT, PORT_CONTEXT, exchange, rtp

WRONG = RTCDtlsFingerprint("sha-256", ":".join(["AB"] * 32))


def events(connection):
    out = []
    while (event := connection.next_event()) is not None:
        out.append(event)
    return out


def pair(server_fingerprints=..., client_fingerprints=...):
    server = DtlsConnection(PORT_CONTEXT, True, [PEER_CONTEXT.fingerprint] if server_fingerprints is ... else server_fingerprints)
    client = DtlsConnection(PEER_CONTEXT, False, [PORT_CONTEXT.fingerprint] if client_fingerprints is ... else client_fingerprints)
    return server, client


def test_handshake_keys_srtp_both_ways():
    server, client = pair()
    client.start()
    exchange(server, client)
    assert server.state is client.state is State.CONNECTED
    assert events(server) == events(client) == [Connected("SRTP_AEAD_AES_128_GCM")]
    packet = rtp(1)
    assert server.srtp_rx.unprotect(client.srtp_tx.protect(packet)) == packet
    assert client.srtp_rx.unprotect(server.srtp_tx.protect(packet)) == packet
    assert server.get_timeout(0.0) is None


def test_a_flight_is_split_into_datagrams_under_the_mtu_at_record_boundaries():
    server, client = pair()
    client.start()
    for datagram in client.datagrams_to_send():
        server.receive(datagram)
    flight = server.datagrams_to_send()
    assert flight and all(len(d) <= MTU for d in flight)
    for datagram in flight:
        assert split_records(datagram, 1 << 16) == [datagram]  # whole records only
        client.receive(datagram)
    exchange(server, client)
    assert client.state is State.CONNECTED


def test_a_wrong_fingerprint_fails_the_handshake():
    server, client = pair(server_fingerprints=[WRONG])
    client.start()
    exchange(server, client)
    assert server.state is State.FAILED and server.srtp_rx is None
    assert [type(e) for e in events(server)] == [Failed]
    assert server.send(b"x") is False


def test_fingerprints_of_unknown_algorithms_alone_do_not_authenticate():
    server, client = pair(server_fingerprints=[RTCDtlsFingerprint("md5", "00")])
    client.start()
    exchange(server, client)
    assert server.state is State.FAILED


def test_the_handshake_can_finish_before_the_remote_fingerprint_is_known():
    server, client = pair(server_fingerprints=None)
    client.start()
    exchange(server, client)
    client.send(b"sctp INIT")
    exchange(server, client)
    assert server.state is State.UNVERIFIED and events(server) == [] and server.srtp_tx is None
    server.set_remote_fingerprints([PEER_CONTEXT.fingerprint])
    assert events(server) == [Connected("SRTP_AEAD_AES_128_GCM"), ApplicationData(b"sctp INIT")]


def test_a_late_wrong_fingerprint_fails():
    server, client = pair(server_fingerprints=None)
    client.start()
    exchange(server, client)
    server.set_remote_fingerprints([WRONG])
    assert server.state is State.FAILED


def test_application_data_and_close_notify():
    server, client = pair()
    client.start()
    exchange(server, client)
    events(server), events(client)
    assert client.send(b"to server") and server.send(b"to client")
    exchange(server, client)
    assert events(server) == [ApplicationData(b"to server")]
    assert events(client) == [ApplicationData(b"to client")]
    client.close()
    exchange(server, client)
    assert events(server) == [Closed()] and server.state is State.CLOSED


def test_the_server_role_can_be_ours_or_theirs():
    client = DtlsConnection(PORT_CONTEXT, False, [PEER_CONTEXT.fingerprint])
    server = DtlsConnection(PEER_CONTEXT, True, [PORT_CONTEXT.fingerprint])
    client.start()
    server.start()  # a server waits: nothing to send
    exchange(server, client)
    assert client.state is server.state is State.CONNECTED


def test_a_lost_client_hello_is_sent_again_when_the_timeout_comes():
    server, client = pair()
    client.start()
    exchange(server, client, drop=1)
    assert client.state is State.HANDSHAKE
    now = time.monotonic()
    due = client.get_timeout(now)
    assert due is not None and now < due <= now + 1.0
    time.sleep(due - now + 0.02)  # OpenSSL's own clock decides; its first timeout is 1 s
    client.handle_timeout(time.monotonic())
    exchange(server, client)
    assert client.state is server.state is State.CONNECTED


def test_garbage_after_the_handshake_is_ignored():
    server, client = pair()
    client.start()
    exchange(server, client)
    events(server)
    server.receive(b"\x17\xfe\xfd" + bytes(10) + b"\x00\x05hello")
    assert server.state is State.CONNECTED and events(server) == []


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=4))
def test_arbitrary_datagrams_only_fail_the_handshake(datagrams):
    server = DtlsConnection(PORT_CONTEXT, True, [PEER_CONTEXT.fingerprint])
    for datagram in datagrams:
        server.receive(b"\x16" + datagram)
    assert all(isinstance(e, Failed) for e in events(server))
    assert server.state in (State.HANDSHAKE, State.FAILED)


@settings(max_examples=2000)
@given(st.binary(max_size=400), st.integers(1, 1500))
def test_split_records_keeps_every_byte_in_order(data, mtu):
    assert b"".join(split_records(data, mtu)) == data


# --- against aiortc's DTLS transport --------------------------------------------------------------

class _IceTransportToOurs:
    """What RTCDtlsTransport needs of its ICE transport, wired to one of our connections."""

    role = "controlling"

    def __init__(self, ours: DtlsConnection) -> None:
        self.ours = ours
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue()

    async def _recv(self) -> bytes:
        return await self.inbox.get()

    async def _send(self, data: bytes) -> None:
        self.ours.receive(data)
        self.forward()

    def forward(self) -> None:
        for datagram in self.ours.datagrams_to_send():
            self.inbox.put_nowait(datagram)


class _DataReceiver:
    def __init__(self) -> None:
        self.received: asyncio.Queue[bytes] = asyncio.Queue()

    async def _handle_data(self, data: bytes) -> None:
        self.received.put_nowait(data)


@pytest.mark.parametrize("we_serve", [True, False], ids=["aiortc-client", "aiortc-server"])
async def test_against_aiortc(we_serve):
    certificate = RTCCertificate.generateCertificate()
    ours = DtlsConnection(PORT_CONTEXT, we_serve, certificate.getFingerprints())
    ice = _IceTransportToOurs(ours)
    theirs = RTCDtlsTransport(ice, [certificate])
    theirs._set_role("client" if we_serve else "server")
    receiver = _DataReceiver()
    theirs._register_data_receiver(receiver)
    ours.start()
    ice.forward()
    await asyncio.wait_for(theirs.start(RTCDtlsParameters(fingerprints=[PORT_CONTEXT.fingerprint])), 5)
    assert theirs.state == "connected" and ours.state is State.CONNECTED
    assert [type(e) for e in events(ours)] == [Connected]

    packet = rtp(7)
    assert ours.srtp_rx.unprotect(theirs._tx_srtp.protect(packet)) == packet
    assert theirs._rx_srtp.unprotect(ours.srtp_tx.protect(packet)) == packet

    await theirs._send_data(b"from aiortc")
    assert events(ours) == [ApplicationData(b"from aiortc")]
    ours.send(b"from us")
    ice.forward()
    assert await asyncio.wait_for(receiver.received.get(), 5) == b"from us"
    await theirs.stop()
