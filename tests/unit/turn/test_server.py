"""The TURN server core over UDP: authentication, allocations, permissions, channels, relaying."""
import ipaddress
import struct

import pytest

from appliance.config import TurnConfig
from appliance.config.values import PortRange
from appliance.stun import Attr, Class, Message, Method, pack_channel_data
from appliance.turn import CloseConnected, CloseRelay, TurnServer, canonical
from tests.unit.turn.harness import (
    ALLOW, LISTENER, NOW, PEER, PEER2, PEER6, RELAY4, RELAY6, Lab, RecordingBinder, error_code, ok,
)
from tests.unit.turn.test_policy import DENIED_IPV4, DENIED_IPV6, spellings


@pytest.fixture
def lab():
    return Lab()


def relay_of(lab, index=0):
    return list(lab.binder.udp)[index]


def bind_channel(client, number=0x4001, peer=PEER, now=NOW):
    return client.request(Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, number), (Attr.XOR_PEER_ADDRESS, peer), now=now)


def permit(client, *peers, now=NOW):
    return client.request(Method.CREATE_PERMISSION, *((Attr.XOR_PEER_ADDRESS, p) for p in peers), now=now)


# --- STUN service ------------------------------------------------------------------------


@pytest.mark.parametrize("fingerprint", [False, True])
def test_binding_answers_with_the_reflexive_address(lab, fingerprint):
    client = lab.client(("198.51.100.7", 5555))
    answer = ok(client.request(Method.BINDING, sign=False, fingerprint=fingerprint))
    assert answer.get(Attr.XOR_MAPPED_ADDRESS) == ("198.51.100.7", 5555)
    assert answer.get(Attr.SOFTWARE) == "Edgecall"
    assert answer.fingerprinted == fingerprint
    assert not lab.server.allocations


def test_binding_with_unknown_required_attribute_gets_420(lab):
    answer = lab.client().request(Method.BINDING, (0x0031, b"x"), sign=False)
    assert error_code(answer) == 420 and answer.get(Attr.UNKNOWN_ATTRIBUTES) == (0x0031,)


def test_unknown_method_gets_400_and_indications_are_ignored(lab):
    client = lab.client()
    assert error_code(client.request(0x0FF, sign=False)) == 400
    client.send(Message(Method.BINDING, Class.INDICATION).encode())
    assert client.received() == []


# --- authentication ------------------------------------------------------------------------


def test_unauthenticated_allocate_gets_401_with_realm_and_nonce(lab):
    client = lab.client()
    answer = client.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17), sign=False)
    assert error_code(answer) == 401
    assert answer.get(Attr.REALM) == "edgecall" and answer.get(Attr.NONCE)
    assert not answer.has_integrity and not lab.server.allocations


def test_authenticated_allocate(lab):
    client = lab.client()
    answer = ok(client.allocate())
    assert answer.check_integrity(client.key)
    host, port = answer.get(Attr.XOR_RELAYED_ADDRESS)
    assert host == RELAY4 and 50000 <= port <= 50099
    assert answer.get(Attr.LIFETIME) == 600
    assert answer.get(Attr.XOR_MAPPED_ADDRESS) == client.addr
    assert lab.binder.udp[relay_of(lab)] == (RELAY4, port, False)
    (allocation,) = lab.server.allocations
    assert allocation.username == client.username and allocation.identifier == "alice"


def test_wrong_password_gets_401_and_is_counted(lab):
    client = lab.client(secret="not-the-secret")
    assert error_code(client.allocate()) == 401
    assert lab.server.counters.auth_failures == 1 and not lab.server.allocations


def test_every_configured_secret_verifies(lab):
    assert ok(lab.client(secret="old-secret").allocate())


def test_stale_nonce_gets_438_with_a_new_nonce(lab):
    client = lab.client()
    ok(client.allocate())
    old = client.nonce
    later = NOW + 601
    message = Message(Method.REFRESH, Class.REQUEST, None, [(Attr.USERNAME, client.username), (Attr.REALM, "edgecall"),
                                                            (Attr.NONCE, old)])
    client.send(message.encode(client.key), later)
    (stale,) = [Message.parse(d) for d in client.received()]
    assert error_code(stale) == 438 and stale.get(Attr.NONCE) != old
    # The harness retries with the new nonce, as clients do.
    assert ok(client.request(Method.REFRESH, now=later)).get(Attr.LIFETIME) == 600
    assert client.nonce != old


