"""The client side of a 5-tuple: a UDP listener and its remote addresses, or one TCP/TLS connection.

RFC 8656 identifies an allocation by its 5-tuple (transport, client address, server
address). A UDP listener keeps its allocations in a dict keyed by client address,
which the hot path reads directly; a stream connection is its own 5-tuple.
"""
from __future__ import annotations

from typing import Any

from appliance.stun import StreamFramer

from .allocation import Allocation, PeerConnection

Address = tuple[str, int]


class UdpListener:
    """A UDP socket clients send to; `sink` is the shell's object for answering from it."""

    __slots__ = ("address", "sink", "allocations")

    def __init__(self, address: Address, sink: Any) -> None:
        self.address = address
        self.sink = sink
        self.allocations: dict[Any, Allocation] = {}


class UdpClient:
    """One remote address on a UDP listener, made for a control request."""

    __slots__ = ("listener", "remote")
    stream = False

    def __init__(self, listener: UdpListener, remote: Any) -> None:
        self.listener = listener
        self.remote = remote

    @property
    def sink(self) -> Any:
        return self.listener.sink

    @property
    def reply_addr(self) -> Any:
        return self.remote

    @property
    def allocation(self) -> Allocation | None:
        return self.listener.allocations.get(self.remote)

    @allocation.setter
    def allocation(self, allocation: Allocation | None) -> None:
        if allocation is None:
            self.listener.allocations.pop(self.remote, None)
        else:
            self.listener.allocations[self.remote] = allocation


class StreamClient:
    """A client's TCP or TLS connection: a control connection that may hold an allocation,
    or, after ConnectionBind, an RFC 6062 data connection spliced to a peer. One that holds
    neither is closed at `expires`."""

    __slots__ = ("transport", "local", "remote", "sink", "framer", "allocation", "connection", "closed", "expires")
    stream = True
    reply_addr = None

    def __init__(self, transport: str, local: Address, remote: Any, sink: Any, expires: float) -> None:
        self.transport = transport
        self.local = local
        self.remote = remote
        self.sink = sink
        self.framer = StreamFramer()
        self.allocation: Allocation | None = None
        self.connection: PeerConnection | None = None
        self.closed = False
        self.expires = expires
