"""The TURN server core: RFC 8656 (and RFC 5766 clients), RFC 6156 IPv6, RFC 6062 TCP relays.

Sans-I/O. The asyncio shell feeds it bytes and the time (`now`, the event loop's monotonic
clock, for every lifetime, timer, rate and duration) and sends what it gets back. What is
stamped in Unix time, the expiry of REST usernames, is read on `wall`, the wall clock the shell
injects (credentials.py):

- Relay hot paths return `(data, addr, sink)` for the shell to `sink.sendto(data, addr)`,
  or None: `from_client` (a client's UDP datagram), `from_peer` (a peer's UDP datagram
  on a relay socket), `peer_stream_received` (bytes from an RFC 6062 peer connection).
  One call per packet: two or three dict lookups, counters and a slice; no parsing
  beyond the ChannelData header or one scan of a Send indication.
- Everything else is queued: after any call, send `datagrams_to_send()` and then carry
  out `next_event()` until None (close relays and streams, connect to peers). A stream's
  bytes that only carried data to relay (`stream_received` gives False) queue datagrams only.
- Relay sockets are bound through the `RelayBinder` the shell provides, synchronously,
  because the Allocate answer depends on it. So are the connected sockets that carry a UDP
  client's traffic and a channel's (where the shell has them), closed by `CloseConnected`.
- `get_timer()` says when to call `handle_timer(now)` next.
"""
from __future__ import annotations

import itertools
import math
import os
import struct
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from appliance.stun import (
    FAMILY_IPV4, FAMILY_IPV6, REASONS, TRANSPORT_TCP, TRANSPORT_UDP, Attr, Class, Message, Method, StunError,
    is_channel_number,
)
from appliance.stun.channeldata import PADDING

from ..plumbing.buckets import TokenBucket, unlimited
from ..plumbing.deadlines import Deadlines
from .allocation import Allocation, Channel, ConnectionState, PeerConnection, Permission, Relay, family_of, peer_key
from .auth import Auth, Authenticator
from .clients import StreamClient, UdpClient, UdpListener
from .credentials import RestCredentials, Revocations
from .indications import pack_data, read_send, xor_peer_address
from .nonce import Nonces
from .policy import PeerPolicy
from .ports import RelayPorts
from .quotas import IssuerQuotas
from .settings import TurnSettings
from .shell import CloseConnected, CloseRelay, CloseStream, ConnectToPeer, Event, RelayBinder
from .usage import Usage, UsageBook

if TYPE_CHECKING:
    from appliance.config import TurnConfig

Client = UdpClient | StreamClient

_CHANNEL_HEAD = struct.Struct(">HH").pack
# A Data indication's length field must hold 28 header bytes plus the padded data.
_MAX_INDICATION_DATA = 0xFFFF - 28 - 3


@dataclass(slots=True)
class Counters:
    """Server-wide counts of what was dropped or refused, for metrics."""

    malformed: int = 0  # not STUN/ChannelData, or not well-formed
    unmatched: int = 0  # no allocation, relay, channel or connection for it
    no_permission: int = 0  # peer without a permission
    rate_limited: int = 0  # over an allocation's packets/s or bits/s
    peers_limited: int = 0  # over an allocation's new peers/s
    auth_failures: int = 0  # signed requests refused with 401
    streams_refused: int = 0  # TCP/TLS connections refused over max_streams
    idle_streams: int = 0  # TCP/TLS connections closed for holding no allocation past stream_idle_timeout


class _Refused(Exception):
    """Raised by a request handler: answer with this error, signed."""

    def __init__(self, code: int, reason: str | None = None, *attributes: tuple[int, Any]) -> None:
        super().__init__(code)
        self.code = code
        self.reason = reason
        self.attributes = attributes


@dataclass(frozen=True, slots=True)
class _Plan:
    """What a valid Allocate asks for."""

    transport: int
    families: tuple[int, ...]
    even: bool
    reserve: bool
    token: bytes | None
    dont_fragment: bool