def test_nonce_is_bound_to_the_client_address(lab):
    first = lab.client(("198.51.100.20", 40000))
    ok(first.allocate())
    second = lab.client(("198.51.100.21", 40000))
    second.nonce = first.nonce
    message = Message(Method.ALLOCATE, Class.REQUEST, None, [(Attr.REQUESTED_TRANSPORT, 17),
                      (Attr.USERNAME, second.username), (Attr.REALM, "edgecall"), (Attr.NONCE, first.nonce)])
    second.send(message.encode(second.key))
    assert error_code(Message.parse(second.received()[0])) == 438


def test_expired_username_is_refused(lab):
    client = lab.client(ttl=60)
    lab.wall = NOW + 61
    assert error_code(client.allocate(now=NOW + 61)) == 401


def test_another_realm_gets_401(lab):
    client = lab.client()
    client.allocate()
    message = Message(Method.REFRESH, Class.REQUEST, None, [(Attr.USERNAME, client.username), (Attr.REALM, "other"),
                                                            (Attr.NONCE, client.nonce)])
    client.send(message.encode(client.key))
    answer = Message.parse(client.received()[0])
    assert error_code(answer) == 401 and answer.get(Attr.REALM) == "edgecall"


def test_missing_username_with_integrity_gets_400(lab):
    client = lab.client()
    client.send(Message(Method.ALLOCATE, Class.REQUEST, None, [(Attr.REQUESTED_TRANSPORT, 17)]).encode(b"key"))
    assert error_code(Message.parse(client.received()[0])) == 400


def test_sha256_integrity_is_verified_and_answered_in_kind(lab):
    client = lab.client()
    client.allocate()  # learn the nonce
    client.request(Method.REFRESH, (Attr.LIFETIME, 0))
    answer = ok(client.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, 17), sha256=True))
    assert answer.uses_sha256 and answer.check_integrity(client.key)


def test_fingerprint_on_answers_when_the_request_had_one(lab):
    client = lab.client()
    client.allocate()
    assert ok(client.request(Method.REFRESH, fingerprint=True)).fingerprinted
    assert not client.request(Method.REFRESH).fingerprinted


# --- Allocate ---------------------------------------------------------------------------------


def test_allocate_retransmission_gets_the_same_answer_and_another_gets_437(lab):
    client = lab.client()
    client.allocate()
    client.request(Method.REFRESH, (Attr.LIFETIME, 0))
    request = Message(Method.ALLOCATE, Class.REQUEST, None, [(Attr.REQUESTED_TRANSPORT, 17),
                      (Attr.USERNAME, client.username), (Attr.REALM, "edgecall"), (Attr.NONCE, client.nonce)])
    wire = request.encode(client.key)
    client.send(wire)
    first = client.received()
    client.send(wire)
    assert client.received() == first
    assert len(lab.server.allocations) == 1
    assert error_code(client.allocate()) == 437


@pytest.mark.parametrize(
    ("attributes", "code"),
    [
        ((), 400),  # no REQUESTED-TRANSPORT
        (((Attr.REQUESTED_TRANSPORT, 1),), 442),
        (((Attr.REQUESTED_TRANSPORT, 6),), 400),  # TCP relay over UDP
        (((Attr.REQUESTED_TRANSPORT, 17), (Attr.REQUESTED_ADDRESS_FAMILY, 3)), 440),
        (((Attr.REQUESTED_TRANSPORT, 17), (Attr.EVEN_PORT, False), (Attr.RESERVATION_TOKEN, b"12345678")), 400),
        (((Attr.REQUESTED_TRANSPORT, 17), (Attr.REQUESTED_ADDRESS_FAMILY, 2), (Attr.ADDITIONAL_ADDRESS_FAMILY, 2)), 400),
        (((Attr.REQUESTED_TRANSPORT, 17), (Attr.ADDITIONAL_ADDRESS_FAMILY, 1)), 400),
        (((Attr.REQUESTED_TRANSPORT, 17), (Attr.ADDITIONAL_ADDRESS_FAMILY, 2), (Attr.EVEN_PORT, True)), 400),
        (((Attr.REQUESTED_TRANSPORT, 17), (Attr.RESERVATION_TOKEN, b"unknown!")), 508),
        (((Attr.REQUESTED_TRANSPORT, 17), (0x0031, b"?")), 420),
    ],
)
def test_allocate_refusals(lab, attributes, code):
    client = lab.client()
    answer = client.request(Method.ALLOCATE, *attributes)
    assert error_code(answer) == code
    assert answer.check_integrity(client.key)
    assert not lab.server.allocations and not lab.binder.udp


def test_allocate_with_dont_fragment_asks_the_shell_for_df(lab):
    ok(lab.client().allocate((Attr.DONT_FRAGMENT, True)))
    assert lab.binder.udp[relay_of(lab)][2] is True


