"""The configuration schema: frozen dataclasses, with every default in this one file.

A field with no default is required when its table is present. `X | None` is an
optional key or table; `tuple[X, ...]` is an array (of tables when X is a dataclass).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from .values import (ASN, IP, AbsolutePath, Count, Endpoint, Endpoints, Id, Interface, InterfaceName, IPAddr, IPIface,
                     IPv4, Listener, Network, NonNegative, Port, PortRange, Seconds, Share)

LOOPBACK = ipaddress.IPv4Address("127.0.0.1")


@dataclass(frozen=True)
class NodeConfig:
    id: Id = "edge-1"
    # What the services keep across restarts (TURN revocations), on the image's state partition;
    # the unit's StateDirectory= makes it the service user's.
    state_dir: AbsolutePath = "/var/lib/edgecall"


@dataclass(frozen=True)
class ApiConfig:
    listen: Endpoint = Endpoint(LOOPBACK, 8080)
    cors_origins: tuple[str, ...] = ("*",)
    # How long SIGTERM waits for in-flight requests before the process exits.
    shutdown_timeout: Seconds = 1.0
    # A connection is closed when it has not sent a whole request's headers this long after it
    # opened or after its last answer (keep-alive), and a request whose body takes longer than
    # body_timeout gets 408: idle or trickling clients cannot hold the box's files.
    idle_timeout: Seconds = 15.0
    body_timeout: Seconds = 10.0
    # The start banner (which goes to the journal) shows app secrets and TURN key tokens whole
    # only when this is set, as the generated demo defaults do; otherwise their first characters.
    print_secrets: bool = False
    # When set, /metrics answers only requests with "Authorization: Bearer <metrics_token>".
    metrics_token: str | None = None
    # The operator's token: the dashboard (/dashboard) and the usage API (/v1/usage) answer only
    # "Authorization: Bearer <admin_token>"; unset, both answer 401 saying so.
    admin_token: str | None = None


@dataclass(frozen=True)
class AppConfig:
    id: Id
    secret: str
    # Live sessions the app may hold at once, and new sessions per second (burst: one second's
    # worth); past either, sessions/new answers 429 with Retry-After. 0: no limit.
    max_sessions: NonNegative = 5000
    sessions_per_second: NonNegative = 100
    # Every API request of the app, per second (Cloudflare documents 50 per session). 0: no limit.
    requests_per_second: NonNegative = 1000
    # WHEP players may play the app's streams without a token (a public broadcast).
    public_playback: bool = False
    # The TURN key whose credentials WHIP and WHEP answers offer in their Link headers (counted
    # against its quota); none: credentials signed with [turn] secrets (the issuer "rest").
    turn_key: Id | None = None


@dataclass(frozen=True)
class SfuConfig:
    enabled: bool = True
    # The media port: one address or several (one socket each, say IPv4 and IPv6), same port advised.
    udp: Endpoints = (Endpoint(LOOPBACK, 3479),)
    # ICE-TCP passive candidates (RFC 6544); empty: none.
    tcp: Endpoints = ()
    public_addresses: tuple[IP, ...] = ()
    # The retransmission cache: the box answers subscribers' NACKs itself and NACKs its
    # publishers once per lost packet. Off (for comparison runs): no cache, subscribers' NACKs go
    # unanswered (they fall back to keyframe requests) and publishers get none.
    retransmissions: bool = True
    # Worker processes that carry sessions (appliance/workers/): the kernel spreads the media port's
    # flows over them. 0 (the default): one per core; 1: a single process. With more than one, the
    # workers share a store (the cluster's, or a nats-server of their own on loopback) and trunk
    # tracks to each other as boxes do.
    workers: NonNegative = 0


@dataclass(frozen=True)
class TurnKeyConfig:
    id: Id
    token: str
    # Allocations this key's credentials may hold at once, all usernames together (486 beyond).
    quota: Count | None = None


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
    # RFC 6156: the IPv6 address for relays of that family, when relay_address is IPv4.
    relay_address_v6: IP | None = None
    relay_ports: PortRange = PortRange(49152, 65535)
    allow_peers: tuple[Network, ...] = ()
    credential_max_ttl: Count = 48 * 3600
    # The host written into the URLs the credentials API returns (default: each listener's address).
    public_host: str | None = None
    max_lifetime: Count = 3600
    # A NONCE this old gets 438 Stale Nonce (coturn: 600 s).
    nonce_lifetime: Count = 600
    # Allocations one username may hold at once (486 beyond).
    user_quota: Count = 10
    # Allocations the credentials signed with `secrets` themselves (the issuer "rest") may hold at once.
    rest_quota: Count | None = None
    # The share of relay ports no one issuer (a TURN key, or "rest") may take: kept for the others (486 beyond).
    issuer_reserve: Share = 0.2
    # A TCP/TLS client connection holding no allocation is closed after this long (the TLS handshake included).
    stream_idle_timeout: Seconds = 30.0
    # TCP/TLS client connections open at once, RFC 6062 data connections included; more are refused and counted.
    max_streams: Count = 32768
    # Permissions plus RFC 6062 peer connections per allocation (508 beyond).
    max_peers: Count = 100
    # Per-allocation relay budget, both directions together (Cloudflare's TURN documents about
    # 5-10 kpps and 50-100 Mbps); over it packets are dropped and counted. 0: no limit.
    rate_limit_pps: NonNegative = 10_000
    rate_limit_bps: NonNegative = 100_000_000
    # New peer addresses per allocation per second (Cloudflare: about 5), with a burst for ICE's start. 0: no limit.
    new_peers_per_second: NonNegative = 5
    new_peer_burst: Count = 10
    # How long a customIdentifier's usage totals are kept after its last allocation ends.
    usage_retention: Count = 3600
    # /metrics labels usage by the top this many customIdentifiers; the rest are summed as "other".
    metrics_identifiers: NonNegative = 50
    # Revoked credentials held at once (each until it expires); past it a revocation answers 503.
    max_revocations: Count = 50_000
    keys: tuple[TurnKeyConfig, ...] = ()
    # Worker processes that relay (0, the default: one per core, at most one per relay port): each
    # owns an equal slice of relay_ports, and the kernel spreads the listeners' flows and connections
    # over them. Limits (quotas, max_streams) hold per worker.
    workers: NonNegative = 0

    @property
    def relay_addresses(self) -> tuple[IPAddr, ...]:
        """The addresses relays are allocated on: relay_address, then relay_address_v6 if set."""
        return (self.relay_address,) + ((self.relay_address_v6,) if self.relay_address_v6 else ())


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
class UplinkConfig:
    interface: InterfaceName
    addresses: tuple[Interface, ...] = ()


@dataclass(frozen=True)
class RouteConfig:
    to: Network
    via: IP | None = None
    interface: InterfaceName | None = None
    # None: the kernel's default (0 for IPv4, 1024 for IPv6).
    metric: Count | None = None


@dataclass(frozen=True)
class NetConfig:
    """The host's network state that `appliance net apply` makes the kernel hold."""

    # Where the anycast prefixes go as addresses: lo works on every kernel (this one has no dummy).
    anycast_interface: InterfaceName = "lo"
    # What `net apply` created, so that it never removes anything else; /run goes with the kernel state at reboot.
    state_file: str = "/run/appliance/netconfig.json"
    uplinks: tuple[UplinkConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()


@dataclass(frozen=True)
class AnnounceConfig:
    """The health agent (`appliance announce`): probe the services, announce the prefixes while they pass."""

    interval: Seconds = 0.5
    timeout: Seconds = 0.4
    rise: Count = 3
    fall: Count = 2
    # After a withdraw, the prefixes stay withdrawn at least this long: no flapping.
    hold_down: Seconds = 10.0
    # The agent writes the announcing static protocols here; bird.conf includes <bird_dir>/*.conf.
    bird_dir: str = "/run/appliance/bird"


@dataclass(frozen=True)
class DrainConfig:
    # On SIGTERM the box reports draining and keeps serving this long before closing its sockets.
    # 0 suits a box nobody routes to (the loopback demo); the image's unit passes --drain-time.
    time: Seconds = 0.0


@dataclass(frozen=True)
class BackbonePeerConfig:
    node: Id
    underlay: IP
    overlay: IP
    relay_ports: PortRange
    # The peer's IPv6 address inside the backbone: the gateway for IPv6 relay packets to it.
    overlay_v6: IP | None = None
    # kind = "wireguard": the peer's public key (base64).
    public_key: str | None = None

    @property
    def overlays(self) -> dict[int, IPAddr]:
        """The peer's overlay addresses by IP version."""
        return {self.overlay.version: self.overlay, **({6: self.overlay_v6} if self.overlay_v6 else {})}


@dataclass(frozen=True)
class BackboneConfig:
    """The tunnels to the other boxes, and the policy routing that forwards each peer's relay
    port slice to it (netconfig/backbone.py says how every number below is used)."""

    underlay: IP
    # This box's address inside the backbone; the prefix is the backbone's subnet, which holds every
    # peer's overlay address. An address's index in it numbers the peer's table and VXLAN VNI.
    overlay: Interface
    kind: Literal["vxlan", "wireguard", "gre"] = "vxlan"
    peers: tuple[BackbonePeerConfig, ...] = ()
    overlay_v6: Interface | None = None
    # The MTU of the path between the boxes; each tunnel's MTU is this minus its encapsulation.
    underlay_mtu: Count = 1500
    vxlan_port: Port = 4789
    # kind = "wireguard": this box's private key (base64), and the first of the listen ports.
    private_key: str | None = None
    wireguard_port: Port = 51820
    # A peer's routing table is table_base plus its overlay address's index.
    table_base: Count = 1000
    # The first of the four rule priorities used (from the tunnels, their catch-all, steering, local).
    rule_priority: Count = 100
    # Exempt relay ports from conntrack and count each slice's packets, with nftables.
    notrack: bool = True

    @property
    def overlays(self) -> dict[int, IPIface]:
        """This box's overlay addresses by IP version."""
        return {self.overlay.version: self.overlay, **({6: self.overlay_v6} if self.overlay_v6 else {})}


@dataclass(frozen=True)
class ClusterConfig:
    # NATS servers (nats:// or tls:// URLs), this box's own first; empty: a single box with its
    # store in the process.
    nats: tuple[str, ...] = ()
    # Required with nats: seals what the store holds (ICE passwords, the cluster certificate's
    # key) and authenticates what boxes send each other (trunks, forwarded requests).
    secret: str | None = None
    # A box sends one track to at most this many boxes; further boxes take it from one of those.
    trunk_fanout: Count = 8
    # Where this box sends and receives media trunks: by default the backbone overlay address,
    # port 3480 (loopback without a backbone).
    trunk: Endpoint | None = None
    # Where other boxes reach this box's API (forwarded requests): by default the overlay
    # address with [api] listen's port.
    api: Endpoint | None = None
    # NATS authentication and TLS, as nats-server issues them.
    nats_credentials: AbsolutePath | None = None
    nats_ca: AbsolutePath | None = None
    # A node is gone when three heartbeats in a row (every `heartbeat` seconds) did not come:
    # a tree of trunks repairs itself around it within 2 s.
    heartbeat: Seconds = 0.5


@dataclass(frozen=True)
class MeetConfig:
    # The app whose sessions the meeting page at /meet/{room} uses; none: no meeting page. Pages get
    # short-lived room tokens for it, never its secret.
    app: Id | None = None
    # How long a room token lets a page act: it joins again (a reload) for another.
    token_ttl: Count = 3600
    # People in one room at once; past it a join answers 429.
    max_participants: Count = 50


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
    meet: MeetConfig = field(default_factory=MeetConfig)
    net: NetConfig = field(default_factory=NetConfig)
    announce: AnnounceConfig = field(default_factory=AnnounceConfig)
    drain: DrainConfig = field(default_factory=DrainConfig)
