"""Allocation state: relays, permissions, channels and RFC 6062 peer connections.

Plain slotted classes: the relay hot path reads their fields directly. Who may
change them, and when, is the server's business (server.py).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from enum import Enum
from typing import Any

from appliance.stun import FAMILY_IPV4, FAMILY_IPV6, TRANSPORT_TCP, Message

from .auth import Auth
from ..plumbing.buckets import TokenBucket
from .ratelimit import RelayBudget, RelayLimits
from .usage import Usage

Peer = tuple  # (host, port) for IPv4, (host, port, 0, 0) for IPv6: see peer_key


def peer_key(host: str, port: int) -> Peer:
    """A peer address spelled as a relay socket reports it (asyncio gives IPv6 as a 4-tuple),
    so that dicts keyed by it match the addresses of received datagrams."""
    return (host, port, 0, 0) if ":" in host else (host, port)


def family_of(host: str) -> int:
    return FAMILY_IPV6 if ":" in host else FAMILY_IPV4


@dataclass(slots=True, eq=False)
class Relay:
    """One relayed transport address of an allocation, and the shell's sink for it."""

    id: int
    family: int
    address: str
    port: int
    protocol: int
    sink: Any


class Permission:
    """Peers at `host` may send to the allocation until `expires` (RFC 8656 9)."""

    __slots__ = ("allocation", "host", "expires", "xor_address", "sink")

    def __init__(self, allocation: Allocation, host: str, expires: float, xor_address: bytes, sink: Any) -> None:
        self.allocation = allocation
        self.host = host
        self.expires = expires
        # The address as XOR-PEER-ADDRESS carries it in this allocation's indications;
        # for IPv4 it does not depend on the transaction ID, and keys `xor_permissions`.
        self.xor_address = xor_address
        # The UDP relay socket for the peer's address family (None on TCP allocations).
        self.sink = sink


class Channel:
    """Channel `number` carries data to and from `peer` until `expires` (RFC 8656 12)."""

    __slots__ = ("allocation", "number", "peer", "host", "sink", "connected", "expires")

    def __init__(self, allocation: Allocation, number: int, peer: Peer, sink: Any, expires: float,
                 connected: Any = None) -> None:
        self.allocation = allocation
        self.number = number
        self.peer = peer
        self.host = peer[0]
        # A socket connected to the peer (RelayBinder.connect_peer), closed with the channel; else the
        # relay socket for the peer's address family.
        self.sink = sink if connected is None else connected
        self.connected = connected
        self.expires = expires


class ConnectionState(Enum):
    CONNECTING = "connecting"  # Connect sent to the shell, no answer yet
    AWAITING_BIND = "awaiting bind"  # peer connected; waiting for the client's ConnectionBind
    BOUND = "bound"  # bytes flow between the peer and the client's data connection


class PeerConnection:
    """A TCP connection between the relay and a peer (RFC 6062)."""

    __slots__ = ("id", "allocation", "peer", "state", "sink", "client", "expires", "request", "auth", "buffered")

    def __init__(self, id: int, allocation: Allocation, peer: tuple[str, int], state: ConnectionState,
                 expires: float) -> None:
        self.id = id
        self.allocation = allocation
        self.peer = peer
        self.state = state
        self.sink: Any = None
        # The client's data connection once bound (a StreamClient).
        self.client: Any = None
        self.expires = expires
        # The Connect request answered when the shell reports the outcome.
        self.request: Message | None = None
        self.auth: Auth | None = None
        # Peer bytes received before the ConnectionBind, delivered after it.
        self.buffered = bytearray()


class Allocation(RelayBudget):
    """One client's allocation: its 5-tuple, relays, permissions, channels and counters."""

    __slots__ = (
        "id", "auth", "identifier", "client", "reply_addr", "client_sink", "connected", "pad", "relays", "sinks",
        "created", "expires", "permissions", "xor_permissions", "channels", "peer_channels", "connections",
        "indication_id", "peer_bucket", "allocate_response", "alive",
        "bytes_from_client", "packets_from_client", "bytes_to_client", "packets_to_client", "dropped",
    )

    def __init__(self, id: int, auth: Auth, identifier: str, client: Any, now: float, expires: float,
                 limits: RelayLimits, peer_bucket: TokenBucket) -> None:
        super().__init__(limits, now)
        self.id = id
        self.auth = auth
        self.identifier = identifier
        self.client = client
        # Copied from the client for the hot path: where answers to the client go.
        self.reply_addr = client.reply_addr
        self.client_sink = client.sink
        # A socket connected to a UDP client (RelayBinder.connect_client), closed with the allocation:
        # then the client_sink that relayed data goes out of.
        self.connected: Any = None
        self.pad = client.stream  # ChannelData is padded over TCP/TLS
        self.relays: list[Relay] = []
        self.sinks: dict[int, Any] = {}  # address family -> UDP relay sink
        self.created = now
        self.expires = expires
        self.permissions: dict[str, Permission] = {}
        self.xor_permissions: dict[bytes, Permission] = {}  # IPv4 only, for Send indications
        self.channels: dict[int, Channel] = {}
        self.peer_channels: dict[Peer, Channel] = {}
        self.connections: dict[int, PeerConnection] = {}
        # Data indications are fire-and-forget and nobody matches their transaction IDs,
        # so one random ID per allocation lets each peer's XORed address be computed once.
        self.indication_id = os.urandom(12)
        self.peer_bucket = peer_bucket
        # The signed success answer, resent when the Allocate is retransmitted.
        self.allocate_response: tuple[bytes, bytes] | None = None
        self.alive = True
        self.bytes_from_client = 0
        self.packets_from_client = 0
        self.bytes_to_client = 0
        self.packets_to_client = 0
        self.dropped = 0

    @property
    def username(self) -> str:
        return self.auth.username

    @property
    def tcp(self) -> bool:
        return bool(self.relays) and self.relays[0].protocol == TRANSPORT_TCP

    @property
    def families(self) -> tuple[int, ...]:
        return tuple(relay.family for relay in self.relays)

    def usage(self, now: float) -> Usage:
        return Usage(
            allocations=1,
            seconds=max(0.0, now - self.created),
            bytes_from_client=self.bytes_from_client,
            packets_from_client=self.packets_from_client,
            bytes_to_client=self.bytes_to_client,
            packets_to_client=self.packets_to_client,
            dropped=self.dropped,
        )