def test_ipv6_relay(lab):
    client = lab.client()
    answer = ok(client.allocate((Attr.REQUESTED_ADDRESS_FAMILY, 2)))
    assert answer.get(Attr.XOR_RELAYED_ADDRESS)[0] == RELAY6
    assert error_code(permit(client, PEER)) == 443
    ok(permit(client, PEER6))
    ok(bind_channel(client, peer=PEER6))
    client.send(pack_channel_data(0x4001, b"to v6"))
    relay = relay_of(lab)
    peer_as_socket_reports = (PEER6[0], PEER6[1], 0, 0)
    assert lab.server.from_peer(relay, b"from v6", peer_as_socket_reports, NOW)[0] == b"\x40\x01\x00\x07from v6"


def test_dual_allocation_with_additional_family(lab):
    client = lab.client()
    answer = ok(client.allocate((Attr.ADDITIONAL_ADDRESS_FAMILY, 2)))
    assert [a[0] for a in answer.get_all(Attr.XOR_RELAYED_ADDRESS)] == [RELAY4, RELAY6]
    ok(permit(client, PEER, PEER6))


def test_dual_allocation_without_ipv6_relay_address_reports_address_error():
    lab = Lab(relays=(RELAY4,))
    answer = ok(lab.client().allocate((Attr.ADDITIONAL_ADDRESS_FAMILY, 2)))
    assert len(answer.get_all(Attr.XOR_RELAYED_ADDRESS)) == 1
    assert answer.get(Attr.ADDRESS_ERROR_CODE)[:2] == (2, 440)


def test_ipv6_only_request_without_ipv6_relay_gets_440():
    lab = Lab(relays=(RELAY4,))
    assert error_code(lab.client().allocate((Attr.REQUESTED_ADDRESS_FAMILY, 2))) == 440


def test_even_port_with_reservation(lab):
    first = lab.client(("198.51.100.20", 1))
    answer = ok(first.allocate((Attr.EVEN_PORT, True)))
    port = answer.get(Attr.XOR_RELAYED_ADDRESS)[1]
    token = answer.get(Attr.RESERVATION_TOKEN)
    assert port % 2 == 0 and len(token) == 8
    second = lab.client(("198.51.100.20", 2))
    answer = ok(second.allocate((Attr.RESERVATION_TOKEN, token)))
    assert answer.get(Attr.XOR_RELAYED_ADDRESS)[1] == port + 1
    # A token is good once.
    third = lab.client(("198.51.100.20", 3))
    assert error_code(third.allocate((Attr.RESERVATION_TOKEN, token))) == 508


def test_reservation_expires(lab):
    answer = ok(lab.client(("198.51.100.20", 1)).allocate((Attr.EVEN_PORT, True)))
    token = answer.get(Attr.RESERVATION_TOKEN)
    assert lab.server.ports.reservations == 1
    lab.server.handle_timer(NOW + 31)
    assert lab.server.ports.reservations == 0
    assert error_code(lab.client(("198.51.100.20", 2)).allocate((Attr.RESERVATION_TOKEN, token))) == 508


def test_quota_per_username_gets_486():
    lab = Lab(user_quota=2)
    clients = [lab.client(("198.51.100.20", port)) for port in (1, 2, 3)]
    for client in clients:
        client.username, client.key = clients[0].username, clients[0].key
    ok(clients[0].allocate())
    ok(clients[1].allocate())
    assert error_code(clients[2].allocate()) == 486
    # Another username is not affected.
    ok(lab.client(("198.51.100.20", 4), identifier="bob").allocate())


def test_no_bindable_port_gets_508():
    lab = Lab(ports=(50000, 50003))
    lab.binder.taken = {50000, 50001, 50002, 50003}
    assert error_code(lab.client().allocate()) == 508
    assert not lab.server.allocations and lab.server.ports.in_use() == 0


def test_port_range_exhaustion_gets_508():
    lab = Lab(ports=(50000, 50001), issuer_reserve=0)  # one issuer may take every port
    ok(lab.client(("198.51.100.20", 1)).allocate())
    ok(lab.client(("198.51.100.20", 2)).allocate())
    assert error_code(lab.client(("198.51.100.20", 3)).allocate()) == 508


def test_ports_the_shell_cannot_bind_are_skipped():
    lab = Lab(ports=(50000, 50003))
    lab.binder.taken = {50000, 50001, 50002}
    answer = ok(lab.client().allocate())
    assert answer.get(Attr.XOR_RELAYED_ADDRESS)[1] == 50003


