"""TURN over TCP/TLS streams, and RFC 6062 TCP relays: Connect, ConnectionAttempt, ConnectionBind."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.stun import Attr, Class, Message, Method, pack_channel_data
from appliance.turn import CloseRelay, CloseStream, ConnectToPeer
from tests.unit.turn.harness import NOW, PEER, PEER2, Lab, Sink, error_code, ok


@pytest.fixture
def lab():
    return Lab()


def test_udp_relay_over_a_tcp_control_connection(lab):
    client = lab.client(stream=True)
    ok(client.allocate())
    ok(client.request(Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4001), (Attr.XOR_PEER_ADDRESS, PEER)))
    relay = list(lab.binder.udp)[0]
    # Several frames in one chunk, split anywhere: each is relayed.
    chunk = pack_channel_data(0x4001, b"abc", stream=True) * 3
    client.send(chunk[:5])
    client.send(chunk[5:])
    assert [(d, a) for d, a, _ in lab.take_sent()] == [(b"abc", PEER)] * 3
    # Toward a stream client ChannelData is padded, and there is no address.
    data, addr, sink = lab.server.from_peer(relay, b"hello", PEER, NOW)
    assert (data, addr, sink) == (b"\x40\x01\x00\x05hello\x00\x00\x00", None, client.sink)


def test_a_stream_says_whether_it_did_more_than_relay(lab):
    client = lab.client(stream=True)
    ok(client.allocate())
    ok(client.request(Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4001), (Attr.XOR_PEER_ADDRESS, PEER)))
    server, stream = lab.server, client.stream
    # Data that looks like a whole frame of its own, after a header the framer holds: it is that header's.
    frame = pack_channel_data(0x4001, b"\x40\x00\x00\x00", stream=True)
    whole = pack_channel_data(0x4001, b"abc", stream=True)
    for chunk in [whole, frame[:4], frame[4:], whole[:3], whole[3:] + whole, whole + whole + frame[:5], frame[5:]]:
        assert server.stream_received(stream, chunk, NOW) is False  # only relayed: nothing else for the shell
    assert [d for d, _, _ in lab.take_sent()] == [b"abc", b"\x40\x00\x00\x00"] + [b"abc"] * 4 + [b"\x40\x00\x00\x00"]
    assert server.counters.unmatched == server.counters.malformed == 0
    refresh = Message(Method.REFRESH, Class.REQUEST, None, [(Attr.LIFETIME, 600)]).encode()
    assert server.stream_received(stream, whole + refresh, NOW) is True  # answered (401): a flush's work
    assert server.stream_received(stream, b"\x80" * 4, NOW) is True  # garbage: the stream is closed
    assert CloseStream(client.sink) in lab.take_events()


@given(st.lists(st.binary(max_size=9), min_size=1, max_size=5), st.lists(st.integers(0, 80), max_size=4))
def test_frames_are_relayed_alike_wherever_the_stream_is_cut(payloads, cuts):
    lab = Lab()
    client = lab.client(stream=True)
    ok(client.allocate())
    ok(client.request(Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4001), (Attr.XOR_PEER_ADDRESS, PEER)))
    stream = b"".join(pack_channel_data(0x4001, payload, stream=True) for payload in payloads)
    points = sorted({cut % (len(stream) + 1) for cut in cuts})
    for start, end in zip([0, *points], [*points, len(stream)]):
        client.send(stream[start:end])
    assert [data for data, _, _ in lab.take_sent()] == payloads


def test_relayed_frames_on_a_stream_without_allocation_are_dropped(lab):
    client = lab.client(stream=True)
    client.send(pack_channel_data(0x4001, b"x", stream=True))
    assert lab.server.counters.unmatched == 1 and not lab.take_sent()


def test_closing_the_control_connection_deletes_the_allocation(lab):
    client = lab.client(stream=True)
    ok(client.allocate())
    relay = list(lab.binder.udp)[0]
    lab.server.stream_closed(client.stream, NOW)
    assert not lab.server.allocations
    assert CloseRelay(relay) in lab.take_events()


def test_garbage_on_a_stream_closes_it(lab):
    client = lab.client(stream=True)
    ok(client.allocate())
    client.send(b"\x80\x00\x00\x00")
    events = lab.take_events()
    assert CloseStream(client.sink) in events and not lab.server.allocations
    assert lab.server.counters.malformed == 1
    client.send(b"more")  # ignored after close
    assert not lab.take_sent()


class TcpRelay:
    """A client with an RFC 6062 TCP allocation, over a TCP control connection."""

    def __init__(self, lab, addr=("198.51.100.20", 40000)):
        self.lab = lab
        self.control = lab.client(addr, stream=True)
        answer = ok(self.control.allocate(transport=6))
        self.relay_address = answer.get(Attr.XOR_RELAYED_ADDRESS)
        self.relay_id = max(lab.binder.tcp)

    def connect(self, peer=PEER, now=NOW):
        """A Connect request; returns the ConnectToPeer event the core asks the shell for."""
        message = self.signed(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, peer))
        self.control.send(message.encode(self.control.key), now)
        events = [e for e in self.lab.take_events() if isinstance(e, ConnectToPeer)]
        assert self.control.received() == []  # answered once the shell reports back
        return message, events

    def signed(self, method, *attributes):
        message = Message(method, Class.REQUEST, None, attributes)
        control = self.control
        return message.add(Attr.USERNAME, control.username).add(Attr.REALM, "edgecall").add(Attr.NONCE, control.nonce)

    def data_connection(self, addr=("198.51.100.20", 40001)):
        data = self.lab.client(addr, stream=True)
        data.username, data.key, data.nonce = self.control.username, self.control.key, self.control.nonce
        return data


def test_tcp_allocation_listens_on_a_relay_port(lab):
    tcp = TcpRelay(lab)
    assert lab.binder.tcp[tcp.relay_id] == tcp.relay_address
    assert not lab.binder.udp


def test_tcp_allocation_refuses_udp_only_attributes(lab):
    client = lab.client(stream=True)
    assert error_code(client.allocate((Attr.EVEN_PORT, False), transport=6)) == 400
    assert error_code(client.allocate((Attr.DONT_FRAGMENT, True), transport=6)) == 400


def test_connect_then_connection_bind_splices_the_streams(lab):
    tcp = TcpRelay(lab)
    ok(tcp.control.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, PEER)))
    request, (event,) = tcp.connect()
    assert event.relay_id == tcp.relay_id and event.peer == PEER
    peer_sink = Sink("peer")
    assert lab.server.peer_connected(event.connection_id, peer_sink, NOW)
    (answer,) = [Message.parse(d) for d in tcp.control.received()]
    assert answer.transaction_id == request.transaction_id
    assert ok(answer).get(Attr.CONNECTION_ID) == event.connection_id
    assert answer.check_integrity(tcp.control.key)
    # The peer talks before the client binds: held until the bind.
    assert lab.server.peer_stream_received(event.connection_id, b"early", NOW) is None
    data = tcp.data_connection()
    bind = tcp.signed(Method.CONNECTION_BIND, (Attr.CONNECTION_ID, event.connection_id))
    # Bytes after the ConnectionBind in the same chunk already belong to the peer.
    data.send(bind.encode(data.key) + b"first bytes")
    (bound,) = [Message.parse(d) for d in data.received()[:1]]
    assert ok(bound).transaction_id == bind.transaction_id
    assert (b"first bytes", None, peer_sink) in lab.take_sent()
    data.send(b"\x80 raw bytes, not TURN")
    assert lab.take_sent() == [(b"\x80 raw bytes, not TURN", None, peer_sink)]
    assert lab.server.peer_stream_received(event.connection_id, b"reply", NOW) == (b"reply", None, data.sink)


def test_early_peer_bytes_are_delivered_after_the_bind(lab):
    tcp = TcpRelay(lab)
    _, (event,) = tcp.connect()
    lab.server.peer_connected(event.connection_id, Sink("peer"), NOW)
    tcp.control.received()
    lab.server.peer_stream_received(event.connection_id, b"early", NOW)
    data = tcp.data_connection()
    data.send(tcp.signed(Method.CONNECTION_BIND, (Attr.CONNECTION_ID, event.connection_id)).encode(data.key))
    bound, early = data.received()
    assert ok(Message.parse(bound)) and early == b"early"


def test_connect_failure_and_timeout_get_447(lab):
    tcp = TcpRelay(lab)
    _, (event,) = tcp.connect()
    lab.server.peer_connect_failed(event.connection_id, NOW)
    assert error_code(Message.parse(tcp.control.received()[0])) == 447
    _, (event,) = tcp.connect(PEER2)
    lab.server.handle_timer(NOW + 30)
    assert error_code(Message.parse(tcp.control.received()[0])) == 447
    # A late success is refused: the shell closes that connection.
    assert not lab.server.peer_connected(event.connection_id, Sink("late"), NOW + 31)


def test_connect_refusals(lab):
    tcp = TcpRelay(lab)
    tcp.connect()
    assert error_code(tcp.control.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, PEER))) == 446
    assert error_code(tcp.control.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, ("10.0.0.1", 80)))) == 403
    assert error_code(tcp.control.request(Method.CONNECT)) == 400
    assert error_code(tcp.control.request(Method.CHANNEL_BIND, (Attr.CHANNEL_NUMBER, 0x4001),
                                          (Attr.XOR_PEER_ADDRESS, PEER))) == 400
    udp = lab.client(("198.51.100.20", 1))
    udp.allocate()
    assert error_code(udp.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, PEER))) == 400


def test_connect_limits():
    capped = TcpRelay(Lab(max_peers=1))
    capped.connect()
    assert error_code(capped.control.request(Method.CONNECT, (Attr.XOR_PEER_ADDRESS, PEER2))) == 508
    lab = Lab(new_peers_per_second=1, new_peer_burst=1)
    tcp = TcpRelay(lab)
    tcp.connect()
    # Over the new-peers rate the Connect is dropped unanswered, as CreatePermission is.
    assert tcp.connect(PEER2)[1] == []
    assert lab.server.counters.peers_limited == 1


def test_inbound_peer_connection_needs_a_permission(lab):
    tcp = TcpRelay(lab)
    assert lab.server.peer_accepted(12345, PEER, Sink("peer"), NOW) is None
    assert lab.server.peer_accepted(tcp.relay_id, PEER, Sink("peer"), NOW) is None
    ok(tcp.control.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, PEER)))
    connection_id = lab.server.peer_accepted(tcp.relay_id, PEER, Sink("peer"), NOW)
    (attempt,) = [Message.parse(d) for d in tcp.control.received()]
    assert (attempt.method, attempt.message_class) == (Method.CONNECTION_ATTEMPT, Class.INDICATION)
    assert lab.server.peer_accepted(tcp.relay_id, PEER, Sink("same peer again"), NOW) is None
    assert attempt.get(Attr.CONNECTION_ID) == connection_id and attempt.get(Attr.XOR_PEER_ADDRESS) == PEER
    data = tcp.data_connection()
    ok(data.request(Method.CONNECTION_BIND, (Attr.CONNECTION_ID, connection_id)))
    assert lab.server.peer_stream_received(connection_id, b"hi", NOW)[2] is data.sink


def test_unbound_peer_connection_is_closed_after_30_seconds(lab):
    tcp = TcpRelay(lab)
    ok(tcp.control.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, PEER)))
    peer_sink = Sink("peer")
    connection_id = lab.server.peer_accepted(tcp.relay_id, PEER, peer_sink, NOW)
    lab.server.handle_timer(NOW + 30)
    assert CloseStream(peer_sink) in lab.take_events()
    data = tcp.data_connection()
    assert error_code(data.request(Method.CONNECTION_BIND, (Attr.CONNECTION_ID, connection_id))) == 400


def test_connection_bind_refusals(lab):
    tcp = TcpRelay(lab)
    _, (event,) = tcp.connect()
    lab.server.peer_connected(event.connection_id, Sink("peer"), NOW)
    tcp.control.received()
    # Unknown connection, or on the control connection that holds the allocation.
    assert error_code(tcp.data_connection().request(Method.CONNECTION_BIND, (Attr.CONNECTION_ID, 7))) == 400
    assert error_code(tcp.control.request(Method.CONNECTION_BIND, (Attr.CONNECTION_ID, event.connection_id))) == 400
    # Another user cannot take the connection.
    other = lab.client(("198.51.100.30", 1), stream=True, identifier="mallory")
    other.nonce = tcp.control.nonce
    assert error_code(other.request(Method.CONNECTION_BIND, (Attr.CONNECTION_ID, event.connection_id))) == 441
    data = tcp.data_connection()
    assert error_code(data.request(Method.CONNECTION_BIND, (Attr.CONNECTION_ID, event.connection_id),
                                   (0x0031, b"?"))) == 420
    # Over UDP there are no data connections.
    udp = lab.client(("198.51.100.30", 2))
    udp.nonce = tcp.control.nonce
    assert error_code(udp.request(Method.CONNECTION_BIND, (Attr.CONNECTION_ID, event.connection_id))) == 400


def test_either_side_closing_closes_the_other(lab):
    tcp = TcpRelay(lab)
    ids, peer_sinks = [], []
    for peer in (PEER, PEER2):
        _, (event,) = tcp.connect(peer)
        peer_sinks.append(Sink(f"peer {peer}"))
        lab.server.peer_connected(event.connection_id, peer_sinks[-1], NOW)
        ids.append(event.connection_id)
        tcp.control.received()
    first, second = tcp.data_connection(("198.51.100.20", 1)), tcp.data_connection(("198.51.100.20", 2))
    ok(first.request(Method.CONNECTION_BIND, (Attr.CONNECTION_ID, ids[0])))
    ok(second.request(Method.CONNECTION_BIND, (Attr.CONNECTION_ID, ids[1])))
    lab.server.peer_closed(ids[0], NOW)
    assert lab.take_events() == [CloseStream(first.sink)]
    lab.server.stream_closed(first.stream, NOW)  # the shell reports the close it made
    lab.server.stream_closed(second.stream, NOW)
    assert lab.take_events() == [CloseStream(peer_sinks[1])]
    (allocation,) = lab.server.allocations
    assert not allocation.connections
    assert lab.server.peer_stream_received(ids[1], b"late", NOW) is None


def test_deleting_a_tcp_allocation_closes_its_connections(lab):
    tcp = TcpRelay(lab)
    _, (event,) = tcp.connect()
    peer_sink = Sink("peer")
    lab.server.peer_connected(event.connection_id, peer_sink, NOW)
    tcp.control.received()
    data = tcp.data_connection()
    ok(data.request(Method.CONNECTION_BIND, (Attr.CONNECTION_ID, event.connection_id)))
    ok(tcp.control.request(Method.REFRESH, (Attr.LIFETIME, 0)))
    events = lab.take_events()
    assert CloseRelay(tcp.relay_id) in events and CloseStream(peer_sink) in events
    assert CloseStream(data.sink) in events


def test_peer_bytes_beyond_the_buffer_before_the_bind_close_the_connection():
    lab = Lab(connection_buffer=10)
    tcp = TcpRelay(lab)
    _, (event,) = tcp.connect()
    peer_sink = Sink("peer")
    lab.server.peer_connected(event.connection_id, peer_sink, NOW)
    assert lab.server.peer_stream_received(event.connection_id, b"0123456789", NOW) is None
    assert lab.server.peer_stream_received(event.connection_id, b"!", NOW) is None
    assert CloseStream(peer_sink) in lab.take_events()
