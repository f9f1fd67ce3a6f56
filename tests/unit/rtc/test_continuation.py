"""SRTP carried on from another box (rtc/continuation.py, MediaPort.resume) against real libsrtp: a
second port given only the first one's keys and counters goes on with a peer whose SRTP has seen
a wrap of the sequence numbers and many SRTCP packets, and the peer accepts what it sends."""
from __future__ import annotations

import pylibsrtp
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from appliance.rtc import continuation
from appliance.rtc.dtls import Connected, SrtpKeys
from appliance.rtc.ice import PathSelected
from appliance.rtc.port import Listener, MediaPort
from tests.unit.rtc.harness import (
    ADDR, PEER_CONTEXT, PEER_UFRAG, PORT_CONTEXT, PWD, UFRAG, Handler, Peer, Sink, receiver_report, rtp,
)

SSRC = 0x11223344
START = 65530  # the peer's first sequence number: its stream wraps (ROC 1) within ten packets
REPORTS = 300  # SRTCP packets the first box sends before it goes


def first_box():
    """A port with a connected session, a peer that sent across a wrap (and got each packet echoed),
    and REPORTS receiver reports the port sent the peer."""
    port = MediaPort(PORT_CONTEXT)
    handler = Handler(port, echo=True)
    handler.session = port.add_session(handler, UFRAG, PWD, remote_ufrag=PEER_UFRAG,
                                       remote_fingerprints=[PEER_CONTEXT.fingerprint], server=True)
    listener = Listener(Sink())
    peer = Peer(port, listener)
    peer.check()
    peer.dtls.start()
    peer.deliver()
    assert peer.dtls.next_event() == Connected("SRTP_AEAD_AES_128_GCM")
    for seq in range(START, START + 10):
        peer.send(peer.dtls.srtp_tx.protect(rtp(seq & 0xFFFF)))
    for echoed, _ in listener.sink.take():
        peer.dtls.srtp_rx.unprotect(echoed)
    for _ in range(REPORTS):
        assert port.send_rtcp(handler.session, receiver_report(0x5EED))
    for report, _ in listener.sink.take():
        peer.dtls.srtp_rx.unprotect_rtcp(report)
    assert handler.session.rtcp_sent == {0x5EED: REPORTS}
    return port, handler, peer


def second_box(keys: SrtpKeys, walked: bool):
    """Another port carrying the session on with its keys, given (or not) where the streams were."""
    port = MediaPort(PORT_CONTEXT)
    handler = Handler(port, echo=True)
    handler.session = port.add_session(handler, UFRAG, PWD, remote_ufrag=PEER_UFRAG,
                                       remote_fingerprints=[PEER_CONTEXT.fingerprint], server=True)
    listener = Listener(Sink())
    port.add_udp(listener, ("192.0.2.1", 3478))
    highest = START + 9  # the index (ROC 1) of the last packet both ways
    counters = ({SSRC: highest}, {SSRC: highest}, {0x5EED: REPORTS + 10}) if walked else ({}, {}, {})
    port.resume(handler.session, listener, ADDR, keys, *counters, now=1.0)
    return port, handler, listener


def test_a_second_port_with_the_keys_and_counters_carries_the_session_on():
    port, first, peer = first_box()
    keys = first.session.keys
    assert keys is not None and keys.profile == "SRTP_AEAD_AES_128_GCM"
    other, handler, listener = second_box(keys, walked=True)
    assert handler.events == [PathSelected(handler.session, listener, ADDR), Connected("SRTP_AEAD_AES_128_GCM")]
    # No check, no handshake: the peer's next packet (ROC 1) is read at once, and the echo read back.
    assert listener.sessions[ADDR] is handler.session  # the path is selected
    peer.port, peer.listener = other, listener
    peer.send(peer.dtls.srtp_tx.protect(rtp((START + 10) & 0xFFFF)))
    assert handler.rtp_packets == [rtp((START + 10) & 0xFFFF)]
    (echoed, addr), = listener.sink.take()
    assert addr == ADDR and peer.dtls.srtp_rx.unprotect(echoed) == rtp((START + 10) & 0xFFFF)
    assert other.send_rtcp(handler.session, receiver_report(0x5EED))
    (report, _), = listener.sink.take()
    assert peer.dtls.srtp_rx.unprotect_rtcp(report) == receiver_report(0x5EED)
    assert other.counters.srtp_errors == 0 and other.counters.resumed == 1