# --- Refresh and lifetimes ------------------------------------------------------------------


def test_refresh_sets_lifetime_within_bounds(lab):
    client = lab.client()
    client.allocate()
    assert ok(client.request(Method.REFRESH, (Attr.LIFETIME, 100000))).get(Attr.LIFETIME) == 3600
    assert ok(client.request(Method.REFRESH, (Attr.LIFETIME, 30))).get(Attr.LIFETIME) == 600
    assert ok(client.request(Method.REFRESH)).get(Attr.LIFETIME) == 600


def test_refresh_zero_deletes_the_allocation(lab):
    client = lab.client()
    client.allocate()
    relay = relay_of(lab)
    assert ok(client.request(Method.REFRESH, (Attr.LIFETIME, 0))).get(Attr.LIFETIME) == 0
    assert not lab.server.allocations
    assert CloseRelay(relay) in lab.take_events()
    assert lab.server.ports.in_use() == 0
    assert error_code(client.request(Method.REFRESH)) == 437


def test_refresh_with_unknown_required_attribute_gets_420(lab):
    client = lab.client()
    client.allocate()
    answer = client.request(Method.REFRESH, (0x0031, b"?"))
    assert error_code(answer) == 420 and answer.get(Attr.UNKNOWN_ATTRIBUTES) == (0x0031,)


def test_refresh_with_a_family_the_allocation_lacks_gets_443(lab):
    client = lab.client()
    client.allocate()
    assert error_code(client.request(Method.REFRESH, (Attr.REQUESTED_ADDRESS_FAMILY, 2))) == 443


def test_requests_without_allocation_get_437(lab):
    client = lab.client()
    client.request(Method.BINDING, sign=False)
    client.allocate()
    client.request(Method.REFRESH, (Attr.LIFETIME, 0))
    assert error_code(permit(client, PEER)) == 437
    assert error_code(bind_channel(client)) == 437


def test_another_username_on_the_same_5_tuple_gets_441(lab):
    client = lab.client()
    client.allocate()
    other = lab.client(identifier="mallory")
    other.listener, other.sink, other.nonce = client.listener, client.sink, client.nonce
    assert error_code(other.request(Method.REFRESH)) == 441


def test_allocation_expires(lab):
    client = lab.client()
    client.allocate((Attr.LIFETIME, 900))
    relay = relay_of(lab)
    assert lab.server.get_timer() is not None
    lab.server.handle_timer(NOW + 899)
    assert lab.server.allocations
    lab.server.handle_timer(NOW + 900)
    assert not lab.server.allocations
    assert CloseRelay(relay) in lab.take_events()
    assert lab.server.from_peer(relay, b"x", PEER, NOW + 901) is None


def test_refresh_keeps_the_allocation_alive(lab):
    client = lab.client()
    client.allocate()
    ok(client.request(Method.REFRESH, now=NOW + 500))
    lab.server.handle_timer(NOW + 700)
    assert lab.server.allocations
    lab.server.handle_timer(NOW + 1100)
    assert not lab.server.allocations


# --- permissions, channels, relaying ---------------------------------------------------------


def test_channel_data_both_ways(lab):
    client = lab.client()
    client.allocate()
    ok(bind_channel(client))
    relay = relay_of(lab)
    data, peer, sink = client.send(pack_channel_data(0x4001, b"hello"))
    assert (data, peer, sink) == (b"hello", PEER, lab.binder.sinks[relay])
    # Padding over UDP is allowed and ignored.
    assert client.send(pack_channel_data(0x4001, b"hey", stream=True))[0] == b"hey"
    data, addr, sink = lab.server.from_peer(relay, b"world", PEER, NOW)
    assert (data, addr, sink) == (b"\x40\x01\x00\x05world", client.addr, client.sink)


def connecting_lab():
    """A lab whose shell has connected sockets to give."""
    lab = Lab()
    lab.binder.connects = True
    return lab


def connected_sinks(lab):
    return {made_for: sink for sink, made_for in lab.binder.connected.items()}


