"""The asyncio shell of the TURN core: sockets in, bytes to the core, what it returns out.

UDP (client listeners and relays) uses plain non-blocking sockets read from the event
loop's reader callbacks: a datagram goes from `recvfrom` through one synchronous core call
to `sendto`, with no transport object, task or await in between (ARCHITECTURE principle 4).
A UDP client's allocation and each channel get a socket connected to their one remote beside
the listener or relay socket, on the same address: the kernel hands it that remote's datagrams,
and `recv` and `send` on it skip what costs most per packet in Python after the system calls
(formatting the sender's address, parsing the destination's, looking up its route).
TCP and TLS (clients, and RFC 6062 peer connections) use asyncio protocols: streams are
not the hot path. TLS runs over memory BIOs on an accepted TCP connection, so that the core
counts and times a TLS client from accept: a handshake that never completes is bounded like
any connection that holds nothing (the event loops' own TLS servers hand a connection over
only once its handshake is done). The core's `now` is the event loop's time, and its timer is
armed on that clock with `call_at`.
"""
from __future__ import annotations

import asyncio
import ipaddress
import resource
import socket
import ssl
from collections.abc import Callable
from typing import Any, NamedTuple

from ..coretimer import CoreTimer
from ..logs import get_logger
from ..plumbing.streams import StreamSink
from ..plumbing.listeners import tcp_listener, udp_listener
from ..plumbing.udp import (
    READ_BATCH, RECV_SIZE, connected_udp_socket, grow_receive_buffer, set_dont_fragment, udp_socket,
)
from . import relay
from .clients import StreamClient, UdpListener
from .server import TurnServer
from .shell import CloseConnected, CloseRelay, CloseStream, ConnectToPeer

log = get_logger("turn")

class _TlsSession:
    """Server-side TLS over a pair of memory BIOs: ciphertext in, plaintext out, and back."""

    __slots__ = ("_incoming", "_outgoing", "_tls", "_established")

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._established = False

    def receive(self, data: bytes) -> bytes:
        """Take ciphertext from the client; the plaintext it completes. Raises ssl.SSLError on a
        bad handshake or record, ssl.SSLZeroReturnError when the client closes TLS."""
        self._incoming.write(data)
        if not self._established:
            try:
                self._tls.do_handshake()
            except ssl.SSLWantReadError:
                return b""
            self._established = True
        chunks = []
        while True:
            try:
                chunk = self._tls.read(RECV_SIZE)
            except ssl.SSLWantReadError:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def send(self, data: bytes) -> None:
        self._tls.write(data)

    def close(self) -> None:
        try:
            self._tls.unwrap()  # queues close_notify; the client's answer is not waited for
        except ssl.SSLError:
            pass

    def ciphertext(self) -> bytes:
        """What is to be written to the connection."""
        return self._outgoing.read()


class TlsSink(StreamSink):
    """A client's TLS connection: the core's bytes are encrypted on the way out."""

    __slots__ = ("tls",)

    def __init__(self, transport: asyncio.Transport, tls: _TlsSession) -> None:
        super().__init__(transport)
        self.tls = tls

    def sendto(self, data: bytes, addr: Any = None) -> None:
        if not self.transport.is_closing():
            self.tls.send(data)
            super().sendto(self.tls.ciphertext())

    def close(self) -> None:
        if not self.transport.is_closing():
            self.tls.close()
            self.transport.write(self.tls.ciphertext())
        super().close()


class _ConnectedSink:
    """The sink of a UDP socket connected to its one remote: the address the core gives back is that
    remote, so the datagram is sent without one."""

    __slots__ = ("sock", "_send", "fd")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send = sock.send
        # What the compiled relay sends on; -1 once the socket is closed, so that it fails there too.
        self.fd = sock.fileno()

    def sendto(self, data: bytes, addr: Any = None) -> None:
        self._send(data)


# The compiled relay where it is built (relay.py): it reads and writes this module's sinks too.
_RELAY = relay.configure(_ConnectedSink)


