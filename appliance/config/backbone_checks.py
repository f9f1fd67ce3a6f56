"""Checks of `[backbone]`: what netconfig derives from it (backbone_numbers.py) must be derivable the
same way on every box, and fit the kernel."""
from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator

from .backbone_numbers import MAX_INDEX, MIN_MTU, OVERHEAD, RULES, index, interface_name, tunnel_mtu
from .lines import Path
from .schema import BackboneConfig, Config

Finding = tuple[Path, str]
# The kernel's own tables: 253 default, 254 main, 255 local (and 0, unspecified).
FIRST_FREE_TABLE = 256
MAIN_RULE_PRIORITY = 32766
WIREGUARD_KEY_BYTES = 32
MAX_PORT = 65535


def backbone_findings(config: Config) -> Iterator[Finding]:
    backbone = config.backbone
    if backbone is None:
        return
    yield from _box(config, backbone)
    own = backbone.overlays
    relays = _relay_families(config, backbone)
    names: dict[str, int] = {}
    overlays: dict[object, int] = {}
    for i, peer in enumerate(backbone.peers):
        path: Path = ("backbone", "peers", i)
        if peer.underlay.version != backbone.underlay.version:
            yield path + ("underlay",), f"expected an IPv{backbone.underlay.version} address like backbone.underlay, found {peer.underlay}"
        if peer.overlay_v6 is not None and peer.overlay_v6.version != 6:
            yield path + ("overlay_v6",), f"expected an IPv6 address, found {peer.overlay_v6}"
        theirs = {"overlay": peer.overlay, "overlay_v6": peer.overlay_v6}
        for key, address in theirs.items():
            if address is None:
                continue
            network = own.get(address.version)
            if network is None:
                yield path + (key,), f"this box has no IPv{address.version} overlay address, so {address} cannot be reached"
            elif address not in network.network or address == network.ip or not 0 < index(network, address) <= MAX_INDEX:
                yield path + (key,), (f"expected an address of the backbone's subnet {network.network} other than this "
                                      f"box's {network.ip}, among its first {MAX_INDEX}, found {address}")
            elif address in overlays:
                yield path + (key,), f"duplicate overlay address {address} (backbone.peers[{overlays[address]}])"
            overlays.setdefault(address, i)
        for family in sorted(relays - set(peer.overlays)):
            yield path + ("overlay_v6" if family == 6 else "overlay",), (
                f"expected the peer's IPv{family} overlay address: TURN relays IPv{family}, forwarded to the peer through it")
        name = interface_name(peer.node)
        if name in names:
            yield path + ("node",), f"its tunnel's name {name} is also backbone.peers[{names[name]}]'s; shorten the node ids"
        names.setdefault(name, i)
        if backbone.kind == "wireguard" and not _key(peer.public_key):
            yield path + ("public_key",), "expected the peer's WireGuard public key (32 bytes in base64) for kind = \"wireguard\""


def _box(config: Config, backbone: BackboneConfig) -> Iterator[Finding]:
    v6 = backbone.overlay_v6
    if v6 is not None and (v6.version != 6 or backbone.overlay.version != 4):
        yield ("backbone", "overlay_v6"), f"expected an IPv6 address beside an IPv4 backbone.overlay, found {v6} beside {backbone.overlay}"
    for key, interface in (("overlay", backbone.overlay), ("overlay_v6", v6)):
        if interface is not None and not 0 < index(interface, interface.ip) <= MAX_INDEX:
            yield ("backbone", key), f"expected a host address among the first {MAX_INDEX} of its subnet, found {interface}"
    for family in sorted(_relay_families(config, backbone) - set(backbone.overlays)):
        yield ("backbone", "overlay_v6" if family == 6 else "overlay"), (
            f"expected an IPv{family} overlay address: TURN relays IPv{family}, and another box forwards them to this one through it")
    mtu = tunnel_mtu(backbone.kind, backbone.underlay.version, backbone.underlay_mtu)
    if mtu < MIN_MTU:
        overhead = OVERHEAD[(backbone.kind, backbone.underlay.version)]
        yield ("backbone", "underlay_mtu"), (f"leaves {mtu} bytes inside a {backbone.kind} tunnel ({overhead} go to its "
                                            f"encapsulation), below the {MIN_MTU} that IPv6 needs")
    if backbone.rule_priority + RULES > MAIN_RULE_PRIORITY:
        yield ("backbone", "rule_priority"), f"expected at most {MAIN_RULE_PRIORITY - RULES}: the rules go before the main table's"
    if backbone.table_base < FIRST_FREE_TABLE:
        yield ("backbone", "table_base"), f"expected {FIRST_FREE_TABLE} or more: tables 253 to 255 are the kernel's own"
    if backbone.kind == "wireguard" and not _key(backbone.private_key):
        yield ("backbone", "private_key"), "expected this box's WireGuard private key (32 bytes in base64) for kind = \"wireguard\""
    if backbone.kind == "wireguard" and backbone.wireguard_port + MAX_INDEX > MAX_PORT:
        yield ("backbone", "wireguard_port"), (f"expected at most {MAX_PORT - MAX_INDEX}: each tunnel listens on it "
                                               f"plus an overlay address's index (up to {MAX_INDEX})")


def _relay_families(config: Config, backbone: BackboneConfig) -> set[int]:
    if not config.turn.enabled or not backbone.peers:
        return set()
    return {address.version for address in config.turn.relay_addresses}


def _key(text: str | None) -> bool:
    try:
        return text is not None and len(base64.b64decode(text, validate=True)) == WIREGUARD_KEY_BYTES
    except (binascii.Error, ValueError):
        return False