def test_connected_sockets_carry_a_udp_clients_relayed_data():
    lab = connecting_lab()
    client = lab.client()
    client.allocate()
    ok(bind_channel(client))
    ok(permit(client, PEER2))  # answered from the listener, as every request is (client.sink)
    relay = relay_of(lab)
    sinks = connected_sinks(lab)
    assert set(sinks) == {("client", LISTENER, client.addr), ("peer", relay, PEER)}
    to_client, to_peer = sinks["client", LISTENER, client.addr], sinks["peer", relay, PEER]
    assert client.send(pack_channel_data(0x4001, b"hi")) == (b"hi", PEER, to_peer)
    assert lab.server.from_peer(relay, b"yo", PEER, NOW) == (b"\x40\x01\x00\x02yo", client.addr, to_client)
    # A Send indication may go to any permitted peer: out of the relay socket.
    send = Message(Method.SEND, Class.INDICATION, None, [(Attr.XOR_PEER_ADDRESS, PEER2), (Attr.DATA, b"x")])
    assert client.send(send.encode()) == (b"x", PEER2, lab.binder.sinks[relay])
    assert lab.server.from_peer(relay, b"z", PEER2, NOW)[1:] == (client.addr, to_client)


def test_a_stream_client_gets_connected_sockets_for_its_channels_only():
    lab = connecting_lab()
    client = lab.client(stream=True)
    client.allocate()
    ok(bind_channel(client))
    assert list(connected_sinks(lab)) == [("peer", relay_of(lab), PEER)]


def test_connected_sockets_close_with_their_channel_and_allocation():
    lab = connecting_lab()
    client = lab.client()
    client.allocate((Attr.LIFETIME, 3600))
    ok(bind_channel(client))
    ok(bind_channel(client, 0x4002, PEER2))
    relay = relay_of(lab)
    sinks = connected_sinks(lab)
    ok(bind_channel(client, 0x4002, PEER2, now=NOW + 500))
    lab.take_events()
    lab.server.handle_timer(NOW + 600)
    assert lab.take_events() == [CloseConnected(sinks["peer", relay, PEER])]
    ok(client.request(Method.REFRESH, (Attr.LIFETIME, 0), now=NOW + 601))
    events = lab.take_events()
    assert CloseRelay(relay) in events
    assert [e for e in events if isinstance(e, CloseConnected)] == [
        CloseConnected(sinks["client", LISTENER, client.addr]), CloseConnected(sinks["peer", relay, PEER2])]


def test_send_and_data_indications(lab):
    client = lab.client()
    client.allocate()
    ok(permit(client, PEER))
    relay = relay_of(lab)
    send = Message(Method.SEND, Class.INDICATION, None, [(Attr.XOR_PEER_ADDRESS, PEER), (Attr.DATA, b"hello")])
    assert client.send(send.encode()) == (b"hello", PEER, lab.binder.sinks[relay])
    # Any attribute order, DONT-FRAGMENT and FINGERPRINT are fine too.
    send = Message(Method.SEND, Class.INDICATION, None, [(Attr.DONT_FRAGMENT, True), (Attr.DATA, b"hi"),
                                                         (Attr.XOR_PEER_ADDRESS, PEER)])
    assert client.send(send.encode(fingerprint=True))[0] == b"hi"
    data, addr, sink = lab.server.from_peer(relay, b"world!", PEER, NOW)
    indication = Message.parse(data)
    assert (indication.method, indication.message_class) == (Method.DATA, Class.INDICATION)
    assert indication.get(Attr.XOR_PEER_ADDRESS) == PEER and indication.get(Attr.DATA) == b"world!"
    assert (addr, sink) == (client.addr, client.sink)


def test_send_and_data_indications_ipv6(lab):
    client = lab.client()
    client.allocate((Attr.REQUESTED_ADDRESS_FAMILY, 2))
    ok(permit(client, PEER6))
    send = Message(Method.SEND, Class.INDICATION, None, [(Attr.XOR_PEER_ADDRESS, PEER6), (Attr.DATA, b"x")])
    assert client.send(send.encode())[:2] == (b"x", PEER6)
    data, _, _ = lab.server.from_peer(relay_of(lab), b"y", (PEER6[0], PEER6[1], 0, 0), NOW)
    assert Message.parse(data).get(Attr.XOR_PEER_ADDRESS) == PEER6


# XOR-PEER-ADDRESS of PEER, as an attribute.
XOR_PEER_RAW = Message(Method.SEND, Class.INDICATION, bytes(12), [(Attr.XOR_PEER_ADDRESS, PEER)]).encode()[20:]


def raw_send(*attributes):
    """A Send indication with DATA "x" first, then `attributes` as given."""
    body = struct.pack(">HH", Attr.DATA, 1) + b"x\0\0\0" + b"".join(attributes)
    return struct.pack(">HHI12s", 0x0016, len(body), 0x2112A442, bytes(12)) + body


