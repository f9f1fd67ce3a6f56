"""TCP/TLS client connections are bounded: one that holds no allocation is closed after
`stream_idle_timeout`, and at most `max_streams` are open at once (issue 12, item 3)."""
from appliance.stun import Attr, Method
from appliance.turn import CloseStream
from tests.unit.turn.harness import LISTENER, NOW, PEER, Lab, Sink, ok
from tests.unit.turn.test_streams import TcpRelay

TIMEOUT = 5.0


def test_a_connection_that_never_allocates_is_closed_after_the_timeout():
    lab = Lab(stream_idle_timeout=TIMEOUT)
    client = lab.client(stream=True)
    assert lab.server.get_timer() == NOW + TIMEOUT
    lab.server.handle_timer(NOW + TIMEOUT - 0.1)
    assert lab.take_events() == []
    lab.server.handle_timer(NOW + TIMEOUT)
    assert lab.take_events() == [CloseStream(client.sink)]
    assert lab.server.counters.idle_streams == 1
    # Counted until the shell reports the socket gone.
    assert lab.server.streams == 1
    lab.server.stream_closed(client.stream, NOW + TIMEOUT)
    assert lab.server.streams == 0


def test_requests_without_an_allocation_do_not_keep_it_open():
    lab = Lab(stream_idle_timeout=TIMEOUT)
    client = lab.client(stream=True)
    ok(client.request(Method.BINDING, sign=False, now=NOW + TIMEOUT - 1))
    lab.server.handle_timer(NOW + TIMEOUT)
    assert CloseStream(client.sink) in lab.take_events()


def test_a_connection_with_an_allocation_stays_and_gets_the_timeout_again_when_it_ends():
    lab = Lab(stream_idle_timeout=TIMEOUT)
    client = lab.client(stream=True)
    ok(client.allocate())
    lab.server.handle_timer(NOW + 100)
    assert lab.take_events() == [] and lab.server.allocations
    ok(client.request(Method.REFRESH, (Attr.LIFETIME, 0), now=NOW + 100))
    lab.take_events()  # the relay's close
    lab.server.handle_timer(NOW + 100 + TIMEOUT - 0.1)
    assert lab.take_events() == []
    lab.server.handle_timer(NOW + 100 + TIMEOUT)
    assert lab.take_events() == [CloseStream(client.sink)]


def test_a_bound_rfc6062_data_connection_is_not_idle():
    lab = Lab(stream_idle_timeout=TIMEOUT)
    tcp = TcpRelay(lab)
    ok(tcp.control.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, PEER)))
    _, (event,) = tcp.connect()
    lab.server.peer_connected(event.connection_id, Sink("peer"), NOW)
    tcp.control.received()
    data = tcp.data_connection()
    data.send(tcp.signed(Method.CONNECTION_BIND, (Attr.CONNECTION_ID, event.connection_id)).encode(data.key))
    lab.server.handle_timer(NOW + 100)
    assert CloseStream(data.sink) not in lab.take_events()
    assert lab.server.peer_stream_received(event.connection_id, b"x", NOW + 100) == (b"x", None, data.sink)


def test_connections_past_max_streams_are_refused_and_counted():
    lab = Lab(max_streams=3)
    clients = [lab.client(("198.51.100.20", port), stream=True) for port in (1, 2, 3)]
    assert lab.server.stream_opened("tcp", LISTENER, ("198.51.100.20", 4), Sink("fourth"), NOW) is None
    assert lab.server.counters.streams_refused == 1 and lab.server.streams == 3
    lab.server.stream_closed(clients[0].stream, NOW)
    assert lab.server.stream_opened("tcp", LISTENER, ("198.51.100.20", 4), Sink("fourth"), NOW) is not None


def test_connections_closed_by_the_core_count_until_the_shell_reports_them_gone():
    lab = Lab(max_streams=1)
    client = lab.client(stream=True)
    client.send(b"\x80\x00\x00\x00")  # garbage: the core closes it
    assert CloseStream(client.sink) in lab.take_events()
    assert lab.server.stream_opened("tcp", LISTENER, ("198.51.100.20", 4), Sink("next"), NOW) is None
    lab.server.stream_closed(client.stream, NOW)
    assert lab.server.stream_opened("tcp", LISTENER, ("198.51.100.20", 4), Sink("next"), NOW) is not None
