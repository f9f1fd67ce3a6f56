"""FRR as the lab's upstream router: zebra, bgpd and (for BFD) bfdd inside one lab host.

Each daemon gets its own config file, pid file, zebra socket and vty socket directory under the
host's directory, so nothing is shared with an FRR the machine itself may run.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from .netns import Host, wait_for

FRR_DAEMONS = Path("/usr/lib/frr")
# FRR refuses `-u root` (root is not in its vty group, frrvty), so the daemons drop to `frr`,
# which must own their directory.
FRR_USER = "frr"
# FRR's BFD defaults: 300 ms both ways, multiplier 3.
BFD_PROFILE = "lab"


@dataclass(frozen=True)
class FrrNeighbor:
    address: str
    asn: int
    password: str | None = None
    bfd: bool = False


def frr_unavailable() -> str | None:
    """Why FRR cannot run here, or None when it can."""
    missing = [d for d in ("zebra", "bgpd", "bfdd") if not (FRR_DAEMONS / d).exists()]
    if missing or shutil.which("vtysh") is None:
        return f"FRR is not installed (Debian package frr): missing {', '.join(missing) or 'vtysh'}"
    return None


def daemon_conf(hostname: str) -> str:
    return f"hostname {hostname}\nlog stdout\n"


def bfdd_conf(hostname: str, interval_ms: int) -> str:
    """bfdd's config: the profile every BFD neighbor uses, at `interval_ms` both ways, 3 missed = down."""
    return (daemon_conf(hostname) + f"bfd\n profile {BFD_PROFILE}\n  receive-interval {interval_ms}\n"
            f"  transmit-interval {interval_ms}\n  detect-multiplier 3\n exit\nexit\n")


def bgpd_conf(hostname: str, asn: int, router_id: str, neighbors: list[FrrNeighbor], maximum_paths: int = 1) -> str:
    """bgpd's config: one eBGP session per neighbor, IPv4 and IPv6 unicast on each, accepting everything;
    with `maximum_paths` above 1, equal paths from several neighbors are installed together (ECMP)."""
    lines = [
        daemon_conf(hostname).rstrip("\n"),
        f"router bgp {asn}",
        f" bgp router-id {router_id}",
        # FRR 8 otherwise drops every route from an eBGP peer that has no policy (RFC 8212).
        " no bgp ebgp-requires-policy",
    ]
    for n in neighbors:
        lines += [
            f" neighbor {n.address} remote-as {n.asn}",
            # FRR waits 120 s between connection attempts by default; BIRD may start later than FRR.
            f" neighbor {n.address} timers connect 1",
        ]
        if n.password:
            lines.append(f" neighbor {n.address} password {n.password}")
        if n.bfd:
            lines.append(f" neighbor {n.address} bfd profile {BFD_PROFILE}")
    for family in ("ipv4", "ipv6"):
        lines.append(f" address-family {family} unicast")
        lines += [f"  neighbor {n.address} activate" for n in neighbors]
        if maximum_paths > 1:
            lines.append(f"  maximum-paths {maximum_paths}")
        lines.append(" exit-address-family")
    return "\n".join(lines) + "\n"


class Frr:
    """FRR daemons in `host`; `start()` runs them, `vtysh()` and `json()` ask them."""

    def __init__(self, host: Host, asn: int, router_id: str, neighbors: list[FrrNeighbor], maximum_paths: int = 1,
                 bfd_interval_ms: int = 300):
        self.host = host
        self.dir = host.dir / "frr"
        self.vty = self.dir / "vty"
        self.zserv = self.dir / "zserv.api"
        self.daemons = ["zebra", "bgpd"] + (["bfdd"] if any(n.bfd for n in neighbors) else [])
        self.configs = {d: daemon_conf(host.name) for d in self.daemons}
        self.configs["bgpd"] = bgpd_conf(host.name, asn, router_id, neighbors, maximum_paths)
        if "bfdd" in self.configs:
            self.configs["bfdd"] = bfdd_conf(host.name, bfd_interval_ms)

    def start(self, timeout: float = 10.0) -> None:
        self.vty.mkdir(parents=True)
        for daemon, text in self.configs.items():
            (self.dir / f"{daemon}.conf").write_text(text)
        for path in (self.dir, self.vty, *self.dir.iterdir()):
            shutil.chown(path, FRR_USER, FRR_USER)
        for daemon in self.daemons:
            argv = [
                FRR_DAEMONS / daemon,
                "-f", self.dir / f"{daemon}.conf",
                "-i", self.dir / f"{daemon}.pid",
                "-z", self.zserv,
                "--vty_socket", self.vty,
                "-P", "0",  # no TCP vty port: vtysh uses the unix socket
            ]
            if daemon == "bfdd":
                argv += ["--bfdctl", self.dir / "bfdd.sock"]
            self.host.popen(argv, log=daemon)
            # bgpd and bfdd find their routes and interfaces through zebra; the vty socket says a daemon is up.
            wait_for(lambda: (self.vty / f"{daemon}.vty").exists(), f"FRR {daemon} in {self.host}",
                     timeout, detail=lambda: self.log(daemon))

    def log(self, daemon: str) -> str:
        return self.host.log_path(daemon).read_text()

    def vtysh(self, *commands: str) -> str:
        argv = ["vtysh", "--vty_socket", self.vty]
        for command in commands:
            argv += ["-c", command]
        return self.host.run(argv).stdout

    def json(self, command: str) -> dict:
        """The JSON that `command` (ending in `json`) prints."""
        return json.loads(self.vtysh(command))