@pytest.mark.parametrize(
    "send",
    [
        Message(Method.SEND, Class.INDICATION, None, [(Attr.DATA, b"no peer")]).encode(),
        Message(Method.SEND, Class.INDICATION, None, [(Attr.XOR_PEER_ADDRESS, PEER)]).encode(),
        Message(Method.SEND, Class.INDICATION, None, [(Attr.XOR_PEER_ADDRESS, PEER), (Attr.DATA, b"x"),
                                                      (0x0031, b"unknown")]).encode(),
        Message(Method.SEND, Class.INDICATION, None, [(Attr.XOR_PEER_ADDRESS, PEER2), (Attr.DATA, b"x")]).encode(),
        Message(Method.SEND, Class.INDICATION, None, [(Attr.XOR_PEER_ADDRESS, (PEER[0], 0)), (Attr.DATA, b"x")]).encode(),
        Message(Method.SEND, Class.INDICATION, None, [(Attr.XOR_PEER_ADDRESS, PEER), (Attr.DATA, b"x")]).encode()[:-4],
        # Bad FINGERPRINT: its last byte flipped (set to 0, it was right one time in 256).
        (lambda m: m[:-1] + bytes([m[-1] ^ 0xFF]))(Message(
            Method.SEND, Class.INDICATION, None, [(Attr.XOR_PEER_ADDRESS, PEER), (Attr.DATA, b"x")]).encode(
            fingerprint=True)),
        raw_send(struct.pack(">HHI", Attr.FINGERPRINT, 4, 0), XOR_PEER_RAW),  # FINGERPRINT not last
        raw_send(XOR_PEER_RAW[:5] + b"\x03" + XOR_PEER_RAW[6:]),  # address family 3
        raw_send(XOR_PEER_RAW[:2] + b"\x00\x0c" + XOR_PEER_RAW[4:] + bytes(4)),  # IPv4 family, 12 bytes
        raw_send(struct.pack(">HH", Attr.DATA, 9)),  # runs past the end
        b"\x00\x16\x00\x00",
    ],
)
def test_bad_send_indications_are_dropped(lab, send):
    client = lab.client()
    client.allocate()
    ok(permit(client, PEER))
    assert client.send(send) is None
    assert client.received() == []


def test_peer_data_too_big_for_a_data_indication_is_dropped(lab):
    client = lab.client()
    client.allocate()
    ok(permit(client, PEER))
    assert lab.server.from_peer(relay_of(lab), bytes(65505), PEER, NOW) is None
    assert lab.server.from_peer(relay_of(lab), bytes(65504), PEER, NOW) is not None


def test_data_from_a_peer_without_permission_is_dropped(lab):
    client = lab.client()
    client.allocate()
    ok(permit(client, PEER))
    relay = relay_of(lab)
    assert lab.server.from_peer(relay, b"x", PEER2, NOW) is None
    assert lab.server.counters.no_permission == 1
    # A permission covers every port of the peer's address.
    assert lab.server.from_peer(relay, b"x", (PEER[0], 9), NOW) is not None


def test_channel_data_without_channel_or_allocation_is_dropped(lab):
    client = lab.client()
    assert client.send(pack_channel_data(0x4001, b"x")) is None
    client.allocate()
    assert client.send(pack_channel_data(0x4001, b"x")) is None
    ok(bind_channel(client))
    assert client.send(b"\x40\x01\x00\x09short") is None  # length beyond the datagram
    assert lab.server.counters.unmatched == 2 and lab.server.counters.malformed == 1


def test_permission_expires_after_300_seconds_unless_refreshed(lab):
    client = lab.client()
    client.allocate((Attr.LIFETIME, 3600))
    ok(permit(client, PEER, PEER2))
    ok(permit(client, PEER2, now=NOW + 200))
    relay = relay_of(lab)
    lab.server.handle_timer(NOW + 300)
    assert lab.server.from_peer(relay, b"x", PEER, NOW + 300) is None
    assert lab.server.from_peer(relay, b"x", PEER2, NOW + 300) is not None
    lab.server.handle_timer(NOW + 500)
    assert lab.server.from_peer(relay, b"x", PEER2, NOW + 500) is None


def test_channel_lasts_600_seconds_and_refreshes_its_permission(lab):
    client = lab.client()
    client.allocate((Attr.LIFETIME, 3600))
    ok(bind_channel(client))
    ok(bind_channel(client, now=NOW + 290))  # refreshes channel and permission
    lab.server.handle_timer(NOW + 500)
    assert client.send(pack_channel_data(0x4001, b"x"), NOW + 500) is not None
    lab.server.handle_timer(NOW + 590)  # the permission from t=290 has expired
    assert client.send(pack_channel_data(0x4001, b"x"), NOW + 590) is None
    ok(permit(client, PEER, now=NOW + 591))
    assert client.send(pack_channel_data(0x4001, b"x"), NOW + 591) is not None
    lab.server.handle_timer(NOW + 890)
    (allocation,) = lab.server.allocations
    assert not allocation.channels and not allocation.peer_channels
    # Without a channel the peer's data comes as a Data indication.
    data = lab.server.from_peer(relay_of(lab), b"y", PEER, NOW + 891)[0]
    assert Message.parse(data).method == Method.DATA


