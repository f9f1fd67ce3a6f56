"""The configuration schema: frozen dataclasses, with every default in this one file.

A field with no default is required when its table is present. `X | None` is an
optional key or table; `tuple[X, ...]` is an array (of tables when X is a dataclass).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from .values import ASN, IP, Count, Endpoint, Interface, IPv4, Listener, Network, PortRange, Seconds

LOOPBACK = ipaddress.IPv4Address("127.0.0.1")


@dataclass(frozen=True)
class NodeConfig:
    id: str = "edge-1"


@dataclass(frozen=True)
class ApiConfig:
    listen: Endpoint = Endpoint(LOOPBACK, 8080)
    cors_origins: tuple[str, ...] = ("*",)
    # How long SIGTERM waits for in-flight requests before the process exits.
    shutdown_timeout: Seconds = 1.0


@dataclass(frozen=True)
class AppConfig:
    id: str
    secret: str


@dataclass(frozen=True)
class SfuConfig:
    enabled: bool = True
    udp: Endpoint = Endpoint(LOOPBACK, 3479)
    tcp: Endpoint | None = None
    public_addresses: tuple[IP, ...] = ()


@dataclass(frozen=True)
class TurnKeyConfig:
    id: str
    token: str


@dataclass(frozen=True)
class TurnConfig:
    enabled: bool = True
    listen: tuple[Listener, ...] = (
        Listener("udp", Endpoint(LOOPBACK, 3478)),
        Listener("tcp", Endpoint(LOOPBACK, 3478)),
    )
    tls_cert: str | None = None
    tls_key: str | None = None
    realm: str = "edgecall"
    secrets: tuple[str, ...] = ()
    relay_address: IP = LOOPBACK
    relay_ports: PortRange = PortRange(49152, 65535)
    allow_peers: tuple[Network, ...] = ()
    credential_max_ttl: Count = 48 * 3600
    keys: tuple[TurnKeyConfig, ...] = ()


@dataclass(frozen=True)
class AnycastConfig:
    prefixes: tuple[Network, ...] = ()


@dataclass(frozen=True)
class BgpNeighborConfig:
    address: IP
    asn: ASN
    password: str | None = None
    bfd: bool = True


@dataclass(frozen=True)
class BgpConfig:
    local_asn: ASN
    router_id: IPv4
    control_socket: str = "/run/bird/bird.ctl"
    neighbors: tuple[BgpNeighborConfig, ...] = ()


@dataclass(frozen=True)
class BackbonePeerConfig:
    node: str
    underlay: IP
    overlay: IP
    relay_ports: PortRange


@dataclass(frozen=True)
class BackboneConfig:
    underlay: IP
    overlay: Interface
    kind: Literal["vxlan", "wireguard", "gre"] = "vxlan"
    peers: tuple[BackbonePeerConfig, ...] = ()


@dataclass(frozen=True)
class ClusterConfig:
    nats: tuple[str, ...] = ()


@dataclass(frozen=True)
class Config:
    node: NodeConfig = field(default_factory=NodeConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    apps: tuple[AppConfig, ...] = ()
    sfu: SfuConfig = field(default_factory=SfuConfig)
    turn: TurnConfig = field(default_factory=TurnConfig)
    anycast: AnycastConfig = field(default_factory=AnycastConfig)
    bgp: BgpConfig | None = None
    backbone: BackboneConfig | None = None
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
