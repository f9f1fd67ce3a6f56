"""BIRD 2's configuration, rendered from the appliance's: announce the anycast prefixes, learn nothing.

The prefixes come from static protocols that bird.conf does not hold: it includes every file in
`[announce] bird_dir`, where the health agent writes them (`render_announcement`) while the box is
healthy and removes them to withdraw, then tells BIRD to `configure`. A BIRD that starts or
reloads therefore announces exactly what the agent last decided, and nothing before it has
decided. The output must parse on BIRD 2.0.12 (Debian bookworm), so it sticks to syntax that
version has.
"""
from __future__ import annotations

import os
import re

from appliance.config import BgpNeighborConfig, Config
from appliance.config.checks import MAX_PASSWORD_BYTES

STATIC_PROTOCOL = {4: "anycast4", 6: "anycast6"}
CHANNEL = {4: "ipv4", 6: "ipv6"}


def render_bird_conf(config: Config) -> str:
    """The whole bird.conf for `config`; raises ValueError when it cannot be written safely."""
    bgp = config.bgp
    if bgp is None:
        raise ValueError("the configuration has no [bgp] table, so there is no BIRD configuration to render")
    families: set[int] = {prefix.version for prefix in config.anycast.prefixes}
    out = [
        # Even in a comment: a line break in the id would start a line of configuration.
        f"# Rendered by Edgecall for node {_quoted(config.node.id, 'node.id')} from the appliance configuration;",
        "# edits here are lost at the next render.",
        "",
        # Explicit: BIRD otherwise takes the lowest IPv4 address it sees, which may be an anycast one.
        f"router id {bgp.router_id};",
        "",
        # Tracks interfaces, which BGP needs to reach its neighbors. There is no `protocol kernel`:
        # the anycast addresses sit on `lo`, so the announcement's blackhole routes must never reach the kernel.
        "protocol device {",
        "}",
        "",
    ]
    if any(neighbor.bfd for neighbor in bgp.neighbors):
        out += ["protocol bfd {", "}", ""]
    # A pattern, not a file name: BIRD accepts a pattern that matches nothing (withdrawn).
    out += [f"include {_quoted(announcement_pattern(config), 'announce.bird_dir')};", ""]
    names: set[str] = set()
    for index, neighbor in enumerate(bgp.neighbors):
        name = protocol_name(neighbor)
        if name in names:
            raise ValueError(f"bgp.neighbors[{index}]: {neighbor.address} gives the BIRD protocol name {name}, already taken")
        names.add(name)
        out += _bgp_protocol(name, index, bgp.local_asn, neighbor, families)
    return "\n".join(out)


def announcement_path(config: Config) -> str:
    """The file the health agent writes to announce and removes to withdraw."""
    return os.path.join(config.announce.bird_dir, "announce.conf")


def announcement_pattern(config: Config) -> str:
    return os.path.join(config.announce.bird_dir, "*.conf")


def render_announcement(config: Config) -> str:
    """The static protocols that put the anycast prefixes into BIRD's tables, for BGP to export."""
    out = ["# Written by `appliance announce` while every probe passes; removed to withdraw.", ""]
    for version in (4, 6):
        prefixes = [p for p in config.anycast.prefixes if p.version == version]
        if prefixes:
            out += [f"protocol static {STATIC_PROTOCOL[version]} {{", f"    {CHANNEL[version]};"]
            out += [f"    route {p} blackhole;" for p in prefixes]
            out += ["}", ""]
    return "\n".join(out)


def protocol_name(neighbor: BgpNeighborConfig) -> str:
    """The BIRD protocol name of the session to `neighbor`, as `show protocols` lists it."""
    return "peer_" + re.sub(r"[^0-9A-Za-z]", "_", str(neighbor.address))


def _bgp_protocol(name: str, index: int, local_asn: int, neighbor: BgpNeighborConfig, families: set[int]) -> list[str]:
    address = neighbor.address
    scope = getattr(address, "scope_id", None)
    if address.version == 6 and address.is_link_local and not scope:
        raise ValueError(
            f"bgp.neighbors[{index}]: {address} is link-local; write it with its interface, like {address}%eth0"
        )
    out = [
        f"protocol bgp {name} {{",
        f"    local as {local_asn};",
        # BIRD wants a scoped address's interface apart from the address.
        f"    neighbor {str(address).split('%')[0]} as {neighbor.asn};",
    ]
    if scope:
        out.append(f"    interface {_quoted(scope, f'bgp.neighbors[{index}].address')};")
    if neighbor.password is not None:
        out.append(f"    password {_password(neighbor.password, index)};")
    if neighbor.bfd:
        out.append("    bfd on;")
    # A dead box must lose its routes at once, not after the peer holds them stale for 120 s.
    out.append("    graceful restart off;")
    # And a box that recovers must announce again soon: after a failure (a BFD flap under load,
    # a router restart) BIRD would otherwise wait 60 s, and 120 s to retry a refused connection.
    out += ["    error wait time 1, 30;", "    connect retry time 5;"]
    # One session carries both families (multiprotocol BGP) when there are prefixes of the other
    # family; BIRD takes that family's next hop from the interface toward the neighbor.
    for version in sorted(families | {address.version}):
        out += [
            f"    {CHANNEL[version]} {{",
            # eBGP in BIRD has no default policy (RFC 8212); the box learns nothing from its routers.
            "        import none;",
            f'        export where proto = "{STATIC_PROTOCOL[version]}";',
            "    };",
        ]
    out += ["}", ""]
    return out


def _password(password: str, index: int) -> str:
    key = f"bgp.neighbors[{index}].password"
    if not password:
        raise ValueError(f"{key}: expected a non-empty password (leave the key out for none)")
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise ValueError(f"{key}: a TCP MD5 password has at most {MAX_PASSWORD_BYTES} bytes")
    return _quoted(password, key)


def _quoted(text: str, key: str) -> str:
    """`text` as a BIRD string: every string from the configuration is written through here.

    BIRD 2.0.12's strings have no escapes: a string ends at the next '"' and may not span lines;
    other control characters (a NUL ends the C string early) have no business in one either."""
    if '"' in text or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"{key}: BIRD cannot quote a '\"', a line break or a control character in {text!r}")
    return f'"{text}"'