def test_channel_bind_rules(lab):
    client = lab.client()
    client.allocate()
    ok(bind_channel(client, 0x4001, PEER))
    ok(bind_channel(client, 0x4001, PEER))  # rebinding the same pair refreshes
    assert error_code(bind_channel(client, 0x4001, PEER2)) == 400  # channel taken by another peer
    assert error_code(bind_channel(client, 0x4002, PEER)) == 400  # peer has another channel
    assert error_code(bind_channel(client, 0x3FFF, PEER2)) == 400
    assert error_code(bind_channel(client, 0x8000, PEER2)) == 400
    assert error_code(client.request(Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4003))) == 400
    # RFC 5766's range: libwebrtc and coturn's client pick channels up to 0x7FFF.
    ok(bind_channel(client, 0x7FFF, PEER2))
    assert client.send(pack_channel_data(0x7FFF, b"x"))[1] == PEER2


# Every denied range of the policy table, every IPv6 spelling of each denied IPv4 address, and the box's own
# relay, less what the harness opens on purpose for its peers (ALLOW).
DENIED_PEERS = sorted(
    host
    for host in {h for h, _ in DENIED_IPV4 + DENIED_IPV6} | {s for h, _ in DENIED_IPV4 for s in spellings(h)} | {RELAY4}
    if not any(canonical(ipaddress.ip_address(host)) in network for network in ALLOW)
)


@pytest.mark.parametrize("peer", [(host, 3478) for host in DENIED_PEERS])
def test_denied_peers_get_403(lab, peer):
    client = lab.client()
    client.allocate((Attr.ADDITIONAL_ADDRESS_FAMILY, 2))
    assert error_code(permit(client, peer)) == 403
    assert error_code(bind_channel(client, 0x4001, peer)) == 403
    # All or nothing: a denied peer among allowed ones installs none.
    assert error_code(permit(client, PEER, peer)) == 403
    (allocation,) = lab.server.allocations
    assert not allocation.permissions


def test_create_permission_needs_a_peer(lab):
    client = lab.client()
    client.allocate()
    assert error_code(client.request(Method.CREATE_PERMISSION)) == 400


def test_peer_cap_gets_508():
    lab = Lab(max_peers=2, new_peers_per_second=0)
    client = lab.client()
    client.allocate()
    ok(permit(client, PEER, PEER2))
    assert error_code(permit(client, ("192.0.2.12", 1))) == 508
    ok(permit(client, PEER))  # refreshing is not a new peer


# --- limits -------------------------------------------------------------------------------------


def test_packet_rate_limit_drops_and_counts():
    lab = Lab(packets_per_second=10, bits_per_second=0)
    client = lab.client()
    client.allocate()
    ok(bind_channel(client))
    relay = relay_of(lab)
    passed = [lab.server.from_peer(relay, b"x", PEER, NOW) is not None for _ in range(15)]
    assert passed == [True] * 10 + [False] * 5
    assert lab.server.counters.rate_limited == 5
    send = Message(Method.SEND, Class.INDICATION, None, [(Attr.XOR_PEER_ADDRESS, PEER), (Attr.DATA, b"x")]).encode()
    assert client.send(send) is None and client.send(pack_channel_data(0x4001, b"x")) is None
    # Tokens come back with time.
    assert client.send(pack_channel_data(0x4001, b"x"), NOW + 0.5) is not None
    (allocation,) = lab.server.allocations
    assert allocation.dropped == 7


def test_byte_rate_limit():
    lab = Lab(packets_per_second=0, bits_per_second=8 * 1000)
    client = lab.client()
    client.allocate()
    ok(bind_channel(client))
    payload = bytes(400)
    sent = [client.send(pack_channel_data(0x4001, payload)) is not None for _ in range(4)]
    assert sent == [True, True, False, False]
    assert client.send(pack_channel_data(0x4001, payload), NOW + 0.4) is not None


