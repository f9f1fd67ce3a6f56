"""What the asyncio shell does for the TURN core: bind relay sockets when asked, and
carry out the events the core queues.

The core never touches a socket. A *sink* is whatever object the shell hands the core
for a socket or connection (a transport, a socket, an adapter); the core only keeps it
and gives it back with the bytes to send: `sink.sendto(data, addr)` for datagrams,
`addr` None for streams. The sink of a connected UDP socket (`connect_client`, `connect_peer`)
sends to its one remote whatever `addr` it is given.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .clients import UdpListener


class RelayBinder(Protocol):
    """Binds relay sockets synchronously (the Allocate answer depends on it), and the connected
    sockets beside the listener's and the relays'."""

    def bind_udp(self, relay_id: int, address: str, port: int, dont_fragment: bool) -> object | None:
        """Bind a UDP socket on (address, port) and start reading it, feeding each datagram
        to `TurnServer.from_peer(relay_id, ...)`; return its sink, or None when the port
        cannot be bound (the core then tries another). `dont_fragment` asks for the DF bit.
        """

    def listen_tcp(self, relay_id: int, address: str, port: int) -> bool:
        """Listen for TCP on (address, port) for an RFC 6062 allocation, giving each accepted
        connection to `TurnServer.peer_accepted(relay_id, ...)`; False when the port is taken.
        """

    # A connected socket is a speed-up only: the kernel hands it its remote's datagrams, and
    # sending needs no address to parse or route to look up. Without one, the listener or the
    # relay socket carries the same traffic.

    def connect_client(self, listener: UdpListener, remote: Any) -> object | None:
        """A UDP socket on the listener's address connected to the client at `remote`, feeding
        each datagram to `TurnServer.from_client(listener, ..., remote, ...)`; its sink, or None."""

    def connect_peer(self, relay_id: int, peer: Any) -> object | None:
        """A UDP socket on the relay's address connected to a channel's `peer` (spelled as
        `peer_key` does), feeding each datagram to `TurnServer.from_peer(relay_id, ..., peer, ...)`;
        its sink, or None."""


@dataclass(frozen=True, slots=True)
class CloseRelay:
    """Close the relay socket (UDP socket or TCP listener) bound for `relay_id`."""

    relay_id: int


@dataclass(frozen=True, slots=True)
class CloseConnected:
    """Close a connected UDP socket that `connect_client` or `connect_peer` made; `sink` is its sink."""

    sink: Any


@dataclass(frozen=True, slots=True)
class ConnectToPeer:
    """Open a TCP connection to `peer` from the relayed address of `relay_id` (RFC 6062 5.2),
    then call `TurnServer.peer_connected` or `TurnServer.peer_connect_failed`."""

    connection_id: int
    relay_id: int
    peer: tuple[str, int]


class ClosableSink(Protocol):
    """The sink of a TCP/TLS connection: `addr` is None, and it can be closed."""

    def sendto(self, data: bytes, addr: Any = None) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class CloseStream:
    """Close a TCP/TLS connection (a client's or a peer's) after writing what was queued for it."""

    sink: ClosableSink


Event = CloseRelay | CloseConnected | ConnectToPeer | CloseStream