class _Reading(NamedTuple):
    """How a connected socket is read: by its Python callback, or by the compiled relay's with what its
    Reader needs (the table the allocation is found in and its key there, the peer of a channel)."""

    callback: Callable[[socket.socket, Any], None]
    fallback: Callable[[bytes, Any], None]
    arg: tuple
    unconnected: Callable[[Any, bytes, Any, float], Any]
    compiled: Callable[[Any], None] | None
    table: dict
    key: Any
    peer: Any


def _read_all(sock: socket.socket) -> list[tuple[bytes, Any]]:
    """Every datagram waiting on `sock`, with its sender."""
    datagrams = []
    for _ in range(READ_BATCH):
        try:
            datagrams.append(sock.recvfrom(RECV_SIZE))
        except (BlockingIOError, InterruptedError):
            break
        except OSError:  # an ICMP error queued on the socket
            continue
    return datagrams


def _connected_budget() -> int:
    """How many connected sockets may be open at once: a quarter of the descriptors the process may
    have, so that they never take those that relays and client connections need."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 4


class TurnIO:
    """Owns every socket of the TURN service and runs the core's output. The core binds its relays
    through this shell (the RelayBinder), so `make_core` builds it with the shell in hand."""

    def __init__(self, loop: asyncio.AbstractEventLoop, make_core: Callable[[TurnIO], TurnServer]) -> None:
        self.loop = loop
        self._udp: dict[int, socket.socket] = {}  # fd -> socket, for reader removal
        self._relay_udp: dict[int, socket.socket] = {}  # relay id -> socket
        self._relay_tcp: dict[int, asyncio.AbstractServer | socket.socket] = {}
        self._relay_addr: dict[int, tuple[str, int]] = {}
        self._relay_df: set[int] = set()  # UDP relays with DONT-FRAGMENT, which their channels' sockets copy
        self._connected = 0
        self._connected_budget = _connected_budget()
        self._servers: list[asyncio.AbstractServer] = []
        self._timer = CoreTimer(loop, self._on_timer)
        self.send_errors = 0
        self.core = make_core(self)

    # --- RelayBinder: the core asks for relay sockets ---------------------------------------

    def bind_udp(self, relay_id: int, address: str, port: int, dont_fragment: bool) -> object | None:
        try:
            sock = udp_socket(address, port)
        except OSError:
            return None
        if dont_fragment:  # RFC 8656 DONT-FRAGMENT
            set_dont_fragment(sock)
            self._relay_df.add(relay_id)
        # Set after the bind, which stayed exclusive: from now on sockets of this user with SO_REUSEPORT
        # (the channels' connected sockets) may bind the port too.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self._relay_udp[relay_id] = sock
        self._relay_addr[relay_id] = (address, port)
        self._watch(sock, self._on_relay_readable, sock, relay_id)
        return sock

    def listen_tcp(self, relay_id: int, address: str, port: int) -> bool:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            # The relayed address also connects out to peers (RFC 6062 5.2): both need reuse.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((address, port))
            sock.listen(64)
            sock.setblocking(False)
        except OSError:
            sock.close()
            return False
        self._relay_tcp[relay_id] = sock
        self._relay_addr[relay_id] = (address, port)
        self.loop.create_task(self._serve_relay_tcp(relay_id, sock))
        return True

    def connect_client(self, listener: UdpListener, remote: Any) -> object | None:
        if ipaddress.ip_address(listener.address[0]).is_unspecified:
            return None  # the client's datagrams may come to any of the box's addresses: only the listener knows
        # SO_REUSEADDR, as the listener has: a member of the workers' SO_REUSEPORT group would rehash their flows.
        return self._connect(listener.address, remote, socket.SO_REUSEADDR, False, _Reading(
            self._on_connected_client_readable, self._client_datagram, (listener, remote), self.core.from_client,
            None if _RELAY is None else _RELAY.client_readable, listener.allocations, remote, None))

    def connect_peer(self, relay_id: int, peer: Any) -> object | None:
        local = self._relay_addr.get(relay_id)
        if local is None:
            return None
        return self._connect(local, peer, socket.SO_REUSEPORT, relay_id in self._relay_df, _Reading(
            self._on_connected_peer_readable, self._peer_datagram, (relay_id, peer), self.core.from_peer,
            None if _RELAY is None else _RELAY.peer_readable, self.core.relays, relay_id, peer))

    def _connect(self, local: tuple[str, int], remote: Any, share: int, dont_fragment: bool,
                 reading: _Reading) -> _ConnectedSink | None:
        if self._connected >= self._connected_budget:
            return None
        try:
            sock = connected_udp_socket(local, remote, share)
        except OSError as e:
            log.debug("no connected socket", remote=str(remote), reason=str(e))
            return None
        # Until its connect, the socket was one more on the address: what reached it then may be any
        # remote's. Read now with its senders, it goes to the core as the listener's or relay's would,
        # once the core's call that asked for this socket has returned.
        strays = _read_all(sock)
        if strays:
            self.loop.call_soon(self._strays, reading.unconnected, reading.arg[0], strays)
        if dont_fragment:
            set_dont_fragment(sock)
        self._connected += 1
        if _RELAY is None or reading.compiled is None:
            self._watch(sock, reading.callback, sock, reading.arg)
        else:
            self._watch(sock, reading.compiled, _RELAY.Reader(sock.fileno(), self, reading.fallback, reading.arg,
                                                              reading.table, reading.key, reading.peer))
        return _ConnectedSink(sock)

    def _strays(self, unconnected: Callable[[Any, bytes, Any, float], Any], via: Any,
                datagrams: list[tuple[bytes, Any]]) -> None:
        now = self.loop.time()
        for data, addr in datagrams:
            out = unconnected(via, data, addr, now)
            if out is not None:
                try:
                    out[2].sendto(out[0], out[1])
                except OSError:
                    self.send_errors += 1
        self.flush()

    async def _serve_relay_tcp(self, relay_id: int, sock: socket.socket) -> None:
        if self._relay_tcp.get(relay_id) is not sock:
            return
        server = await self.loop.create_server(lambda: _PeerStream(self, relay_id=relay_id), sock=sock)
        if self._relay_tcp.get(relay_id) is sock:
            self._relay_tcp[relay_id] = server
        else:
            server.close()

    # --- client listeners ---------------------------------------------------------------------

    @property
    def udp_sockets(self) -> list[socket.socket]:
        """Every UDP socket: the listeners, the relays and the connected ones."""
        return list(self._udp.values())

    def open_udp_listener(self, host: str, port: int) -> None:
        sock = udp_listener(host, port, reuse=True)
        grow_receive_buffer(sock)
        listener = self.core.udp_listener(sock.getsockname()[:2], sock)
        self._watch(sock, self._on_client_readable, sock, listener)

    async def open_stream_listener(self, transport: str, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        server = await self.loop.create_server(lambda: _ClientStream(self, transport, tls),
                                               sock=tcp_listener(host, port))
        self._servers.append(server)

    def _watch(self, sock: socket.socket, callback: Callable[..., None], *args: Any) -> None:
        self._udp[sock.fileno()] = sock
        self.loop.add_reader(sock.fileno(), callback, *args)

    def _unwatch(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if fd >= 0 and self._udp.pop(fd, None) is not None:
            self.loop.remove_reader(fd)
        sock.close()

    # --- the hot paths ------------------------------------------------------------------------

    def _on_client_readable(self, sock: socket.socket, listener) -> None:
        core = self.core
        from_client = core.from_client
        now = self.loop.time()
        queued = False
        for _ in range(READ_BATCH):
            try:
                data, addr = sock.recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # an ICMP error queued on the socket: nothing to read this time
                continue
            out = from_client(listener, data, addr, now)
            if out is None:
                queued = True
                continue
            try:
                out[2].sendto(out[0], out[1])
            except OSError:
                self.send_errors += 1
        if queued:
            self.flush()

    def _on_relay_readable(self, sock: socket.socket, relay_id: int) -> None:
        from_peer = self.core.from_peer
        now = self.loop.time()
        for _ in range(READ_BATCH):
            try:
                data, addr = sock.recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            out = from_peer(relay_id, data, addr, now)
            if out is None:
                continue
            try:
                out[2].sendto(out[0], out[1])
            except OSError:
                self.send_errors += 1

    # A connected socket carries one remote's datagrams, seldom more than one at a time: it is read
    # once per callback (the loop calls again while more wait), which spares the failed read that
    # ends a batch. Where the compiled relay is built, its readers stand in for these two callbacks and
    # hand what they do not relay to the *_datagram methods.

    def _on_connected_client_readable(self, sock: socket.socket, client: tuple[UdpListener, Any]) -> None:
        try:
            data = sock.recv(RECV_SIZE)
        except OSError:  # nothing after all, or the client's port refused an earlier datagram (ICMP)
            return
        self._client_datagram(data, client)

    def _client_datagram(self, data: bytes, client: tuple[UdpListener, Any]) -> None:
        """A datagram read from a client's connected socket (the compiled relay's fallback too)."""
        listener, remote = client
        out = self.core.from_client(listener, data, remote, self.loop.time())
        if out is None:
            self.flush()
            return
        try:
            out[2].sendto(out[0], out[1])
        except OSError:
            self.send_errors += 1

    def _on_connected_peer_readable(self, sock: socket.socket, channel: tuple[int, Any]) -> None:
        try:
            data = sock.recv(RECV_SIZE)
        except OSError:  # nothing after all, or the peer's port refused an earlier datagram (ICMP)
            return
        self._peer_datagram(data, channel)

    def _peer_datagram(self, data: bytes, channel: tuple[int, Any]) -> None:
        """A datagram read from a channel's socket connected to its peer (the compiled relay's fallback too)."""
        relay_id, peer = channel
        out = self.core.from_peer(relay_id, data, peer, self.loop.time())
        if out is None:
            return
        try:
            out[2].sendto(out[0], out[1])
        except OSError:
            self.send_errors += 1

    # --- the core's queued output, events and timer -------------------------------------------

    def send_queued(self) -> None:
        """Send the core's queued datagrams: all a flush has to do after a call that only relayed."""
        for data, addr, sink in self.core.datagrams_to_send():
            try:
                sink.sendto(data, addr)
            except OSError:
                self.send_errors += 1

    def flush(self) -> None:
        core = self.core
        self.send_queued()
        while (event := core.next_event()) is not None:
            if isinstance(event, CloseRelay):
                self._close_relay(event.relay_id)
            elif isinstance(event, CloseConnected):
                self._connected -= 1
                event.sink.fd = -1
                self._unwatch(event.sink.sock)
            elif isinstance(event, CloseStream):
                event.sink.close()
            elif isinstance(event, ConnectToPeer):
                self.loop.create_task(self._connect_to_peer(event))
        self._timer.set(self.core.get_timer())

    def _on_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self.flush()

    def _close_relay(self, relay_id: int) -> None:
        self._relay_addr.pop(relay_id, None)
        self._relay_df.discard(relay_id)
        sock = self._relay_udp.pop(relay_id, None)
        if sock is not None:
            self._unwatch(sock)
        server: asyncio.AbstractServer | socket.socket | None = self._relay_tcp.pop(relay_id, None)
        if server is not None:
            server.close()

    async def _connect_to_peer(self, event: ConnectToPeer) -> None:
        local = self._relay_addr.get(event.relay_id)
        sink = None
        if local is not None:
            sock = socket.socket(socket.AF_INET6 if ":" in local[0] else socket.AF_INET, socket.SOCK_STREAM)
            try:
                # From the relayed transport address itself (RFC 6062 5.2), which the relay's listener also holds.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                sock.bind(local)
                sock.setblocking(False)
                await asyncio.wait_for(self.loop.sock_connect(sock, event.peer), self.core.settings.connect_timeout)
                _, protocol = await self.loop.create_connection(
                    lambda: _PeerStream(self, connection_id=event.connection_id), sock=sock
                )
                sink = protocol.sink
            except (OSError, asyncio.TimeoutError) as e:
                log.debug("peer connect failed", peer=f"{event.peer[0]}:{event.peer[1]}", reason=str(e))
                sock.close()
        now = self.loop.time()
        if sink is None:
            self.core.peer_connect_failed(event.connection_id, now)
        elif not self.core.peer_connected(event.connection_id, sink, now):
            sink.close()
        self.flush()

    async def close(self) -> None:
        self._timer.cancel()
        for server in self._servers:
            server.close()
        for relay_id in list(self._relay_addr):
            self._close_relay(relay_id)
        for sock in list(self._udp.values()):
            self._unwatch(sock)
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()


