"""What the asyncio shell does for the TURN core: bind relay sockets when asked, and
carry out the events the core queues.

The core never touches a socket. A *sink* is whatever object the shell hands the core
for a socket or connection (a transport, a socket, an adapter); the core only keeps it
and gives it back with the bytes to send: `sink.sendto(data, addr)` for datagrams,
`addr` None for streams.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class RelayBinder(Protocol):
    """Binds relay sockets synchronously: the Allocate answer depends on it."""

    def bind_udp(self, relay_id: int, address: str, port: int, dont_fragment: bool) -> object | None:
        """Bind a UDP socket on (address, port) and start reading it, feeding each datagram
        to `TurnServer.from_peer(relay_id, ...)`; return its sink, or None when the port
        cannot be bound (the core then tries another). `dont_fragment` asks for the DF bit.
        """

    def listen_tcp(self, relay_id: int, address: str, port: int) -> bool:
        """Listen for TCP on (address, port) for an RFC 6062 allocation, giving each accepted
        connection to `TurnServer.peer_accepted(relay_id, ...)`; False when the port is taken.
        """


@dataclass(frozen=True, slots=True)
class CloseRelay:
    """Close the relay socket (UDP socket or TCP listener) bound for `relay_id`."""

    relay_id: int


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


Event = CloseRelay | ConnectToPeer | CloseStream
