"""The asyncio shell of the media port: sockets in, datagrams to the port, its timer armed.

UDP follows the TURN shell (appliance/turn/io.py): a plain non-blocking socket per
configured address, read from the event loop's reader callback (with recvmmsg where the
compiled receive path, recvbatch.py, is built, which also unprotects SRTP from a selected
path and hands it to its session's handler), each datagram going
through one synchronous `MediaPort.datagram_received` call that also does the sendto
of whatever it forwards, or queues it for the port's `flush`: at the end of the readiness
callback, or from the loop's next round for RTP sent from anywhere else (timers, the API,
trunks), so that nothing queued waits for the next datagram. ICE-TCP (RFC 6544 passive
candidates) uses asyncio protocols: a connection is one more `Listener` whose packets are
RFC 4571 frames.
"""
from __future__ import annotations

import asyncio
import socket
from typing import Any

from ..coretimer import CoreTimer
from ..plumbing.listeners import tcp_listener, udp_listener
from ..plumbing.udp import READ_BATCH, RECV_SIZE, grow_receive_buffer
from .framing import Rfc4571Framer, frame
from .port import Listener, MediaPort

# An ICE-TCP connection that carries no session's selected path for this long is closed:
# a connection that never sent a valid check, or whose session went away.
TCP_IDLE = 10.0


class FramedSink:
    """An ICE-TCP connection as the port sees it: `sendto` writes one framed packet.

    A client that reads slower than the SFU sends gets what UDP would give it: once MAX_BACKLOG
    bytes wait, packets are refused (BlockingIOError, counted by the port as a send error) rather
    than queued without bound.
    """

    __slots__ = ("transport",)
    MAX_BACKLOG = 1 << 20

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def sendto(self, data: bytes, addr: Any = None) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() > self.MAX_BACKLOG:
            raise BlockingIOError("ICE-TCP reader too slow")
        transport.write(frame(data))


class MediaIO:
    """Owns the media port's sockets and its timer."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port: MediaPort) -> None:
        self.loop = loop
        self.port = port
        port.wake = self._wake
        port.flush_soon = self._flush_soon  # before open_udp: the port batches sockets added after
        self._reading = False  # inside `_on_readable`, which flushes when it ends
        self._sockets: list[socket.socket] = []
        self._servers: list[asyncio.AbstractServer] = []
        self._streams: set[_IceTcpStream] = set()
        self._timer = CoreTimer(loop, self._on_timer)

    @property
    def udp_sockets(self) -> list[socket.socket]:
        return list(self._sockets)

    def open_udp(self, host: str, port: int) -> tuple[str, int]:
        """Bind and serve a UDP address; returns it as bound (port 0 picks one)."""
        sock = udp_listener(host, port)
        grow_receive_buffer(sock)
        self._sockets.append(sock)
        listener = Listener(sock)
        self.port.add_udp(listener, sock.getsockname()[:2])
        self.loop.add_reader(sock.fileno(), self._on_readable, sock, listener)
        return sock.getsockname()[:2]

    async def open_tcp(self, host: str, port: int) -> tuple[str, int]:
        """Listen for ICE-TCP (active clients connect to our passive candidate)."""
        server = await self.loop.create_server(lambda: _IceTcpStream(self), sock=tcp_listener(host, port))
        self._servers.append(server)
        return server.sockets[0].getsockname()[:2]

    def _on_readable(self, sock: socket.socket, listener: Listener) -> None:
        port = self.port
        now = self.loop.time()
        self._reading = True
        try:
            extension = port.recvbatch
            if extension is not None:  # recvmmsg for what waits, up to READ_BATCH datagrams, handled in C
                port.read_datagrams(listener, sock.fileno(), READ_BATCH, now)
                return
            received = port.datagram_received
            for _ in range(READ_BATCH):
                try:
                    data, addr = sock.recvfrom(RECV_SIZE)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:  # an ICMP error queued on the socket: nothing to read this time
                    continue
                received(listener, data, addr, now)
        finally:
            self._reading = False
            port.flush()

    def _flush_soon(self) -> None:
        if not self._reading:
            self.loop.call_soon(self.port.flush)

    def _wake(self, when: float) -> None:
        if self._timer.when is None or when < self._timer.when:
            self._timer.set(when)

    def _on_timer(self, now: float) -> None:
        self.port.handle_timer(now)
        self._timer.set(self.port.get_timer())

    async def close(self) -> None:
        self._timer.cancel()
        self.port.flush()  # while the sockets are open
        for sock in self._sockets:
            self.loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets.clear()
        for stream in list(self._streams):
            if stream.transport is not None:
                stream.transport.close()
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        self._servers.clear()


class _IceTcpStream(asyncio.Protocol):
    """One accepted ICE-TCP connection."""

    def __init__(self, io: MediaIO) -> None:
        self.io = io
        self.framer = Rfc4571Framer()
        self.transport: asyncio.Transport | None = None
        self.listener: Listener | None = None
        self.peer: Any = None
        self.idle: asyncio.TimerHandle | None = None

    # A stream protocol is always given a Transport (uvloop's only duck-types it, so no isinstance
    # here); typeshed types every protocol's argument as the BaseTransport of BaseProtocol.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.peer = transport.get_extra_info("peername")
        self.listener = Listener(FramedSink(transport))
        self.io._streams.add(self)
        self.idle = self.io.loop.call_later(TCP_IDLE, self._check_idle)

    def data_received(self, data: bytes) -> None:
        listener = self.listener
        if listener is None:  # set by connection_made, which comes first
            return
        received = self.io.port.datagram_received
        now = self.io.loop.time()
        for packet in self.framer.feed(data):
            received(listener, packet, self.peer, now)

    def _check_idle(self) -> None:
        if self.listener is not None and self.listener.sessions:
            self.idle = self.io.loop.call_later(TCP_IDLE, self._check_idle)
        else:
            self.idle = None
            if self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.idle is not None:
            self.idle.cancel()
        self.io._streams.discard(self)
        if self.listener is not None:
            self.io.port.listener_closed(self.listener, self.io.loop.time())