def test_new_peer_rate_drops_the_request_silently():
    lab = Lab(new_peers_per_second=1, new_peer_burst=2)
    client = lab.client()
    client.allocate()
    ok(permit(client, PEER, PEER2))
    message = Message(Method.CREATE_PERMISSION, Class.REQUEST, None, [(Attr.XOR_PEER_ADDRESS, ("192.0.2.12", 1)),
                      (Attr.USERNAME, client.username), (Attr.REALM, "edgecall"), (Attr.NONCE, client.nonce)])
    client.send(message.encode(client.key))
    assert client.received() == []
    assert lab.server.counters.peers_limited == 1
    ok(permit(client, PEER))  # known peers still refresh
    ok(permit(client, ("192.0.2.12", 1), now=NOW + 1))
    bind = Message(Method.CHANNEL_BIND, Class.REQUEST, None, [(Attr.CHANNEL_NUMBER, 0x4001),
                   (Attr.XOR_PEER_ADDRESS, ("192.0.2.13", 1)), (Attr.USERNAME, client.username),
                   (Attr.REALM, "edgecall"), (Attr.NONCE, client.nonce)])
    client.send(bind.encode(client.key), NOW + 1)
    assert client.received() == [] and lab.server.counters.peers_limited == 2


# --- revocation and accounting ---------------------------------------------------------------


def test_revoke_ends_allocations_and_refuses_the_username(lab):
    client = lab.client()
    client.allocate()
    relay = relay_of(lab)
    assert lab.server.revoke(client.username, NOW) == 1
    assert not lab.server.allocations
    assert CloseRelay(relay) in lab.take_events()
    assert error_code(client.allocate()) == 401
    # Kept until the username itself expires.
    assert client.username in lab.server.revocations
    lab.wall = NOW + 3601
    lab.server.handle_timer(NOW + 3601)
    assert client.username not in lab.server.revocations


def test_revoked_username_cannot_refresh():
    lab = Lab()
    client = lab.client()
    client.allocate()
    lab.server.revocations.add(client.username, NOW, NOW)
    assert error_code(client.request(Method.REFRESH)) == 401


def test_usage_of_an_identifier_with_several_allocations(lab):
    first, second = lab.client(("198.51.100.20", 1)), lab.client(("198.51.100.20", 2))
    first.allocate()
    second.allocate()
    first.request(Method.REFRESH, (Attr.LIFETIME, 0), now=NOW + 5)
    assert lab.server.usage_by_identifier(NOW + 10)["alice"].allocations == 2
    lab.server.handle_timer(NOW + 5 + 3600)
    assert lab.server.usage_by_identifier(NOW + 3605)["alice"].allocations == 2  # one is still live


def test_from_config():
    turn = TurnConfig(secrets=("s",), relay_address=ipaddress.ip_address("203.0.113.5"),
                      relay_ports=PortRange(50000, 50010), allow_peers=(ipaddress.ip_network("192.0.2.0/24"),))
    server = TurnServer.from_config(turn, RecordingBinder(), own=[ipaddress.ip_address("203.0.113.10")],
                                    wall=lambda: NOW)
    assert server.settings.relay_addresses == ("203.0.113.5",) and server.settings.relay_ports == (50000, 50010)
    assert server.policy.permits("192.0.2.1")
    assert not server.policy.permits("203.0.113.5") and not server.policy.permits("203.0.113.10")
    assert not server.policy.permits("127.0.0.1")  # the default listeners' address, and loopback
    username, password = server.credentials.mint(NOW, 10)
    assert username == str(int(NOW) + 10)


def test_usage_per_allocation_and_identifier(lab):
    alice = lab.client(("198.51.100.20", 1))
    alice.allocate()
    ok(bind_channel(alice))
    bob = lab.client(("198.51.100.20", 2), identifier="bob")
    bob.allocate()
    relay = relay_of(lab)
    alice.send(pack_channel_data(0x4001, b"12345"))
    lab.server.from_peer(relay, b"123", PEER, NOW)
    lab.server.from_peer(relay, b"123", PEER2, NOW)  # dropped: no permission
    usage = lab.server.usage_by_identifier(NOW + 10)
    assert usage["alice"].bytes_from_client == 5 and usage["alice"].packets_from_client == 1
    assert usage["alice"].bytes_to_client == 3 and usage["alice"].dropped == 1
    assert usage["alice"].allocations == 1 and usage["alice"].seconds == 10
    assert usage["bob"].bytes_from_client == 0
    # Ended allocations stay in the totals, for `usage_retention` seconds.
    alice.request(Method.REFRESH, (Attr.LIFETIME, 0), now=NOW + 20)
    usage = lab.server.usage_by_identifier(NOW + 30)
    assert usage["alice"].bytes_from_client == 5 and usage["alice"].seconds == 20
    lab.server.handle_timer(NOW + 20 + 3600)
    assert "alice" not in lab.server.usage_by_identifier(NOW + 20 + 3600)
