"""The media port without sockets: RFC 7983 demux, a session from first check to SRTP echo,
path moves, consent expiry, DTLS roles, and what reaches nobody."""
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.rtc.dtls import Closed, Connected, State
from appliance.rtc.ice import ConsentExpired, PathSelected
from appliance.rtc.port import Listener, MediaPort, PathClosed
from appliance.stun import Attr, Class, Message, Method
from tests.unit.rtc.harness import (
    ADDR, ADDR2, PEER_CONTEXT, PEER_UFRAG, PORT_CONTEXT, PWD, UFRAG, Handler, Peer, Sink, receiver_report, rtp,
)


def setup(server=True, fingerprints=True, echo=True, **kwargs):
    port = MediaPort(PORT_CONTEXT, **kwargs)
    handler = Handler(port, echo=echo)
    handler.session = port.add_session(
        handler, UFRAG, PWD, remote_ufrag=PEER_UFRAG,
        remote_fingerprints=[PEER_CONTEXT.fingerprint] if fingerprints else None, server=server,
    )
    listener = Listener(Sink())
    peer = Peer(port, listener, server=server is False)
    return port, handler, listener, peer


def connect(server=True, **kwargs):
    port, handler, listener, peer = setup(server, **kwargs)
    peer.check()
    peer.dtls.start()
    peer.deliver()
    assert peer.dtls.next_event() == Connected("SRTP_AEAD_AES_128_GCM")
    return port, handler, listener, peer


# For the property tests: one connected session, with a second validated path (ADDR2).
CONNECTED = connect(echo=False)
Peer(CONNECTED[0], CONNECTED[2], ADDR2).check(use_candidate=False)


def test_a_session_from_first_check_to_srtp_echo():
    port, handler, listener, peer = setup()
    peer.check()
    (answer, addr), = listener.sink.take()
    assert addr == ADDR and Message.parse(answer).message_class == Class.SUCCESS
    assert handler.events == [PathSelected(handler.session, listener, ADDR)]
    peer.dtls.start()
    assert peer.deliver() >= 2
    assert handler.events[1:] == [Connected("SRTP_AEAD_AES_128_GCM")]

    peer.send(peer.dtls.srtp_tx.protect(rtp(1)))
    assert handler.rtp_packets == [rtp(1)]
    (echoed, addr), = listener.sink.take()
    assert addr == ADDR and peer.dtls.srtp_rx.unprotect(echoed) == rtp(1)

    peer.send(peer.dtls.srtp_tx.protect_rtcp(receiver_report()))
    assert handler.rtcp_packets == [receiver_report()]
    assert port.send_rtcp(handler.session, receiver_report())
    (report, _), = listener.sink.take()
    assert peer.dtls.srtp_rx.unprotect_rtcp(report) == receiver_report()


def test_we_are_the_dtls_client_when_the_answer_says_passive():
    port, handler, listener, peer = setup(server=False)
    peer.check()
    sent = listener.sink.take()
    assert len(sent) == 2 and 19 < sent[1][0][0] < 64  # the check's answer, then our ClientHello
    peer.dtls.receive(sent[1][0])
    peer.deliver()
    assert Connected("SRTP_AEAD_AES_128_GCM") in handler.events


def test_a_client_hello_before_the_answer_makes_us_the_server_and_waits_for_the_fingerprint():
    port, handler, listener, peer = setup(server=None, fingerprints=False)
    peer.check()
    peer.dtls.start()
    peer.deliver()
    assert peer.dtls.state is State.CONNECTED and handler.session.srtp_tx is None
    port.set_remote(handler.session, PEER_UFRAG, [PEER_CONTEXT.fingerprint], server=True, now=0.0)
    assert handler.events[-1] == Connected("SRTP_AEAD_AES_128_GCM")
    assert port.send_rtp(handler.session, rtp(1))


