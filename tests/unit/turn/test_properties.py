"""Property tests of the server core: any input, in any order, raises nothing, and once
everything has expired no state is left behind."""
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.stun import Attr, Class, Message, Method, pack_channel_data
from appliance.turn import CloseConnected, ConnectToPeer
from tests.unit.stun.test_properties import mutated as mutated_stun
from tests.unit.turn.harness import NOW, PEER, PEER2, PEER6, Lab, Sink

UDP_ADDR = ("198.51.100.20", 40000)
TCP_ADDR = ("198.51.100.21", 40000)


def _signed(client, method, *attributes, tid):
    message = Message(method, Class.REQUEST, tid, attributes)
    message.add(Attr.USERNAME, client.username).add(Attr.REALM, "edgecall").add(Attr.NONCE, client.nonce)
    return message.encode(client.key, fingerprint=tid[0] % 2 == 0)


def _corpus() -> list[bytes]:
    """Messages real clients send, signed with the nonce every fresh Lab issues at NOW."""
    lab = Lab()
    udp, tcp = lab.client(UDP_ADDR), lab.client(TCP_ADDR)
    udp.allocate()
    tcp.allocate()
    out = []
    for i, (client, method, attributes) in enumerate([
        (udp, Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, 17)]),
        (udp, Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, 17), (Attr.EVEN_PORT, True)]),
        (udp, Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, 17), (Attr.ADDITIONAL_ADDRESS_FAMILY, 2)]),
        (udp, Method.CREATE_PERMISSION, [(Attr.XOR_PEER_ADDRESS, PEER), (Attr.XOR_PEER_ADDRESS, PEER6)]),
        (udp, Method.CREATE_PERMISSION, [(Attr.XOR_PEER_ADDRESS, PEER2)]),
        (udp, Method.CHANNEL_BIND, [(Attr.CHANNEL_NUMBER, 0x4001), (Attr.XOR_PEER_ADDRESS, PEER)]),
        (udp, Method.CHANNEL_BIND, [(Attr.CHANNEL_NUMBER, 0x4002), (Attr.XOR_PEER_ADDRESS, PEER6)]),
        (udp, Method.REFRESH, [(Attr.LIFETIME, 3600)]),
        (udp, Method.REFRESH, [(Attr.LIFETIME, 0)]),
        (tcp, Method.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, 6)]),
        (tcp, Method.CREATE_PERMISSION, [(Attr.XOR_PEER_ADDRESS, PEER)]),
        (tcp, Method.CONNECT, [(Attr.XOR_PEER_ADDRESS, PEER2)]),
        (tcp, Method.CONNECTION_BIND, [(Attr.CONNECTION_ID, 1)]),
        (udp, Method.BINDING, []),
    ]):
        out.append(_signed(client, method, *attributes, tid=bytes([i]) * 12))
    out.append(Message(Method.SEND, Class.INDICATION, None, [(Attr.XOR_PEER_ADDRESS, PEER),
                                                             (Attr.DATA, b"data")]).encode())
    out.append(Message(Method.SEND, Class.INDICATION, None, [(Attr.XOR_PEER_ADDRESS, PEER6), (Attr.DATA, b"six"),
                                                             (Attr.DONT_FRAGMENT, True)]).encode(fingerprint=True))
    out.append(pack_channel_data(0x4001, b"channel data"))
    out.append(pack_channel_data(0x4002, b"padded", stream=True))
    return out


CORPUS = _corpus()


@st.composite
def mutation(draw):
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[pos:]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
    return bytes(data)


PACKETS = st.one_of(st.sampled_from(CORPUS), mutation(), mutated_stun(), st.binary(max_size=80))
KINDS = ["udp", "stream", "peer", "peer_stream", "connected", "failed", "accepted", "peer_closed", "stream_closed",
         "time"]
OPERATIONS = st.lists(st.tuples(st.sampled_from(KINDS), PACKETS), max_size=30)


class Run:
    """One server and its clients, driven by a list of operations."""

    def __init__(self, connects=False):
        self.lab = Lab()
        self.lab.binder.connects = connects
        self.closed = Counter()  # connected sockets' sinks closed, and how often
        self.server = self.lab.server
        self.udp = self.lab.client(UDP_ADDR)
        self.streams = [self.lab.client(TCP_ADDR, stream=True), self.lab.client(("198.51.100.21", 40001), stream=True)]
        self.connections = []
        self.now = NOW

    def do(self, kind, packet):
        server, size = self.server, len(packet)
        if kind == "udp":
            server.from_client(self.udp.listener, packet, self.udp.addr, self.now)
        elif kind == "stream":
            self.streams[size % 2].send(packet, self.now)
        elif kind == "peer":
            for relay in list(self.lab.binder.udp):
                server.from_peer(relay, packet, (PEER, (PEER6[0], PEER6[1], 0, 0))[size % 2], self.now)
        elif kind == "peer_stream" and self.connections:
            server.peer_stream_received(self.connections[size % len(self.connections)], packet, self.now)
        elif kind in ("connected", "failed", "peer_closed") and self.connections:
            connection = self.connections[size % len(self.connections)]
            if kind == "connected":
                server.peer_connected(connection, Sink(f"peer {connection}"), self.now)
            elif kind == "failed":
                server.peer_connect_failed(connection, self.now)
            else:
                server.peer_closed(connection, self.now)
        elif kind == "accepted":
            for relay in list(self.lab.binder.tcp):
                accepted = server.peer_accepted(relay, PEER, Sink("inbound"), self.now)
                if accepted is not None:
                    self.connections.append(accepted)
        elif kind == "stream_closed":
            server.stream_closed(self.streams[size % 2].stream, self.now)
        elif kind == "time":
            self.now += size * 7
            server.handle_timer(self.now)
        for event in self.lab.take_events():
            if isinstance(event, ConnectToPeer):
                self.connections.append(event.connection_id)
            elif isinstance(event, CloseConnected):
                self.closed[event.sink] += 1
        self.lab.take_sent()
        for client in (self.udp, *self.streams):
            client.received()


@settings(max_examples=400, deadline=None)
@given(OPERATIONS, st.booleans())
def test_server_core_survives_anything_and_leaks_nothing(operations, connects):
    run = Run(connects)
    for kind, packet in operations:
        run.do(kind, packet)
    server = run.server
    # Run the clock as the shell does, from timer to timer, until nothing is scheduled:
    # then nothing may be left.
    for _ in range(10_000):
        timer = server.get_timer()
        if timer is None:
            break
        run.now = max(run.now, timer)
        server.handle_timer(run.now)
        run.do("time", b"")
    assert server.get_timer() is None
    # Every connected socket the shell gave was closed, once.
    assert run.closed == Counter(list(run.lab.binder.connected))
    assert not server.allocations
    assert not server._relays and not server._connections and not server._by_username
    assert not run.udp.listener.allocations
    assert all(s.stream.allocation is None for s in run.streams)
    assert server.ports.in_use() == 0 and server.ports.reservations == 0
    assert len(server.usage_book) == 0 and len(server.revocations) == 0


def test_the_corpus_builds_real_state():
    run = Run()
    for packet in CORPUS:
        run.do("udp", packet)
        run.do("stream", packet)
    run.do("accepted", b"")
    assert run.server.allocations and run.connections
