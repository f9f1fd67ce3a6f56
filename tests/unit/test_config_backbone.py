"""The [backbone] table: defaults, and what the checks refuse (netconfig derives tunnels, tables and
rules from it, identically on every box, so what cannot be derived is refused up front)."""
import base64

import pytest

from appliance.config import ConfigError, parse_config

BASE = """
[turn]
relay_address = "203.0.113.10"
relay_ports = "61000-61499"
[backbone]
underlay = "198.51.100.1"
overlay = "192.0.2.129/25"
[[backbone.peers]]
node = "b"
underlay = "198.51.100.2"
overlay = "192.0.2.130"
relay_ports = "61500-61999"
"""
KEY = base64.b64encode(bytes(32)).decode()


def text(box: str = "", peer: str = "", turn: str = "") -> str:
    """BASE with keys of [backbone], its peer and [turn] set: replaced where BASE has them, else added."""
    out = BASE
    for header, lines in (("[turn]", turn), ("[backbone]", box), ("[[backbone.peers]]", peer)):
        head, _, tail = out.partition(header + "\n")
        for line in filter(None, lines.splitlines()):
            key = line.split("=")[0].strip()
            known = [old for old in tail.splitlines() if old.split("=")[0].strip() == key]
            tail = tail.replace(known[0], line, 1) if known else line + "\n" + tail
        out = head + header + "\n" + tail
    return out


def test_defaults():
    backbone = parse_config(text(), "box.toml").backbone
    assert (backbone.kind, backbone.underlay_mtu, backbone.vxlan_port, backbone.wireguard_port) == ("vxlan", 1500, 4789, 51820)
    assert (backbone.table_base, backbone.rule_priority, backbone.notrack) == (1000, 100, True)
    assert backbone.overlay_v6 is None and backbone.private_key is None and backbone.peers[0].public_key is None


def test_wireguard_with_keys_parses():
    config = parse_config(text(f'kind = "wireguard"\nprivate_key = "{KEY}"', f'public_key = "{KEY}"'), "box.toml")
    assert config.backbone.kind == "wireguard"


@pytest.mark.parametrize(
    ("box", "peer", "turn", "message"),
    [
        ("", 'overlay = "192.0.3.1"', "", "backbone.peers[0].overlay: expected an address of the backbone's subnet 192.0.2.128/25"),
        ("", 'overlay = "192.0.2.129"', "", "other than this box's 192.0.2.129"),
        ('overlay = "192.0.2.129/16"', 'overlay = "192.0.20.1"', "", "among its first 4095"),
        ("", 'underlay = "2001:db8::2"', "", "backbone.peers[0].underlay: expected an IPv4 address like backbone.underlay"),
        ("", "", 'relay_address_v6 = "2001:db8:ffff::10"',
         "backbone.overlay_v6: expected an IPv6 overlay address: TURN relays IPv6"),
        ('overlay_v6 = "2001:db8:bb::1/64"', "", 'relay_address_v6 = "2001:db8:ffff::10"',
         "backbone.peers[0].overlay_v6: expected the peer's IPv6 overlay address"),
        ('overlay_v6 = "192.0.2.1/24"', "", "", "backbone.overlay_v6: expected an IPv6 address beside an IPv4 backbone.overlay"),
        ("underlay_mtu = 1300", "", "", "backbone.underlay_mtu: leaves 1250 bytes inside a vxlan tunnel (50 go to its encapsulation)"),
        ("rule_priority = 32765", "", "", "backbone.rule_priority: expected at most 32762"),
        ("table_base = 250", "", "", "backbone.table_base: expected 256 or more"),
        ('kind = "wireguard"', "", "", "backbone.private_key: expected this box's WireGuard private key"),
        (f'kind = "wireguard"\nprivate_key = "{KEY}"', 'public_key = "c2hvcnQ="', "",
         "backbone.peers[0].public_key: expected the peer's WireGuard public key"),
        (f'kind = "wireguard"\nprivate_key = "{KEY}"\nwireguard_port = 65000', f'public_key = "{KEY}"', "",
         "backbone.wireguard_port: expected at most 61440"),
        ('kind = "ipip"', "", "", "backbone.kind"),
    ],
)
def test_refused(box, peer, turn, message):
    with pytest.raises(ConfigError) as caught:
        parse_config(text(box, peer, turn), "box.toml")
    assert message in str(caught.value)


def test_two_peers_cannot_share_an_overlay_address_or_a_tunnel_name():
    second = ('[[backbone.peers]]\nnode = "{node}"\nunderlay = "198.51.100.3"\noverlay = "{overlay}"\n'
              'relay_ports = "62000-62499"\n')
    with pytest.raises(ConfigError) as caught:
        parse_config(text() + second.format(node="c", overlay="192.0.2.130"), "box.toml")
    assert "backbone.peers[1].overlay: duplicate overlay address 192.0.2.130 (backbone.peers[0])" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse_config(text().replace('node = "b"', 'node = "a-very-long-node-1"')
                     + second.format(node="a-very-long-node-2", overlay="192.0.2.131"), "box.toml")
    assert "its tunnel's name bb-a-very-long- is also backbone.peers[0]'s" in str(caught.value)


def test_without_turn_no_overlay_is_needed_for_relays():
    parse_config(text(turn="enabled = false\nrelay_address_v6 = \"2001:db8:ffff::10\""), "box.toml")