def test_the_answer_can_make_us_the_client_after_the_path_is_selected():
    port, handler, listener, _ = setup(server=None, fingerprints=False)
    peer = Peer(port, listener, server=True)
    peer.check()
    listener.sink.take()
    port.set_remote(handler.session, PEER_UFRAG, [PEER_CONTEXT.fingerprint], server=False, now=0.0)
    (hello, _), = listener.sink.take()
    peer.dtls.receive(hello)
    peer.deliver()
    assert handler.events[-1] == Connected("SRTP_AEAD_AES_128_GCM")


def test_a_nominated_check_from_a_new_address_moves_media_there():
    port, handler, listener, peer = connect()
    moved = Peer(port, listener, ADDR2)
    moved.dtls = peer.dtls
    moved.check(use_candidate=False)
    assert handler.events[-1] == Connected("SRTP_AEAD_AES_128_GCM")  # a plain check moves nothing
    moved.check(use_candidate=True)
    assert handler.events[-1] == PathSelected(handler.session, listener, ADDR2)
    listener.sink.take()
    moved.send(peer.dtls.srtp_tx.protect(rtp(2)))
    assert handler.rtp_packets == [rtp(2)] and [addr for _, addr in listener.sink.take()] == [ADDR2]


def test_authenticated_media_on_another_validated_path_moves_the_session_there():
    # Firefox toward a lite peer: USE-CANDIDATE on every pair, then media on the pair it chose.
    port, handler, listener, peer = connect()
    other = Peer(port, listener, ADDR2)
    other.dtls = peer.dtls
    other.check(now=1.0)
    assert handler.events[-1] == PathSelected(handler.session, listener, ADDR2)
    listener.sink.take()
    peer.send(b"\x80\x6f" + bytes(40), 2.0)  # does not authenticate: no move
    assert port.counters.unmatched == 1 and listener.sink.take() == []
    peer.send(peer.dtls.srtp_tx.protect(rtp(1)), 2.0)
    assert handler.events[-1] == PathSelected(handler.session, listener, ADDR)
    assert handler.rtp_packets == [rtp(1)] and [addr for _, addr in listener.sink.take()] == [ADDR]
    # A path whose last check is older than the consent timeout is not taken back.
    other.send(peer.dtls.srtp_tx.protect(rtp(2)), 31.5)
    assert handler.rtp_packets == [rtp(1)] and port.counters.unmatched == 2


def test_a_client_hello_on_another_validated_path_moves_the_session_there():
    port, handler, listener, peer = setup()
    peer.check()
    second = Peer(port, listener, ADDR2)
    second.dtls = peer.dtls
    second.check()
    assert handler.events[-1] == PathSelected(handler.session, listener, ADDR2)
    peer.dtls.start()
    peer.deliver()
    assert handler.events[-2:] == [PathSelected(handler.session, listener, ADDR), Connected("SRTP_AEAD_AES_128_GCM")]
    second.check(use_candidate=True)
    assert handler.events[-1] == PathSelected(handler.session, listener, ADDR2)
    peer.send(b"\x17\xfe\xfd" + bytes(20))  # once connected, DTLS on another path moves nothing
    assert handler.events[-1] == PathSelected(handler.session, listener, ADDR2) and port.counters.unmatched == 1


def test_consent_expiry_stops_media_until_the_next_check():
    port, handler, listener, peer = connect(consent_timeout=30.0)
    port.handle_timer(29.9)  # the handshake's retransmission deadline, now moot
    assert port.get_timer() == 30.0 and listener.sink.take() == []
    port.handle_timer(30.0)
    assert handler.events[-1] == ConsentExpired(handler.session, listener, ADDR)
    assert not port.send_rtp(handler.session, rtp(1)) and listener.sink.take() == []
    peer.send(peer.dtls.srtp_tx.protect(rtp(1)), 31.0)
    assert handler.rtp_packets == []
    peer.check(now=32.0)
    assert handler.events[-1] == PathSelected(handler.session, listener, ADDR)
    peer.send(peer.dtls.srtp_tx.protect(rtp(2)), 32.0)
    assert handler.rtp_packets == [rtp(2)]


