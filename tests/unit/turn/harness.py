"""An in-memory TURN client and a recording binder: the server core tested without sockets."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from appliance.stun import Attr, Class, Message, Method, long_term_key
from appliance.turn import PeerPolicy, RestCredentials, TurnServer, TurnSettings

SECRET = "rest-secret"
REALM = "edgecall"
RELAY4 = "203.0.113.1"
RELAY6 = "2001:db8::1"
LISTENER = ("203.0.113.1", 3478)
# The fake clock: tests pass it as `now` (the event loop's monotonic time); the Lab's wall clock reads the
# same until a test moves it.
NOW = 1_700_000_000.0
# Peers live in the documentation ranges, opened on purpose as the lab's config does.
ALLOW = [ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8:5::/48")]
PEER = ("192.0.2.10", 3480)
PEER2 = ("192.0.2.11", 3481)
PEER6 = ("2001:db8:5::10", 3480)


@dataclass(eq=False)
class Sink:
    name: str

    def __repr__(self) -> str:
        return f"Sink({self.name})"


@dataclass
class RecordingBinder:
    """Binds every port except those in `taken`; remembers what is bound. Connected sockets are made
    only when `connects` is set (as a shell without them would, the core then uses the listener and
    relay sinks); `connected` maps each one's sink to what it was made for."""

    taken: set[int] = field(default_factory=set)
    udp: dict[int, tuple[str, int, bool]] = field(default_factory=dict)
    tcp: dict[int, tuple[str, int]] = field(default_factory=dict)
    sinks: dict[int, Sink] = field(default_factory=dict)
    connects: bool = False
    connected: dict[Sink, tuple[Any, ...]] = field(default_factory=dict)

    def bind_udp(self, relay_id: int, address: str, port: int, dont_fragment: bool) -> Sink | None:
        if port in self.taken:
            return None
        self.udp[relay_id] = (address, port, dont_fragment)
        self.sinks[relay_id] = Sink(f"relay{relay_id}")
        return self.sinks[relay_id]

    def listen_tcp(self, relay_id: int, address: str, port: int) -> bool:
        if port in self.taken:
            return False
        self.tcp[relay_id] = (address, port)
        return True

    def connect_client(self, listener: Any, remote: Any) -> Sink | None:
        return self._connect("client", listener.address, remote)

    def connect_peer(self, relay_id: int, peer: Any) -> Sink | None:
        return self._connect("peer", relay_id, peer)

    def _connect(self, *made_for: Any) -> Sink | None:
        if not self.connects:
            return None
        sink = Sink(f"connected{made_for}")
        self.connected[sink] = made_for
        return sink


class Lab:
    """A server with a recording binder; `pump()` sorts its output into client inboxes,
    `sent` (everything for other sinks: relays, peers) and `events`. `wall` is the fake wall
    clock the server reads usernames' expiries on (Unix seconds): set it to move that clock."""

    def __init__(self, relays=(RELAY4, RELAY6), ports=(50000, 50099), keys: dict[str, str] | None = None,
                 **settings: Any) -> None:
        self.binder = RecordingBinder()
        self.wall = NOW
        self.server = TurnServer(
            TurnSettings(relay_addresses=tuple(relays), relay_ports=ports, **settings),
            RestCredentials([SECRET, "old-secret"], 48 * 3600, keys),
            PeerPolicy(ALLOW, own=[RELAY4, RELAY6]),
            self.binder,
            wall=lambda: self.wall,
            nonce_key=b"k" * 32,
        )
        self.inboxes: dict[Sink, list[bytes]] = {}
        self.sent: list[tuple[bytes, Any, Any]] = []
        self.events: list[Any] = []

    def pump(self) -> None:
        for data, addr, sink in self.server.datagrams_to_send():
            if sink in self.inboxes:
                self.inboxes[sink].append(data)
            else:
                self.sent.append((data, addr, sink))
        while (event := self.server.next_event()) is not None:
            self.events.append(event)

    def take_sent(self) -> list[tuple[bytes, Any, Any]]:
        self.pump()
        sent, self.sent = self.sent, []
        return sent

    def take_events(self) -> list[Any]:
        self.pump()
        events, self.events = self.events, []
        return events

    def client(self, addr: Any = ("198.51.100.20", 40000), **options: Any) -> TurnClient:
        return TurnClient(self, addr, **options)


class TurnClient:
    """A TURN client speaking to the core over a UDP listener or a stream; answers are parsed.
    Its credential, minted at the lab's wall clock, is signed with `secret`, or minted by the server
    for the TURN key `issuer`."""

    def __init__(self, lab: Lab, addr: Any, *, stream: bool = False, identifier: str = "alice", ttl: int = 3600,
                 secret: str = SECRET, issuer: str | None = None, now: float = NOW) -> None:
        self.lab = lab
        self.server = lab.server
        self.addr = addr
        if issuer is None:
            username, password = RestCredentials([secret], 48 * 3600).mint(lab.wall, ttl, identifier)
        else:
            username, password = lab.server.credentials.mint(lab.wall, ttl, identifier, issuer)
        self.username = username
        self.key = long_term_key(username, REALM, password)
        self.nonce: str | None = None
        self.sink = Sink(f"client{addr}")
        lab.inboxes[self.sink] = []
        if stream:
            self.stream = self.server.stream_opened("tcp", LISTENER, addr, self.sink, now)
            self.listener = None
        else:
            self.stream = None
            self.listener = self.server.udp_listener(LISTENER, self.sink)

    def send(self, data: bytes, now: float = NOW) -> Any:
        """Feed bytes to the server as this client; returns what a UDP hot path returned."""
        if self.stream is not None:
            self.server.stream_received(self.stream, data, now)
            return None
        return self.server.from_client(self.listener, data, self.addr, now)

    def received(self) -> list[bytes]:
        """Everything the server queued for this client since the last call."""
        self.lab.pump()
        mine, self.lab.inboxes[self.sink] = self.lab.inboxes[self.sink], []
        return mine

    def request(self, method: int, *attributes: tuple[int, Any], now: float = NOW, sign: bool = True,
                sha256: bool = False, fingerprint: bool = False) -> Message:
        """Send a request, signed with the long-term key when `sign` and a nonce is known;
        one 401/438 challenge is answered by retrying with the new nonce."""
        for _ in range(2):
            message = Message(method, Class.REQUEST, None, attributes)
            key = None
            if sign and self.nonce is not None:
                message.add(Attr.USERNAME, self.username).add(Attr.REALM, REALM).add(Attr.NONCE, self.nonce)
                key = self.key
            self.send(message.encode(key, sha256=sha256, fingerprint=fingerprint), now)
            answers = [Message.parse(data) for data in self.received()]
            assert len(answers) == 1, answers
            answer = answers[0]
            assert answer.transaction_id == message.transaction_id
            code = answer.get(Attr.ERROR_CODE, (0, ""))[0]
            if sign and code in (401, 438) and Attr.NONCE in answer:
                self.nonce = answer.get(Attr.NONCE)
                if key is None or code == 438:
                    continue
            return answer
        return answer

    def allocate(self, *attributes: tuple[int, Any], now: float = NOW, transport: int = 17) -> Message:
        return self.request(Method.ALLOCATE, (Attr.REQUESTED_TRANSPORT, transport), *attributes, now=now)


def ok(message: Message) -> Message:
    assert message.message_class == Class.SUCCESS, message
    return message


def error_code(message: Message) -> int:
    assert message.message_class == Class.ERROR, message
    return message.get(Attr.ERROR_CODE)[0]
