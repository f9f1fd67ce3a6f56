"""The nats-server a clustered box runs (systemd/nats-server.service): its config file, rendered from
appliance.toml alone, and what its clients and routes present to it. Both are derived from `[cluster]
secret`, so only boxes holding the secret read the store or join the cluster, and nobody copies a
password from box to box.

The server takes clients on the host and port of the first `[cluster] nats` URL (the box's own); routes
listen on the backbone overlay address, port 6222, and go to every `[[backbone.peers]]` overlay address
on the same port.
"""
from __future__ import annotations

import json
from urllib.parse import urlsplit

from ..config import Config
from ..config.values import IPAddr
from .seal import derive

CLIENT_PORT = 4222  # a URL without a port means NATS's own default
ROUTE_PORT = 6222
STORE_DIR = "/var/lib/nats"  # the unit's StateDirectory=
CLUSTER_NAME = "edgecall"
ROUTE_USER = "edgecall"


def client_token(secret: str) -> str:
    """The token every client of the cluster's servers presents (nats-py's `token=`)."""
    return derive(secret, "nats client").hex()


def route_password(secret: str) -> str:
    """The password of ROUTE_USER, which the servers of the cluster present to each other."""
    return derive(secret, "nats routes").hex()


def _client_listen(url: str) -> tuple[str, int]:
    """The host and port a `[cluster] nats` URL names (config checks made sure it names both well)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"{url!r} names no host")
    return parts.hostname, parts.port or CLIENT_PORT


def render_nats_conf(config: Config, store_dir: str = STORE_DIR, route_port: int = ROUTE_PORT) -> str:
    """nats-server's config file (its own format) for this box. Servers of one cluster agree on
    `route_port`; a test on loopback passes a free one, and `store_dir` a directory of its own."""
    cluster = config.cluster
    if not cluster.nats or not cluster.secret:
        raise ValueError("only a box with [cluster] nats and secret runs a NATS server")
    host, port = _client_listen(cluster.nats[0])
    lines = [
        "# Rendered from appliance.toml by `appliance boot config`; it is rewritten at every boot.",
        f"server_name: {_string(config.node.id)}",
        f"host: {_string(host)}",
        f"port: {port}",
        "jetstream {",
        f"  store_dir: {_string(store_dir)}",
        "}",
        "authorization {",
        f"  token: {_string(client_token(cluster.secret))}",
        "}",
    ]
    backbone = config.backbone
    # nats-server refuses a cluster block without routes when JetStream is on: a box without peers is
    # a cluster of one.
    if backbone is not None and backbone.peers:
        password = route_password(cluster.secret)
        routes = [f"nats-route://{ROUTE_USER}:{password}@{_url_host(peer.overlay)}:{route_port}"
                  for peer in backbone.peers]
        lines += [
            "cluster {",
            f"  name: {_string(CLUSTER_NAME)}",
            f"  host: {_string(str(backbone.overlay.ip))}",
            f"  port: {route_port}",
            "  authorization {",
            f"    user: {_string(ROUTE_USER)}",
            f"    password: {_string(password)}",
            "  }",
            "  routes: [",
            *(f"    {_string(route)}," for route in routes),
            "  ]",
            "}",
        ]
    return "\n".join(lines) + "\n"


def _string(text: str) -> str:
    # NATS's config format reads JSON's double-quoted strings; what goes in here is ids, addresses and hex.
    return json.dumps(text)


def _url_host(address: IPAddr) -> str:
    return f"[{address}]" if address.version == 6 else str(address)