def test_a_closed_tcp_connection_takes_the_path_with_it():
    port, handler, listener, peer = connect()
    port.listener_closed(listener, 1.0)
    assert handler.events[-1] == PathClosed(listener, ADDR) and not port.send_rtp(handler.session, rtp(1))
    other = Listener(Sink())
    again = Peer(port, other, ADDR2)
    again.dtls = peer.dtls
    again.check()
    assert port.send_rtp(handler.session, rtp(1)) and len(other.sink.sent) == 2


def test_removing_a_session_sends_close_notify_and_forgets_it():
    port, handler, listener, peer = connect()
    listener.sink.take()
    port.remove_session(handler.session)
    (alert, _), = listener.sink.take()
    peer.dtls.receive(alert)
    assert peer.dtls.next_event() == Closed()
    peer.check()
    assert listener.sink.take() == []  # the ufrag is unknown now
    peer.send(peer.dtls.srtp_tx.protect(rtp(1)))
    assert port.counters.unmatched == 1


def test_application_data_reaches_the_handler_and_goes_back():
    port, handler, listener, peer = connect()
    peer.dtls.send(b"sctp")
    peer.deliver()
    assert handler.received_data == [b"sctp"]
    assert port.send_data(handler.session, b"sctp back", 0.0)
    peer.deliver()
    assert peer.dtls.next_event().data == b"sctp back"


def test_dtls_retransmission_is_driven_by_the_port_timer():
    port, handler, listener, peer = setup(server=False)
    peer.check(now=100.0)
    listener.sink.take()  # the ClientHello is lost
    dtls_due = port.get_timer()
    assert 100.0 < dtls_due <= 101.0  # before the consent deadline at 130
    time.sleep(1.05)  # OpenSSL keeps its own clock: let its first timeout (1 s) really pass
    port.handle_timer(dtls_due)
    assert [19 < d[0] < 64 for d, _ in listener.sink.take()] == [True]


def test_unmatched_and_malformed_datagrams_are_counted_and_dropped():
    port, handler, listener, peer = connect()
    listener.sink.take()
    stranger = Peer(port, listener, ("198.51.100.1", 9))
    stranger.send(peer.dtls.srtp_tx.protect(rtp(1)))  # SRTP from a 5-tuple nobody validated
    stranger.send(b"\x16\xfe\xfd" + bytes(20))  # DTLS from it
    stranger.send(b"\x40" + bytes(20))  # a ChannelData first byte: not for this port
    stranger.send(b"\x80")  # too short for anything
    peer.send(b"\x80\x6f" + bytes(30))  # SRTP that does not authenticate
    assert port.counters.unmatched == 2 and port.counters.malformed == 2 and port.counters.srtp_errors == 1
    assert handler.rtp_packets == [] and listener.sink.take() == []


def test_the_health_probe_is_answered_with_no_session():
    port = MediaPort(PORT_CONTEXT)
    listener = Listener(Sink())
    probe = Message(Method.BINDING, Class.REQUEST)
    port.datagram_received(listener, probe.encode(fingerprint=True), ADDR2, 0.0)
    (answer, addr), = listener.sink.take()
    assert addr == ADDR2 and Message.parse(answer).get(Attr.XOR_MAPPED_ADDRESS) == ADDR2


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([ADDR, ADDR2, ("198.51.100.1", 9)]))
def test_arbitrary_datagrams_never_raise(data, source):
    # From the selected path, from a validated one, from a stranger.
    port, handler, listener, peer = CONNECTED
    port.datagram_received(listener, data, source, 1.0)
    listener.sink.take()


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_payloads_behind_each_first_byte_never_raise(body):
    port, handler, listener, peer = CONNECTED
    for first in (0x00, 0x01, 0x17, 0x16, 0x80, 0x90):
        port.datagram_received(listener, bytes([first]) + body, ADDR, 1.0)
    listener.sink.take()


def test_the_shell_is_woken_for_each_new_deadline():
    port, handler, listener, peer = setup(server=False)
    woken = []
    port.wake = woken.append
    peer.check(now=100.0)
    assert 130.0 in woken  # consent
    assert any(100.0 < when <= 101.0 for when in woken)  # our ClientHello's retransmission
