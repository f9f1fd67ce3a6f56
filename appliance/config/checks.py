"""Checks across keys that the per-key parsers cannot see: clashes, duplicates, missing pieces."""
from __future__ import annotations

import os
from collections.abc import Iterator
from urllib.parse import urlsplit

from .backbone_checks import backbone_findings
from .lines import Path, dotted
from .schema import Config
from .values import Endpoint, PortRange, IPAddr

Finding = tuple[Path, str]


def _hosts_overlap(a: IPAddr, b: IPAddr) -> bool:
    # An unspecified address binds every address of its family; "::" may also take IPv4 (dual-stack).
    if a == b:
        return True
    if a.is_unspecified and (a.version == b.version or a.version == 6):
        return True
    return b.is_unspecified and (a.version == b.version or b.version == 6)


def _sockets(config: Config) -> Iterator[tuple[str, Endpoint, Path]]:
    yield "tcp", config.api.listen, ("api", "listen")
    if config.sfu.enabled:
        for proto in ("udp", "tcp"):
            endpoints = getattr(config.sfu, proto)
            for i, endpoint in enumerate(endpoints):
                # A single address is usually written as a plain string: name it without an index.
                yield proto, endpoint, ("sfu", proto) + ((i,) if len(endpoints) > 1 else ())
    if config.turn.enabled:
        for i, listener in enumerate(config.turn.listen):
            yield listener.protocol, listener.endpoint, ("turn", "listen", i)


def _port_clashes(config: Config) -> Iterator[Finding]:
    seen: list[tuple[str, Endpoint, Path]] = []
    for proto, endpoint, path in _sockets(config):
        for other_proto, other, other_path in seen:
            if proto == other_proto and endpoint.port == other.port and _hosts_overlap(endpoint.host, other.host):
                yield path, f"{proto} port {endpoint} clashes with {dotted(other_path)} ({other})"
        seen.append((proto, endpoint, path))
        relay = config.turn
        if relay.enabled and endpoint.port in relay.relay_ports and _hosts_overlap(endpoint.host, relay.relay_address):
            yield path, f"port {endpoint.port} lies inside turn.relay_ports ({relay.relay_ports}) on the relay address"


def _relay_ranges(config: Config) -> Iterator[Finding]:
    ranges: list[tuple[PortRange, Path]] = [(config.turn.relay_ports, ("turn", "relay_ports"))]
    if config.backbone:
        ranges += [(p.relay_ports, ("backbone", "peers", i, "relay_ports")) for i, p in enumerate(config.backbone.peers)]
    for i, (a, path) in enumerate(ranges):
        for b, other_path in ranges[:i]:
            if a.overlaps(b):
                yield path, f"relay port range {a} overlaps {dotted(other_path)} ({b})"


def _duplicates(config: Config) -> Iterator[Finding]:
    groups = [
        ("apps", "id", [a.id for a in config.apps]),
        (("turn", "keys"), "id", [k.id for k in config.turn.keys]),
    ]
    if config.bgp:
        groups.append((("bgp", "neighbors"), "address", [str(n.address) for n in config.bgp.neighbors]))
    if config.backbone:
        groups.append((("backbone", "peers"), "node", [p.node for p in config.backbone.peers]))
    for table, key, values in groups:
        base = table if isinstance(table, tuple) else (table,)
        for i, value in enumerate(values):
            if value in values[:i]:
                yield base + (i, key), f"duplicate {key} {value!r}"
    if config.backbone:
        for i, peer in enumerate(config.backbone.peers):
            if peer.node == config.node.id:
                yield ("backbone", "peers", i, "node"), f"a peer cannot be this node itself ({config.node.id!r})"


def _turn(config: Config) -> Iterator[Finding]:
    turn = config.turn
    if not turn.enabled:
        return
    if any(listener.transport == "tls" for listener in turn.listen):
        for name in ("tls_cert", "tls_key"):
            value = getattr(turn, name)
            if not value:
                yield ("turn", name), "expected a file path because turn.listen has a tls:// listener, found nothing"
            elif not os.access(value, os.R_OK):
                yield ("turn", name), f"expected a readable file, found {value!r} (missing or unreadable)"
    v6 = turn.relay_address_v6
    if v6 is not None and (v6.version != 6 or turn.relay_address.version != 4):
        yield ("turn", "relay_address_v6"), (
            f"expected an IPv6 address beside an IPv4 turn.relay_address, found {v6} beside {turn.relay_address}"
        )
    if turn.keys and not turn.secrets:
        yield ("turn", "secrets"), "expected at least one secret to sign the credentials of turn.keys, found none"
    for i, secret in enumerate(turn.secrets):
        if not secret:
            yield ("turn", "secrets", i), "expected a non-empty secret, found \"\""
    for i, key in enumerate(turn.keys):
        if key.id == "rest":
            # Quotas and /metrics name the credentials signed with turn.secrets themselves "rest".
            yield ("turn", "keys", i, "id"), "expected an id other than \"rest\", the issuer name of turn.secrets"
    if turn.stream_idle_timeout <= 0:
        yield ("turn", "stream_idle_timeout"), "expected more than 0 seconds"
    ports = len(turn.relay_ports)
    if turn.workers > ports:  # one per core (0) takes no more than there are ports
        yield ("turn", "workers"), (f"expected at most one worker per relay port: {turn.workers} workers cannot "
                                    f"share the {ports} port(s) of turn.relay_ports ({turn.relay_ports})")