def test_without_the_counters_the_peer_and_the_port_refuse_each_other():
    port, first, peer = first_box()
    other, handler, listener = second_box(first.session.keys, walked=False)
    peer.port, peer.listener = other, listener
    peer.send(peer.dtls.srtp_tx.protect(rtp((START + 10) & 0xFFFF)))
    assert handler.rtp_packets == [] and other.counters.srtp_errors == 1  # read with ROC 0
    other.send_rtp(handler.session, rtp((START + 11) & 0xFFFF))
    other.send_rtcp(handler.session, receiver_report(0x5EED))
    (packet, _), (report, _) = listener.sink.take()
    with pytest.raises(pylibsrtp.Error):
        peer.dtls.srtp_rx.unprotect(packet)  # protected with ROC 0
    with pytest.raises(pylibsrtp.Error):
        peer.dtls.srtp_rx.unprotect_rtcp(report)  # an SRTCP index the peer has passed: a replay


def test_dtls_for_a_carried_on_session_is_dropped_and_strays_are_told():
    port, first, peer = first_box()
    other, handler, listener = second_box(first.session.keys, walked=True)
    strays = []
    other.on_stray = lambda local, data, addr, now: strays.append(addr)
    other.datagram_received(listener, bytes([23, 0xFE, 0xFD]) + bytes(20), ADDR, 2.0)  # an application record
    assert other.counters.unmatched == 1 and handler.session.dtls is None
    other.datagram_received(listener, peer.dtls.srtp_tx.protect(rtp(7)), ("203.0.113.5", 9), 2.0)
    assert strays == [("203.0.113.5", 9)]


def honest_receiver(keys: SrtpKeys, ssrc: int, upto: int) -> pylibsrtp.Session:
    """A receiver that saw the stream's packets every 1000 indices up to `upto`, as a peer would
    have seen them (with no help from continuation's walk)."""
    sender = pylibsrtp.Session(pylibsrtp.Policy(key=keys.tx, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                                srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
    receiver = pylibsrtp.Session(pylibsrtp.Policy(key=keys.tx, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                                                  srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
    for index in [*range(upto % 1000, upto, 1000), upto]:
        receiver.unprotect(sender.protect(rtp(index & 0xFFFF, ssrc)))
    return receiver


KEYS = SrtpKeys("SRTP_AES128_CM_SHA1_80", bytes(range(30)), bytes(range(30, 60)))


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=4 * 65536))
@example(0)
@example(0x7FFF)
@example(0xFFFF)  # the next packet is the first of ROC 1
@example(0x10000)
def test_a_walked_sender_protects_the_next_packet_as_the_peer_expects(index):
    _, tx = KEYS.sessions()
    continuation.advance_sender(tx, SSRC, index)
    receiver = honest_receiver(KEYS, SSRC, index)
    following = rtp((index + 1) & 0xFFFF, SSRC)
    assert receiver.unprotect(tx.protect(following)) == following


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=4 * 65536))
@example(0)
@example(0x7FFF)
@example(0xFFFF)
@example(0x10000)
def test_a_walked_receiver_reads_the_peers_next_packet(index):
    peer_keys = SrtpKeys(KEYS.profile, KEYS.tx, KEYS.rx)  # the peer's view: what it sends is our rx
    rx, _ = KEYS.sessions()
    continuation.advance_receiver(rx, KEYS, SSRC, index)
    sender = pylibsrtp.Session(pylibsrtp.Policy(key=peer_keys.tx, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                                                srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80))
    for step in [*range(index % 1000, index + 1, 1000), index + 1]:
        packet = sender.protect(rtp(step & 0xFFFF, SSRC))
    assert rx.unprotect(packet) == rtp((index + 1) & 0xFFFF, SSRC)


def test_keys_survive_the_store_and_bad_ones_are_refused():
    assert continuation.decode_keys(continuation.encode_keys(KEYS)) == KEYS
    for bad in ({}, {"profile": "SRTP_NULL", "rx": "", "tx": ""}, [], {"profile": KEYS.profile, "rx": "!!", "tx": ""},
                {**continuation.encode_keys(KEYS), "rx": "AAAA"}):
        with pytest.raises((ValueError, TypeError)):
            continuation.decode_keys(bad)
