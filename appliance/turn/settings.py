"""The TURN core's settings.

What an operator sets comes from the configuration's `[turn]` table, whose defaults live
in appliance/config/schema.py only; the rest are protocol constants of the RFCs.
"""
from __future__ import annotations

from dataclasses import dataclass

from appliance.config import TurnConfig

from .credentials import REST
from ..plumbing.buckets import unlimited
from .ratelimit import RelayLimits

_CONFIG = TurnConfig()


@dataclass(frozen=True)
class TurnSettings:
    realm: str = _CONFIG.realm
    # At most one IPv4 and one IPv6 address to allocate relays on.
    relay_addresses: tuple[str, ...] = (str(_CONFIG.relay_address),)
    relay_ports: tuple[int, int] = (_CONFIG.relay_ports.first, _CONFIG.relay_ports.last)
    max_lifetime: float = _CONFIG.max_lifetime
    nonce_lifetime: float = _CONFIG.nonce_lifetime
    user_quota: int = _CONFIG.user_quota
    # (issuer, quota) for the issuers given one; every issuer is also held to the relay ports less the reserve.
    issuer_quotas: tuple[tuple[str, int], ...] = ()
    issuer_reserve: float = _CONFIG.issuer_reserve
    stream_idle_timeout: float = _CONFIG.stream_idle_timeout
    max_streams: int = _CONFIG.max_streams
    max_peers: int = _CONFIG.max_peers
    # 0 means no limit (benchmarks).
    packets_per_second: float = _CONFIG.rate_limit_pps
    bits_per_second: float = _CONFIG.rate_limit_bps
    new_peers_per_second: float = _CONFIG.new_peers_per_second
    new_peer_burst: int = _CONFIG.new_peer_burst
    usage_retention: float = _CONFIG.usage_retention
    max_revocations: int = _CONFIG.max_revocations

    software: str = "Edgecall"
    # RFC 8656: allocations default to 10 minutes, permissions last 300 s, channels 600 s.
    default_lifetime: float = 600.0
    permission_lifetime: float = 300.0
    channel_lifetime: float = 600.0
    # RFC 6062: a peer connection waits 30 s for its ConnectionBind, and a Connect as long.
    connection_bind_timeout: float = 30.0
    connect_timeout: float = 30.0
    # Ports to try binding before answering 508 Insufficient Capacity.
    bind_attempts: int = 8
    # Peer data buffered for a TCP connection until the client binds it (RFC 6062 5.3).
    connection_buffer: int = 65536

    @property
    def relay_limits(self) -> RelayLimits:
        return RelayLimits(unlimited(self.packets_per_second), unlimited(self.bits_per_second / 8))

    @classmethod
    def from_config(cls, turn: TurnConfig) -> TurnSettings:
        return cls(
            realm=turn.realm,
            relay_addresses=tuple(map(str, turn.relay_addresses)),
            relay_ports=(turn.relay_ports.first, turn.relay_ports.last),
            max_lifetime=turn.max_lifetime,
            nonce_lifetime=turn.nonce_lifetime,
            user_quota=turn.user_quota,
            issuer_quotas=tuple((key.id, key.quota) for key in turn.keys if key.quota is not None)
            + (((REST, turn.rest_quota),) if turn.rest_quota is not None else ()),
            issuer_reserve=turn.issuer_reserve,
            stream_idle_timeout=turn.stream_idle_timeout,
            max_streams=turn.max_streams,
            max_peers=turn.max_peers,
            packets_per_second=turn.rate_limit_pps,
            bits_per_second=turn.rate_limit_bps,
            new_peers_per_second=turn.new_peers_per_second,
            new_peer_burst=turn.new_peer_burst,
            usage_retention=turn.usage_retention,
            max_revocations=turn.max_revocations,
        )