def _secrets(config: Config) -> Iterator[Finding]:
    keys = [key.id for key in config.turn.keys]
    for i, app in enumerate(config.apps):
        if not app.secret:
            yield ("apps", i, "secret"), "expected a non-empty secret, found \"\""
        if app.turn_key is not None and app.turn_key not in keys:
            yield ("apps", i, "turn_key"), (f"expected the id of one of turn.keys ({', '.join(keys) or 'none'}), "
                                            f"found {app.turn_key!r}")
    for i, key in enumerate(config.turn.keys):
        if not key.token:
            yield ("turn", "keys", i, "token"), "expected a non-empty token, found \"\""
    if config.api.metrics_token == "":
        yield ("api", "metrics_token"), "expected a non-empty token, found \"\" (leave the key out for an open /metrics)"
    if config.api.admin_token == "":
        yield ("api", "admin_token"), "expected a non-empty token, found \"\" (leave the key out to turn the dashboard off)"


def _meet(config: Config) -> Iterator[Finding]:
    apps = [app.id for app in config.apps]
    if config.meet.app is not None and config.meet.app not in apps:
        yield ("meet", "app"), f"expected the id of one of the apps ({', '.join(apps) or 'none'}), found {config.meet.app!r}"
    if config.meet.token_ttl < 60:
        yield ("meet", "token_ttl"), f"expected at least 60 seconds, found {config.meet.token_ttl}"


def _net(config: Config) -> Iterator[Finding]:
    net = config.net
    interfaces = [u.interface for u in net.uplinks]
    for i, name in enumerate(interfaces):
        if name in interfaces[:i]:
            yield ("net", "uplinks", i, "interface"), f"duplicate interface {name!r}"
    seen: list[tuple[object, object]] = []
    for i, route in enumerate(net.routes):
        path = ("net", "routes", i)
        if route.via is None and route.interface is None:
            yield path + ("via",), "expected a gateway (via) or an interface for the route, found neither"
        if route.via is not None and route.via.version != route.to.version:
            yield path + ("via",), f"expected an IPv{route.to.version} gateway for {route.to}, found {route.via}"
        key = (route.to, route.metric)
        if key in seen:
            yield path + ("to",), f"duplicate route to {route.to}" + (f" with metric {route.metric}" if route.metric else "")
        seen.append(key)


def _announce(config: Config) -> Iterator[Finding]:
    announce = config.announce
    if announce.interval <= 0:
        yield ("announce", "interval"), "expected more than 0 seconds between probe rounds"
    if not 0 < announce.timeout < announce.interval:
        yield ("announce", "timeout"), f"expected more than 0 and less than announce.interval ({announce.interval} s)"


# Linux's TCP_MD5SIG_MAXKEYLEN. BIRD parses a longer key but the session then fails when BIRD
# sets the key on its socket, which is a worse place to find out.
MAX_PASSWORD_BYTES = 80


def _bird_strings(config: Config) -> Iterator[Finding]:
    """What the bird.conf renderer writes as BIRD strings, which have no escapes: refused here, with the key
    and line, rather than by the renderer at boot."""
    strings: list[Finding] = [(("announce", "bird_dir"), config.announce.bird_dir)]
    for i, neighbor in enumerate(config.bgp.neighbors if config.bgp else ()):
        path = ("bgp", "neighbors", i, "password")
        if neighbor.password == "":
            yield path, "expected a non-empty password (leave the key out for none)"
        elif neighbor.password is not None and len(neighbor.password.encode()) > MAX_PASSWORD_BYTES:
            yield path, f"a TCP MD5 password has at most {MAX_PASSWORD_BYTES} bytes"
        elif neighbor.password is not None:
            strings.append((path, neighbor.password))
    for where, text in strings:
        if '"' in text or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            yield where, "BIRD cannot quote a '\"', a line break or a control character"


def _host_and_port(url: str) -> bool:
    try:
        parts = urlsplit(url)
        return bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number up to 65535, or a broken [IPv6] host
        return False


def _cluster(config: Config) -> Iterator[Finding]:
    cluster = config.cluster
    for i, url in enumerate(cluster.nats):
        scheme = url.partition("://")[0]
        if scheme not in ("nats", "tls") or "://" not in url:
            yield ("cluster", "nats", i), f"expected a nats:// or tls:// URL, found {url!r}"
        elif not _host_and_port(url):
            # The box's NATS server listens where the first one says (appliance/cluster/nats_server.py).
            yield ("cluster", "nats", i), f"expected a host and, optionally, a port (nats://HOST:PORT), found {url!r}"
    if cluster.nats and not cluster.secret:
        yield ("cluster", "nats"), "a cluster needs [cluster] secret: it seals the store and authenticates trunks"
    if cluster.secret is not None and len(cluster.secret) < 16:
        yield ("cluster", "secret"), "expected at least 16 characters (a random string shared by every box)"


def findings(config: Config) -> list[Finding]:
    out: list[Finding] = []
    for check in (_port_clashes, _relay_ranges, _duplicates, _turn, _secrets, _meet, _net, _announce, _bird_strings,
                  _cluster, backbone_findings):
        out.extend(check(config))
    return out