class _ClientStream(asyncio.Protocol):
    """A client's TCP or TLS connection to a TURN listener."""

    def __init__(self, io: TurnIO, transport_name: str, context: ssl.SSLContext | None) -> None:
        self.io = io
        self.transport_name = transport_name
        self.context = context
        self.transport: asyncio.Transport | None = None
        self.tls: _TlsSession | None = None
        self.stream: StreamClient | None = None

    # A stream protocol is always given a Transport (uvloop's only duck-types it, so no isinstance
    # here); typeshed types every protocol's argument as the BaseTransport of BaseProtocol.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        local = transport.get_extra_info("sockname")
        remote = transport.get_extra_info("peername")
        if self.context is None:
            sink = StreamSink(transport)
        else:
            self.tls = _TlsSession(self.context)
            sink = TlsSink(transport, self.tls)
        self.stream = self.io.core.stream_opened(self.transport_name, local[:2], remote, sink, self.io.loop.time())
        if self.stream is None:  # over max_streams
            transport.abort()
            return
        self.io.flush()  # arms the core's timer, which closes the connection if it never allocates

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if self.stream is None or transport is None:  # the transport is set with the stream
            return
        if self.tls is not None:
            plain: bytes | None
            try:
                plain = self.tls.receive(data)
            except ssl.SSLError as e:  # a bad handshake or record, or the client's close_notify
                log.debug("TLS connection ended", peer=str(transport.get_extra_info("peername")), reason=str(e))
                plain = None
            handshake = self.tls.ciphertext()  # handshake records, or the alert before closing
            if handshake:
                transport.write(handshake)
            if plain is None:
                transport.close()
            if not plain:
                return
            data = plain
        io = self.io
        if io.core.stream_received(self.stream, data, io.loop.time()):
            io.flush()
        else:
            io.send_queued()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stream is not None:
            self.io.core.stream_closed(self.stream, self.io.loop.time())
            self.stream = None
            self.io.flush()


class _PeerStream(asyncio.Protocol):
    """A TCP connection between a relayed address and a peer (RFC 6062), either way round."""

    def __init__(self, io: TurnIO, relay_id: int | None = None, connection_id: int | None = None) -> None:
        self.io = io
        self.relay_id = relay_id
        self.connection_id = connection_id
        self.sink: StreamSink | None = None

    # A Transport, as in _ClientStream.connection_made.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.sink = StreamSink(transport)
        if self.relay_id is not None:  # accepted on a relay's listener (when we connect out, connection_id is known)
            peer = transport.get_extra_info("peername")
            self.connection_id = self.io.core.peer_accepted(self.relay_id, peer, self.sink, self.io.loop.time())
            if self.connection_id is None:
                transport.close()
            self.io.flush()

    def data_received(self, data: bytes) -> None:
        if self.connection_id is None:
            return
        out = self.io.core.peer_stream_received(self.connection_id, data, self.io.loop.time())
        if out is not None:
            out[2].sendto(out[0], out[1])
        self.io.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.connection_id is not None:
            self.io.core.peer_closed(self.connection_id, self.io.loop.time())
            self.io.flush()