class TurnServer:
    def __init__(self, settings: TurnSettings, credentials: RestCredentials, policy: PeerPolicy,
                 binder: RelayBinder, *, wall: Callable[[], float], nonce_key: bytes | None = None) -> None:
        self.settings = settings
        self.credentials = credentials
        self.policy = policy
        self.binder = binder
        self._wall = wall
        self.revocations = Revocations(credentials, settings.max_revocations)
        self.auth = Authenticator(settings.realm, credentials, self.revocations,
                                  Nonces(settings.nonce_lifetime, nonce_key), wall)
        self.ports = RelayPorts(*settings.relay_ports)
        first, last = settings.relay_ports
        self.quotas = IssuerQuotas(last - first + 1, settings.issuer_reserve, dict(settings.issuer_quotas))
        self.usage_book = UsageBook(settings.usage_retention)
        # Usage of ended allocations per issuer (the keys' ids and "rest": a bounded set), kept for good.
        self._issuer_ended: dict[str, Usage] = {}
        self.counters = Counters()
        self._relay_address = {family_of(address): address for address in settings.relay_addresses}
        self._limits = settings.relay_limits
        self._peer_rate = unlimited(settings.new_peers_per_second)
        self._allocations: dict[int, Allocation] = {}
        self._by_username: dict[str, set[Allocation]] = {}
        self._relays: dict[int, Allocation] = {}
        self._connections: dict[int, PeerConnection] = {}
        # Client TCP/TLS connections from accept until the shell reports them closed.
        self._streams: set[StreamClient] = set()
        self._deadlines: Deadlines[Any] = Deadlines()
        self._out: list[tuple[bytes, Any, Any]] = []
        self._events: deque[Event] = deque()
        self._ids = itertools.count(1)
        # Method -> (handler, whether the 5-tuple must already have an allocation).
        self._handlers: dict[int, tuple[Callable[..., None], bool]] = {
            Method.ALLOCATE: (self._allocate, False),
            Method.REFRESH: (self._refresh, True),
            Method.CREATE_PERMISSION: (self._create_permission, True),
            Method.CHANNEL_BIND: (self._channel_bind, True),
            Method.CONNECT: (self._connect, True),
            Method.CONNECTION_BIND: (self._connection_bind, False),
        }
        self._expirers: dict[type, Callable[[Any, float], None]] = {
            Allocation: self._expire_allocation,
            Permission: self._expire_permission,
            Channel: self._expire_channel,
            PeerConnection: self._expire_connection,
            StreamClient: self._expire_stream,
        }

    @classmethod
    def from_config(cls, turn: TurnConfig, binder: RelayBinder, own: Iterable[Any] = (), *,
                    wall: Callable[[], float]) -> TurnServer:
        """A server for the config's `[turn]` table; `own` adds the box's other addresses
        (anycast, SFU) to the relay and listener addresses peers may never be."""
        own_addresses = [turn.relay_address, *(listener.endpoint.host for listener in turn.listen), *own]
        return cls(
            TurnSettings.from_config(turn),
            RestCredentials(turn.secrets, turn.credential_max_ttl, {key.id: key.token for key in turn.keys}),
            PeerPolicy(turn.allow_peers, own_addresses),
            binder,
            wall=wall,
        )

    def reconfigure(self, turn: TurnConfig) -> None:
        """Take a reloaded `[turn]` table's live values: secrets and keys, quotas and limits. Its other
        values are the running ones (config/reload.py keeps the realm, listeners, relay addresses and
        ports, allowed peers until a restart). Allocations go on, held to the new relay budget."""
        settings = TurnSettings.from_config(turn)
        self.credentials.configure(turn.secrets, turn.credential_max_ttl, {key.id: key.token for key in turn.keys})
        self.settings = settings
        self.revocations.capacity = settings.max_revocations
        self.auth.nonces.lifetime = settings.nonce_lifetime
        first, last = settings.relay_ports
        self.quotas.configure(last - first + 1, settings.issuer_reserve, dict(settings.issuer_quotas))
        self.usage_book.retention = settings.usage_retention
        self._limits = settings.relay_limits
        self._peer_rate = unlimited(settings.new_peers_per_second)
        for allocation in self._allocations.values():
            allocation.limits = self._limits
            allocation.peer_bucket.rate = self._peer_rate
            allocation.peer_bucket.burst = settings.new_peer_burst

    # --- what the shell reads -----------------------------------------------------------

    def datagrams_to_send(self) -> list[tuple[bytes, Any, Any]]:
        """Queued `(data, addr, sink)`: `addr` is None for streams. Send before the events."""
        out = self._out
        if out:
            self._out = []
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        times = [t for t in (self._deadlines.next(), self.ports.next_expiry(), self.revocations.next_expiry(),
                             self.usage_book.next_expiry()) if t is not None]
        return min(times) if times else None

    @property
    def allocations(self) -> Collection[Allocation]:
        return self._allocations.values()

    def usage_by_identifier(self, now: float) -> dict[str, Usage]:
        live: dict[str, Usage] = {}
        for allocation in self._allocations.values():
            live.setdefault(allocation.identifier, Usage()).add(allocation.usage(now))
        return self.usage_book.totals(live)

    def usage_by_issuer(self, now: float) -> dict[str, Usage]:
        """Usage since the start per credential issuer: the ended allocations' plus the live ones'."""
        out = {issuer: Usage() for issuer in self.credentials.issuers}
        for issuer, usage in self._issuer_ended.items():
            out.setdefault(issuer, Usage()).add(usage)
        for allocation in self._allocations.values():
            out.setdefault(allocation.auth.issuer, Usage()).add(allocation.usage(now))
        return out

    @property
    def relays(self) -> dict[int, Allocation]:
        """The allocations by relay id, as `from_peer` finds them: the compiled relay (relay.py) reads
        this dict itself."""
        return self._relays

    # --- clients ----------------------------------------------------------------------------

    def udp_listener(self, address: tuple[str, int], sink: Any) -> UdpListener:
        """Register a UDP listening socket; pass the result to `from_client`."""
        return UdpListener(address, sink)

    @property
    def streams(self) -> int:
        """Client TCP/TLS connections open now."""
        return len(self._streams)

    def stream_opened(self, transport: str, local: tuple[str, int], remote: Any, sink: Any,
                      now: float) -> StreamClient | None:
        """Register an accepted TCP or TLS client connection (for TLS, before its handshake);
        pass the result to `stream_received`. None: over `max_streams`, close it at once."""
        if len(self._streams) >= self.settings.max_streams:
            self.counters.streams_refused += 1
            return None
        stream = StreamClient(transport, local, remote, sink, now + self.settings.stream_idle_timeout)
        self._streams.add(stream)
        self._deadlines.push(stream.expires, stream)
        return stream

    def stream_closed(self, stream: StreamClient, now: float) -> None:
        """The shell saw the client connection close: its allocation (RFC 8656 2.1: the
        5-tuple is gone) or its spliced peer connection goes with it."""
        self._streams.discard(stream)
        self._end_stream(stream, now)

    def _end_stream(self, stream: StreamClient, now: float) -> None:
        if stream.closed:
            return
        stream.closed = True
        if stream.connection is not None:
            self._forget_connection(stream.connection)
        if stream.allocation is not None:
            self._delete(stream.allocation, now)

    # --- relay hot paths ------------------------------------------------------------------

    def from_client(self, listener: UdpListener, data: bytes, addr: Any, now: float) -> tuple[bytes, Any, Any] | None:
        """A datagram from a client on a UDP listener: relayed data comes back as
        `(data, peer, relay sink)`; anything else is handled (or dropped) and gives None."""
        if len(data) < 4:
            self.counters.malformed += 1
            return None
        first = data[0]
        if 0x40 <= first < 0x80:  # ChannelData
            allocation = listener.allocations.get(addr)
            if allocation is None:
                self.counters.unmatched += 1
                return None
            return self._channel_to_peer(allocation, data, now)
        if first == 0 and data[1] == 0x16:  # Send indication
            allocation = listener.allocations.get(addr)
            if allocation is None:
                self.counters.unmatched += 1
                return None
            return self._send_to_peer(allocation, data, now)
        if first < 0x40:
            self._request(UdpClient(listener, addr), data, now)
        else:
            self.counters.malformed += 1
        return None

    def from_peer(self, relay_id: int, data: bytes, peer: Any, now: float) -> tuple[bytes, Any, Any] | None:
        """A datagram from `peer` (as the socket reports it) on the UDP relay `relay_id`:
        returns `(ChannelData or Data indication, client addr, client sink)` or None."""
        allocation = self._relays.get(relay_id)
        if allocation is None:
            self.counters.unmatched += 1
            return None
        permission = allocation.permissions.get(peer[0])
        if permission is None:
            self._no_permission(allocation)
            return None
        size = len(data)
        if not allocation.charge(size, now):
            self._rate_limited(allocation)
            return None
        allocation.bytes_to_client += size
        allocation.packets_to_client += 1
        channel = allocation.peer_channels.get(peer)
        if channel is not None:
            if allocation.pad:
                return _CHANNEL_HEAD(channel.number, size) + data + PADDING[size & 3], None, allocation.client_sink
            return _CHANNEL_HEAD(channel.number, size) + data, allocation.reply_addr, allocation.client_sink
        if size > _MAX_INDICATION_DATA:
            self.counters.malformed += 1
            return None
        indication = pack_data(allocation.indication_id, permission.xor_address, peer[1], data)
        return indication, allocation.reply_addr, allocation.client_sink

    def _channel_to_peer(self, allocation: Allocation, frame: bytes, now: float) -> tuple[bytes, Any, Any] | None:
        channel = allocation.channels.get(frame[0] << 8 | frame[1])
        if channel is None:
            self.counters.unmatched += 1
            return None
        size = frame[2] << 8 | frame[3]
        if size > len(frame) - 4:
            self.counters.malformed += 1
            return None
        if channel.host not in allocation.permissions:
            self._no_permission(allocation)
            return None
        if not allocation.charge(size, now):
            self._rate_limited(allocation)
            return None
        allocation.bytes_from_client += size
        allocation.packets_from_client += 1
        return frame[4 : 4 + size], channel.peer, channel.sink

    def _send_to_peer(self, allocation: Allocation, message: bytes, now: float) -> tuple[bytes, Any, Any] | None:
        fields = read_send(message)
        if fields is None:
            self.counters.malformed += 1
            return None
        peer, port, start, end = fields
        if isinstance(peer, bytes):
            permission = allocation.xor_permissions.get(peer)
        else:
            permission = allocation.permissions.get(peer)
        if permission is None or permission.sink is None or port == 0:
            self._no_permission(allocation)
            return None
        size = end - start
        if not allocation.charge(size, now):
            self._rate_limited(allocation)
            return None
        allocation.bytes_from_client += size
        allocation.packets_from_client += 1
        return message[start:end], (permission.host, port), permission.sink

    def _no_permission(self, allocation: Allocation) -> None:
        allocation.dropped += 1
        self.counters.no_permission += 1

    def _rate_limited(self, allocation: Allocation) -> None:
        allocation.dropped += 1
        self.counters.rate_limited += 1

    def stream_received(self, stream: StreamClient, data: bytes, now: float) -> bool:
        """Bytes from a client's TCP/TLS connection; what they produce is queued. False when they
        only carried data to relay: then only datagrams are queued and the timer has not moved."""
        if stream.closed:
            return False
        if stream.connection is not None:
            self._client_bytes_to_peer(stream.connection, data)
            return False
        framer = stream.framer
        if not framer.pending:
            # The usual reads, whole ChannelData frames (padded), are relayed straight from the chunk
            # rather than copied through the framer's buffer.
            size = len(data)
            pos = 0
            while size - pos >= 4 and 0x40 <= data[pos] < 0x80:
                end = pos + (((data[pos + 2] << 8 | data[pos + 3]) + 7) & ~3)
                if end > size:
                    break
                self._stream_frame(stream, data if end - pos == size else data[pos:end], now)
                pos = end
            if pos == size:
                return False
            data = data[pos:] if pos else data
        framer.feed(data)
        control = False
        try:
            while (frame := framer.next()) is not None:
                control = self._stream_frame(stream, frame, now) or control
                if stream.connection is not None:
                    # ConnectionBind made this a data connection: the rest is the peer's.
                    rest = framer.rest()
                    if rest:
                        self._client_bytes_to_peer(stream.connection, rest)
                    return True
        except StunError:
            self.counters.malformed += 1
            self._events.append(CloseStream(stream.sink))
            self._end_stream(stream, now)
            return True
        return control

    def _stream_frame(self, stream: StreamClient, frame: bytes, now: float) -> bool:
        """Handle one frame; True for a request, False for data to relay."""
        first = frame[0]
        relayed = first >= 0x40 or (first == 0 and frame[1] == 0x16)
        if not relayed:
            self._request(stream, frame, now)
            return True
        allocation = stream.allocation
        if allocation is None:
            self.counters.unmatched += 1
            return False
        out = self._channel_to_peer(allocation, frame, now) if first >= 0x40 else self._send_to_peer(allocation, frame, now)
        if out is not None:
            self._out.append(out)
        return False

    # --- RFC 6062 peer connections ------------------------------------------------------

    def peer_connected(self, connection_id: int, sink: Any, now: float) -> bool:
        """The shell's ConnectToPeer succeeded. False: the core no longer wants it; close it."""
        connection = self._connections.get(connection_id)
        if connection is None or connection.state is not ConnectionState.CONNECTING:
            return False
        connection.sink = sink
        connection.state = ConnectionState.AWAITING_BIND
        connection.expires = now + self.settings.connection_bind_timeout
        self._answer_connect(connection)
        return True

    def peer_connect_failed(self, connection_id: int, now: float) -> None:
        connection = self._connections.get(connection_id)
        if connection is not None and connection.state is ConnectionState.CONNECTING:
            self._answer_connect(connection, 447)
            self._forget_connection(connection)

    def peer_accepted(self, relay_id: int, peer: Any, sink: Any, now: float) -> int | None:
        """A peer connected to the TCP relay `relay_id`: its connection ID, or None to close
        it (no permission for the peer, RFC 6062 5.3)."""
        allocation = self._relays.get(relay_id)
        if allocation is None or not allocation.tcp:
            self.counters.unmatched += 1
            return None
        address = (peer[0], peer[1])
        if peer[0] not in allocation.permissions:
            self.counters.no_permission += 1
            return None
        if self._connection_refusal(allocation, address) is not None:
            return None
        connection = self._new_connection(allocation, address, ConnectionState.AWAITING_BIND,
                                          now + self.settings.connection_bind_timeout)
        connection.sink = sink
        attempt = Message(Method.CONNECTION_ATTEMPT, Class.INDICATION, None,
                          [(Attr.XOR_PEER_ADDRESS, address), (Attr.CONNECTION_ID, connection.id)])
        self._out.append((attempt.encode(), allocation.reply_addr, allocation.client_sink))
        return connection.id

    def peer_stream_received(self, connection_id: int, data: bytes, now: float) -> tuple[bytes, Any, Any] | None:
        """Bytes from a peer's TCP connection: `(data, None, client data connection sink)`,
        or None while they wait (up to `connection_buffer`) for the ConnectionBind."""
        connection = self._connections.get(connection_id)
        if connection is None:
            self.counters.unmatched += 1
            return None
        allocation = connection.allocation
        allocation.bytes_to_client += len(data)
        allocation.packets_to_client += 1
        if connection.state is ConnectionState.BOUND:
            return data, None, connection.client.sink
        if len(connection.buffered) + len(data) > self.settings.connection_buffer:
            self._forget_connection(connection)
        else:
            connection.buffered += data
        return None

    def peer_closed(self, connection_id: int, now: float) -> None:
        connection = self._connections.get(connection_id)
        if connection is not None:
            connection.sink = None
            self._forget_connection(connection)

    def _client_bytes_to_peer(self, connection: PeerConnection, data: bytes) -> None:
        allocation = connection.allocation
        allocation.bytes_from_client += len(data)
        allocation.packets_from_client += 1
        self._out.append((data, None, connection.sink))

    def _new_connection(self, allocation: Allocation, peer: tuple[str, int], state: ConnectionState,
                        expires: float) -> PeerConnection:
        # Random IDs: a client must not find another's connection by counting.
        while True:
            connection_id = int.from_bytes(os.urandom(4), "big")
            if connection_id and connection_id not in self._connections:
                break
        connection = PeerConnection(connection_id, allocation, peer, state, expires)
        self._connections[connection_id] = connection
        allocation.connections[connection_id] = connection
        self._deadlines.push(expires, connection)
        return connection

    def _forget_connection(self, connection: PeerConnection) -> None:
        """Drop a peer connection, closing whichever of its two TCP connections are open."""
        self._connections.pop(connection.id, None)
        connection.allocation.connections.pop(connection.id, None)
        if connection.sink is not None:
            self._events.append(CloseStream(connection.sink))
            connection.sink = None
        client = connection.client
        if client is not None:
            client.connection = None
            if not client.closed:
                client.closed = True
                self._events.append(CloseStream(client.sink))
        connection.client = None

    def _answer_connect(self, connection: PeerConnection, error: int | None = None) -> None:
        """Answer the connection's Connect request: success with its CONNECTION-ID, or `error`."""
        request = connection.request
        if request is None:  # answered already (only a CONNECTING connection holds its request)
            return
        response = request.success((Attr.CONNECTION_ID, connection.id)) if error is None else request.error(error)
        self._reply(connection.allocation.client, request, response, connection.auth)
        connection.request = None

    def _connection_refusal(self, allocation: Allocation, peer: tuple[str, int]) -> int | None:
        if any(c.peer == peer for c in allocation.connections.values()):
            return 446
        if len(allocation.connections) >= self.settings.max_peers:
            return 508
        return None

    # --- control: requests ----------------------------------------------------------------

    def _request(self, client: Client, data: bytes, now: float) -> None:
        """Parse, authenticate and dispatch a request; a `_Refused` becomes a signed error."""
        try:
            request = Message.parse(data)
        except StunError:
            self.counters.malformed += 1
            return
        if request.message_class != Class.REQUEST:
            return  # Binding indications are keepalives; stray responses mean nothing here
        if request.method == Method.BINDING:
            self._binding(client, request)
            return
        entry = self._handlers.get(request.method)
        if entry is None:
            self._reply(client, request, request.error(400, reason="Unknown method"))
            return
        handler, needs_allocation = entry
        allocation = client.allocation
        auth = self._authenticate(client, request, now, None if allocation is None else allocation.auth)
        if auth is None:
            return
        try:
            if request.unknown:
                raise _Refused(420, None, (Attr.UNKNOWN_ATTRIBUTES, request.unknown))
            if needs_allocation:
                if allocation is None:
                    raise _Refused(437)
                if allocation.username != auth.username:
                    raise _Refused(441)
            handler(client, request, auth, allocation, now)
        except _Refused as refused:
            error = request.error(refused.code, *refused.attributes, reason=refused.reason)
            self._reply(client, request, error, auth)

    def _reply(self, client: Client, request: Message, response: Message, auth: Auth | None = None) -> bytes:
        """Queue `response` to `client`, signed when `auth` is given, with FINGERPRINT when the request had one."""
        response.add(Attr.SOFTWARE, self.settings.software)
        wire = response.encode(None if auth is None else auth.key, sha256=auth is not None and auth.sha256,
                               fingerprint=request.fingerprinted)
        self._out.append((wire, client.reply_addr, client.sink))
        return wire

    def _authenticate(self, client: Client, request: Message, now: float, known: Auth | None) -> Auth | None:
        """The request's `Auth`; otherwise the refusal (401, 438 or 400) is queued and None returned."""
        result = self.auth.check(request, client.remote[0], now, known)
        if isinstance(result, Auth):
            return result
        if request.has_integrity and result.get(Attr.ERROR_CODE)[0] == 401:
            self.counters.auth_failures += 1
        self._reply(client, request, result)
        return None

    def _binding(self, client: Client, request: Message) -> None:
        if request.unknown:
            self._reply(client, request, request.error(420, (Attr.UNKNOWN_ATTRIBUTES, request.unknown)))
        else:
            self._reply(client, request, request.success((Attr.XOR_MAPPED_ADDRESS, client.remote)))

    def _allocate(self, client: Client, request: Message, auth: Auth, existing: Allocation | None,
                  now: float) -> None:
        if existing is not None:
            cached = existing.allocate_response
            if cached is None or cached[0] != request.transaction_id:
                raise _Refused(437)
            self._out.append((cached[1], client.reply_addr, client.sink))  # a retransmission
            return
        plan = self._plan(client, request)
        quotas = self.quotas
        if len(self._by_username.get(auth.username, ())) >= self.settings.user_quota:
            quotas.refuse(auth.issuer, "user")
            raise _Refused(486)
        if not quotas.admits(auth.issuer):
            quotas.refuse(auth.issuer, "issuer")
            raise _Refused(486)
        relays, extra = self._open_relays(plan, now)
        lifetime = self._lifetime(request.get(Attr.LIFETIME))
        identifier = auth.identifier
        bucket = TokenBucket(self._peer_rate, self.settings.new_peer_burst, now)
        allocation = Allocation(next(self._ids), auth, identifier, client, now, now + lifetime, self._limits, bucket)
        for relay in relays:
            allocation.relays.append(relay)
            self._relays[relay.id] = allocation
            if relay.protocol == TRANSPORT_UDP:
                allocation.sinks[relay.family] = relay.sink
        client.allocation = allocation
        if isinstance(client, UdpClient):
            connected = self.binder.connect_client(client.listener, client.remote)
            if connected is not None:
                allocation.connected = allocation.client_sink = connected
        self._allocations[allocation.id] = allocation
        self._by_username.setdefault(auth.username, set()).add(allocation)
        quotas.take(auth.issuer)
        self.usage_book.started(identifier)
        self._deadlines.push(allocation.expires, allocation)
        response = request.success(
            *((Attr.XOR_RELAYED_ADDRESS, (relay.address, relay.port)) for relay in relays),
            (Attr.LIFETIME, int(lifetime)),
            (Attr.XOR_MAPPED_ADDRESS, client.remote),
            *extra,
        )
        allocation.allocate_response = (request.transaction_id, self._reply(client, request, response, auth))

    def _plan(self, client: Client, request: Message) -> _Plan:
        """What the Allocate asks for, or `_Refused` (RFC 8656 7.2, RFC 6156 4.2, RFC 6062 5.1)."""
        transport = request.get(Attr.REQUESTED_TRANSPORT)
        even = request.get(Attr.EVEN_PORT)
        token = request.get(Attr.RESERVATION_TOKEN)
        requested = request.get(Attr.REQUESTED_ADDRESS_FAMILY)
        additional = request.get(Attr.ADDITIONAL_ADDRESS_FAMILY)
        dont_fragment = Attr.DONT_FRAGMENT in request
        if transport is None:
            raise _Refused(400, "Missing REQUESTED-TRANSPORT")
        if transport not in (TRANSPORT_UDP, TRANSPORT_TCP):
            raise _Refused(442)
        if transport == TRANSPORT_TCP and (
            not client.stream or even is not None or token is not None or dont_fragment or additional is not None
        ):
            raise _Refused(400, "TCP relays need a TCP or TLS connection, one address family, "
                                "and no EVEN-PORT, RESERVATION-TOKEN or DONT-FRAGMENT")
        if token is not None and (even is not None or requested is not None or additional is not None):
            raise _Refused(400, "RESERVATION-TOKEN with EVEN-PORT or an address family")
        if additional is not None and (requested is not None or additional != FAMILY_IPV6 or even):
            raise _Refused(400, "ADDITIONAL-ADDRESS-FAMILY must be IPv6, without REQUESTED-ADDRESS-FAMILY "
                                "or a port reservation")
        if requested is not None and requested not in (FAMILY_IPV4, FAMILY_IPV6):
            raise _Refused(440)
        families = (requested or FAMILY_IPV4,) + ((FAMILY_IPV6,) if additional is not None else ())
        if token is None and families[0] not in self._relay_address:
            raise _Refused(440)
        return _Plan(transport, families, even is not None, bool(even), token, dont_fragment)

    def _open_relays(self, plan: _Plan, now: float) -> tuple[list[Relay], list[tuple[int, Any]]]:
        """Bind the relays the plan asks for (508 when the first cannot be had), and the extra
        answer attributes: RESERVATION-TOKEN, ADDRESS-ERROR-CODE for a missing second family."""
        extra: list[tuple[int, Any]] = []
        if plan.token is not None:
            reservation = self.ports.claim(plan.token)
            if reservation is None:
                raise _Refused(508)
            self.ports.release(reservation.address, TRANSPORT_UDP, reservation.port)
            first = self._bind(family_of(reservation.address), reservation.address, plan, [reservation.port])
        else:
            address = self._relay_address[plan.families[0]]
            candidates = self.ports.candidates(address, plan.transport, even=plan.even, pair=plan.reserve)
            first = self._bind(plan.families[0], address, plan, candidates)
        if first is None:
            raise _Refused(508)
        relays = [first]
        if plan.reserve:
            extra.append((Attr.RESERVATION_TOKEN, self.ports.reserve(first.address, first.port + 1, now)))
        for family in plan.families[1:]:
            second_address = self._relay_address.get(family)
            second = None if second_address is None else self._bind(
                family, second_address, plan, self.ports.candidates(second_address, plan.transport))
            if second is None:
                code = 440 if second_address is None else 508
                extra.append((Attr.ADDRESS_ERROR_CODE, (family, code, REASONS[code])))
            else:
                relays.append(second)
        return relays, extra

    def _bind(self, family: int, address: str, plan: _Plan, ports: Iterable[int]) -> Relay | None:
        for port in itertools.islice(ports, self.settings.bind_attempts):
            relay_id = next(self._ids)
            if plan.transport == TRANSPORT_UDP:
                sink = self.binder.bind_udp(relay_id, address, port, plan.dont_fragment)
                bound = sink is not None
            else:
                sink = None
                bound = self.binder.listen_tcp(relay_id, address, port)
            if bound:
                self.ports.take(address, plan.transport, port)
                return Relay(relay_id, family, address, port, plan.transport, sink)
        return None

    def _lifetime(self, requested: int | None) -> float:
        # RFC 8656 7.2: min(requested, maximum), but never below the default.
        settings = self.settings
        if requested is None:
            return settings.default_lifetime
        return max(settings.default_lifetime, min(float(requested), settings.max_lifetime))

    def _refresh(self, client: Client, request: Message, auth: Auth, allocation: Allocation, now: float) -> None:
        family = request.get(Attr.REQUESTED_ADDRESS_FAMILY)
        if family is not None and family not in allocation.families:
            raise _Refused(443)
        requested = request.get(Attr.LIFETIME)
        if requested == 0:
            self._delete(allocation, now)
            lifetime = 0.0
        else:
            lifetime = self._lifetime(requested)
            allocation.expires = now + lifetime
        self._reply(client, request, request.success((Attr.LIFETIME, int(lifetime))), auth)

    def _check_peer(self, allocation: Allocation, host: str) -> None:
        if family_of(host) not in allocation.families:
            raise _Refused(443)
        if not self.policy.permits(host):
            raise _Refused(403)

    def _admit_new_peers(self, allocation: Allocation, hosts: Iterable[str], now: float) -> bool:
        """Whether permissions for `hosts` may be installed. Over the peer cap: 508. Over
        the new-peers rate: False, and the request is dropped unanswered, so the client's
        retransmission gets another chance once the bucket has refilled."""
        new = {host for host in hosts if host not in allocation.permissions}
        if not new:
            return True
        if len(allocation.permissions) + len(new) > self.settings.max_peers:
            raise _Refused(508)
        if not allocation.peer_bucket.take(len(new), now):
            self.counters.peers_limited += 1
            return False
        return True

    def _permit(self, allocation: Allocation, host: str, now: float) -> None:
        expires = now + self.settings.permission_lifetime
        permission = allocation.permissions.get(host)
        if permission is not None:
            permission.expires = expires
            return
        family = family_of(host)
        permission = Permission(allocation, host, expires, xor_peer_address(host, allocation.indication_id),
                                allocation.sinks.get(family))
        allocation.permissions[host] = permission
        if family == FAMILY_IPV4:
            allocation.xor_permissions[permission.xor_address] = permission
        self._deadlines.push(expires, permission)

    def _create_permission(self, client: Client, request: Message, auth: Auth, allocation: Allocation,
                           now: float) -> None:
        hosts = [host for host, _ in request.get_all(Attr.XOR_PEER_ADDRESS)]
        if not hosts:
            raise _Refused(400, "Missing XOR-PEER-ADDRESS")
        for host in hosts:
            self._check_peer(allocation, host)
        if self._admit_new_peers(allocation, hosts, now):
            for host in hosts:
                self._permit(allocation, host, now)
            self._reply(client, request, request.success(), auth)

    def _channel_bind(self, client: Client, request: Message, auth: Auth, allocation: Allocation,
                      now: float) -> None:
        number = request.get(Attr.CHANNEL_NUMBER)
        peer = request.get(Attr.XOR_PEER_ADDRESS)
        if allocation.tcp or number is None or peer is None or not is_channel_number(number):
            raise _Refused(400, "Needs a UDP relay, CHANNEL-NUMBER 0x4000-0x7FFF and XOR-PEER-ADDRESS")
        host, port = peer
        self._check_peer(allocation, host)
        key = peer_key(host, port)
        channel = allocation.channels.get(number)
        bound = allocation.peer_channels.get(key)
        if (channel is not None and channel.peer != key) or (bound is not None and bound.number != number):
            raise _Refused(400, "Channel or peer bound otherwise")
        if not self._admit_new_peers(allocation, (host,), now):
            return
        expires = now + self.settings.channel_lifetime
        if channel is None:
            family = family_of(host)
            relay_id = next(relay.id for relay in allocation.relays if relay.family == family)
            channel = Channel(allocation, number, key, allocation.sinks[family], expires,
                              self.binder.connect_peer(relay_id, key))
            allocation.channels[number] = channel
            allocation.peer_channels[key] = channel
            self._deadlines.push(expires, channel)
        else:
            channel.expires = expires
        self._permit(allocation, host, now)
        self._reply(client, request, request.success(), auth)

    def _connect(self, client: Client, request: Message, auth: Auth, allocation: Allocation, now: float) -> None:
        peer = request.get(Attr.XOR_PEER_ADDRESS)
        if not allocation.tcp or peer is None:
            raise _Refused(400, "Needs a TCP relay and XOR-PEER-ADDRESS")
        self._check_peer(allocation, peer[0])
        refusal = self._connection_refusal(allocation, peer)
        if refusal is not None:
            raise _Refused(refusal)
        if not allocation.peer_bucket.take(1, now):
            self.counters.peers_limited += 1
            return
        connection = self._new_connection(allocation, peer, ConnectionState.CONNECTING,
                                          now + self.settings.connect_timeout)
        connection.request = request
        connection.auth = auth
        self._events.append(ConnectToPeer(connection.id, allocation.relays[0].id, peer))

    def _connection_bind(self, client: Client, request: Message, auth: Auth, allocation: Allocation | None,
                         now: float) -> None:
        connection_id = request.get(Attr.CONNECTION_ID)
        connection = None if connection_id is None else self._connections.get(connection_id)
        if (not isinstance(client, StreamClient) or allocation is not None or connection is None
                or connection.state is not ConnectionState.AWAITING_BIND):
            raise _Refused(400, "No connection awaits this bind here")
        if auth.username != connection.allocation.username:
            raise _Refused(441)
        connection.state = ConnectionState.BOUND
        connection.expires = math.inf
        connection.client = client
        client.connection = connection
        self._reply(client, request, request.success(), auth)
        if connection.buffered:
            self._out.append((bytes(connection.buffered), None, client.sink))
            connection.buffered.clear()

    # --- lifetimes ----------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        for item in self._deadlines.due(now):
            self._expirers[type(item)](item, now)
        self.ports.expire(now)
        self.revocations.prune(now, self._wall())
        self.usage_book.prune(now)

    def _extended(self, item: Any, now: float) -> bool:
        """Whether `item` was refreshed past `now`; if so its deadline is pushed again."""
        if item.expires > now:
            self._deadlines.push(item.expires, item)
            return True
        return False

    def _expire_allocation(self, allocation: Allocation, now: float) -> None:
        if allocation.alive and not self._extended(allocation, now):
            # It ended at its expiry, however late the timer came: that is what usage counts.
            self._delete(allocation, allocation.expires)

    def _expire_permission(self, permission: Permission, now: float) -> None:
        allocation = permission.allocation
        if allocation.permissions.get(permission.host) is permission and not self._extended(permission, now):
            del allocation.permissions[permission.host]
            allocation.xor_permissions.pop(permission.xor_address, None)

    def _expire_channel(self, channel: Channel, now: float) -> None:
        allocation = channel.allocation
        if allocation.channels.get(channel.number) is channel and not self._extended(channel, now):
            del allocation.channels[channel.number]
            del allocation.peer_channels[channel.peer]
            self._close_connected(channel.connected)

    def _close_connected(self, sink: Any) -> None:
        if sink is not None:
            self._events.append(CloseConnected(sink))

    def _expire_stream(self, stream: StreamClient, now: float) -> None:
        # A connection that holds nothing costs a file and memory: it gets a short time to
        # allocate (RFC 6062 gives an unbound peer connection 30 s), and again once its allocation ends.
        if stream.closed or stream.allocation is not None or stream.connection is not None:
            return
        if not self._extended(stream, now):
            self.counters.idle_streams += 1
            self._events.append(CloseStream(stream.sink))
            self._end_stream(stream, now)

    def _expire_connection(self, connection: PeerConnection, now: float) -> None:
        if self._connections.get(connection.id) is not connection or self._extended(connection, now):
            return
        if connection.state is ConnectionState.CONNECTING:
            self._answer_connect(connection, 447)
        self._forget_connection(connection)

    def revoke(self, username: str, now: float) -> int | None:
        """Refuse `username` from now on and end its allocations; how many ended, or None when it is
        no credential this box could have minted (or it has expired). Raises `RevocationsFull`."""
        if not self.revocations.add(username, now, self._wall()):
            return None
        ended = list(self._by_username.get(username, ()))
        for allocation in ended:
            self._delete(allocation, now)
        return len(ended)

    def _delete(self, allocation: Allocation, now: float) -> None:
        allocation.alive = False
        client = allocation.client
        client.allocation = None
        if client.stream and not client.closed:
            client.expires = now + self.settings.stream_idle_timeout
            self._deadlines.push(client.expires, client)
        for relay in allocation.relays:
            del self._relays[relay.id]
            self.ports.release(relay.address, relay.protocol, relay.port)
            self._events.append(CloseRelay(relay.id))
        for connection in list(allocation.connections.values()):
            self._forget_connection(connection)
        self._close_connected(allocation.connected)
        for channel in allocation.channels.values():
            self._close_connected(channel.connected)
        allocation.permissions.clear()
        allocation.xor_permissions.clear()
        allocation.channels.clear()
        allocation.peer_channels.clear()
        del self._allocations[allocation.id]
        same_user = self._by_username[allocation.username]
        same_user.discard(allocation)
        if not same_user:
            del self._by_username[allocation.username]
        self.quotas.release(allocation.auth.issuer)
        usage = allocation.usage(now)
        self.usage_book.ended(allocation.identifier, usage, now)
        self._issuer_ended.setdefault(allocation.auth.issuer, Usage()).add(usage)
