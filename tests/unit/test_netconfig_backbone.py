"""The backbone's wanted state and plan: tunnels, tables, rules, settings and nftables rules from
`[backbone]`, derived alike on both boxes; a peer down; a peer removed. No kernel is touched
(the lab applies it: tests/integration/test_backbone.py)."""
from __future__ import annotations

import base64

import pytest

from appliance.config import parse_config
from appliance.config.backbone_numbers import OVERHEAD
from netconfig.apply import State, read_state, save_owned
from netconfig.backbone import link_of, peer_routes, tunnel
from netconfig.netstate import LinkUp, LocalRuleMoved, NftRule, NftTable, Route, Rule, Sysctl, Tunnel, wanted
from netconfig.peer_state import switching
from netconfig.plan import Change, plan
from netconfig.tunnel import public_key

SLICES = {"a": "61000-61499", "b": "61500-61999", "c": "62000-62499"}
OVERLAYS = {"a": ("192.0.2.129", "2001:db8:bb::1"), "b": ("192.0.2.130", "2001:db8:bb::2"),
            "c": ("192.0.2.131", "2001:db8:bb::3")}
UNDERLAYS = {"a": "198.51.100.1", "b": "198.51.100.2", "c": "198.51.100.3"}
INTERFACES = {"lo", "eth0"}


def box(name: str, peers: str, extra: str = "", turn: str = "") -> str:
    v4, v6 = OVERLAYS[name]
    text = f"""
[node]
id = "{name}"
[turn]
relay_address = "203.0.113.10"
relay_address_v6 = "2001:db8:ffff::10"
relay_ports = "{SLICES[name]}"
{turn}
[backbone]
underlay = "{UNDERLAYS[name]}"
overlay = "{v4}/25"
overlay_v6 = "{v6}/64"
{extra}
"""
    for peer in peers:
        text += (f'[[backbone.peers]]\nnode = "{peer}"\nunderlay = "{UNDERLAYS[peer]}"\noverlay = "{OVERLAYS[peer][0]}"\n'
                 f'overlay_v6 = "{OVERLAYS[peer][1]}"\nrelay_ports = "{SLICES[peer]}"\n')
    return text


def config(name: str = "a", peers: str = "b", **kwargs):
    return parse_config(box(name, peers, **kwargs), f"{name}.toml")


def test_both_ends_derive_the_same_tunnel():
    a, b = config("a", "b"), config("b", "a")
    there, back = tunnel(a, link_of(a, "b")), tunnel(b, link_of(b, "a"))
    assert there == Tunnel("bb-b", "vxlan", "198.51.100.2", "198.51.100.1", 1450, vni=(1 << 12) | 2, port=4789)
    assert (back.interface, back.local, back.remote, back.vni, back.mtu) == ("bb-a", there.remote, there.local, there.vni, 1450)


def test_each_peer_has_its_own_vni_and_table():
    a = config("a", "bc")
    assert {tunnel(a, link_of(a, p)).vni for p in "bc"} == {(1 << 12) | 2, (1 << 12) | 3}
    assert [link_of(a, p).table for p in "bc"] == [1002, 1003]


def test_the_steering_rules_and_the_moved_local_lookup():
    rules = {item for item in wanted(config()) if isinstance(item, (Rule, LocalRuleMoved))}
    expected = {LocalRuleMoved(4), LocalRuleMoved(6), Rule(4, 103, 255), Rule(6, 103, 255)}
    for family, relay in ((4, "203.0.113.10/32"), (6, "2001:db8:ffff::10/128")):
        expected |= {Rule(family, 100, 255, iif="bb-b"), Rule(family, 101, action="blackhole", iif="bb-b")}
        expected |= {Rule(family, 102, 1002, to=relay, protocol=p, ports="61500-61999") for p in (6, 17)}
    assert rules == expected
    assert str(Rule(4, 102, 1002, to="203.0.113.10/32", protocol=17, ports="61500-61999")) == (
        "rule 102 (IPv4): from all to 203.0.113.10/32 ipproto udp dport 61500-61999 lookup 1002")


def test_the_peer_table_goes_through_the_tunnel_or_drops_while_the_peer_is_down():
    up, down = wanted(config()), wanted(config(), frozenset({"b"}))
    forward = {Route("0.0.0.0/0", 0, "192.0.2.130", "bb-b", 1002), Route("::/0", 1024, "2001:db8:bb::2", "bb-b", 1002)}
    drop = {Route("0.0.0.0/0", 0, table=1002, type="blackhole"), Route("::/0", 1024, table=1002, type="blackhole")}
    assert up - down == forward and down - up == drop
    assert {Route("192.0.2.130/32", 0, None, "bb-b"), Route("2001:db8:bb::2/128", 1024, None, "bb-b")} <= up


def test_settings_and_counting_rules():
    items = wanted(config())
    assert {i for i in items if isinstance(i, Sysctl)} == {
        Sysctl("net/ipv4/ip_forward", "1"), Sysctl("net/ipv6/conf/all/forwarding", "1"),
        Sysctl("net/ipv4/conf/bb-b/rp_filter", "2")}
    nft = {i for i in items if isinstance(i, NftRule)}
    assert NftTable() in items
    assert NftRule("prerouting", 4, "203.0.113.10", 17, 61500, 61999, notrack=True) in nft  # the peer's slice
    assert NftRule("prerouting", 6, "2001:db8:ffff::10", 17, 61000, 61499, notrack=True) in nft  # this box's
    assert NftRule("output", 4, "203.0.113.10", 6, 61000, 61499, notrack=True) in nft
    assert NftRule("forward", 4, "203.0.113.10", 17, 61500, 61999, oif="bb-b") in nft
    assert len(nft) == 2 * 2 * (2 + 1 + 1)  # families x protocols x (both slices landing, own leaving, forwarded)
    assert not any(isinstance(i, (NftTable, NftRule)) for i in wanted(config(extra="notrack = false")))


def test_without_turn_relays_there_is_nothing_to_steer():
    items = wanted(config(turn="enabled = false"))
    assert not any(isinstance(i, (Rule, LocalRuleMoved, NftTable, NftRule)) for i in items)
    assert any(isinstance(i, Tunnel) for i in items)


def test_wireguard_tunnels():
    private = base64.b64encode(bytes(range(32))).decode()
    peer_key = base64.b64encode(bytes(range(32, 64))).decode()
    text = box("a", "b", extra=f'kind = "wireguard"\nprivate_key = "{private}"').replace(
        'relay_ports = "61500-61999"\n', f'relay_ports = "61500-61999"\npublic_key = "{peer_key}"\n')
    a = parse_config(text, "a.toml")
    t = tunnel(a, link_of(a, "b"))
    # This end listens on base + the peer's index and sends to the peer's port for it, base + its own.
    assert t == Tunnel("bb-b", "wireguard", "198.51.100.2", None, 1440, port=51822, remote_port=51821,
                       public_key=public_key(private), peer_key=peer_key)
    assert private not in str(t) and private not in repr(t)


def test_gre_over_ipv6_is_ip6gre():
    text = box("a", "b", extra='kind = "gre"').replace("198.51.100.1", "2001:db8:77::1").replace("198.51.100.2", "2001:db8:77::2")
    a = parse_config(text, "a.toml")
    assert tunnel(a, link_of(a, "b")) == Tunnel("bb-b", "ip6gre", "2001:db8:77::2", "2001:db8:77::1", 1500 - OVERHEAD[("gre", 6)])


def test_public_key_matches_wireguard():
    # RFC 7748 6.1's Alice: the same X25519 WireGuard uses.
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    expected = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    assert public_key(base64.b64encode(alice).decode()) == base64.b64encode(expected).decode()


def test_from_nothing_tunnels_come_first_and_the_local_rule_goes_last():
    p = plan(wanted(config()), {LinkUp("lo")}, set(), INTERFACES)
    assert not p.problems  # bb-b does not exist yet: the plan makes it
    adds = [c.item for c in p.changes]
    assert isinstance(adds[0], Tunnel)
    assert adds[-2:] == [LocalRuleMoved(4), LocalRuleMoved(6)]
    assert adds.index(Rule(4, 103, 255)) < adds.index(LocalRuleMoved(4))
    # Taken away in the reverse order: rule 0 is back before the moved lookup goes.
    undo = plan(set(), p.owned, p.owned, INTERFACES | {"bb-b"})
    removed = [c.item for c in undo.changes]
    assert removed.index(LocalRuleMoved(4)) < removed.index(Rule(4, 103, 255))
    assert isinstance(removed[-1], Tunnel)


def test_a_setting_is_taken_over_and_put_back():
    want = {Sysctl("net/ipv4/ip_forward", "1")}
    p = plan(want, {Sysctl("net/ipv4/ip_forward", "0")}, set(), INTERFACES)
    assert p.changes == [Change("add", Sysctl("net/ipv4/ip_forward", "1", previous="0"))]
    assert str(p.changes[0]) == "add sysctl net.ipv4.ip_forward = 1 (was 0)"
    again = plan(want, {Sysctl("net/ipv4/ip_forward", "1")}, p.owned, INTERFACES)
    assert again.changes == [] and again.owned == p.owned and again.present == want
    gone = plan(set(), {Sysctl("net/ipv4/ip_forward", "1")}, p.owned, INTERFACES)
    assert gone.changes == [Change("remove", Sysctl("net/ipv4/ip_forward", "1", previous="0"))]
    # Already so, and set by someone else: left alone, not claimed.
    theirs = plan(want, {Sysctl("net/ipv4/ip_forward", "1")}, set(), INTERFACES)
    assert theirs.changes == [] and theirs.owned == set() and theirs.foreign == want


def test_a_tunnels_setting_waits_for_the_tunnel():
    setting = Sysctl("net/ipv4/conf/bb-b/rp_filter", "2")
    assert setting.needs == {"bb-b"} and Sysctl("net/ipv4/conf/all/rp_filter", "2").needs == set()
    assert plan({setting}, set(), set(), INTERFACES).problems == [
        "sysctl net.ipv4.conf.bb-b.rp_filter = 2: no interface bb-b in this network namespace"]


def test_removing_a_peer_removes_its_items_and_nothing_else():
    before, after = wanted(config("a", "bc")), wanted(config("a", "b"))
    p = plan(after, before, before, INTERFACES | {"bb-b", "bb-c"})
    assert not p.problems and all(c.action == "remove" for c in p.changes)
    removed = {c.item for c in p.changes}
    assert removed == before - after
    assert all("bb-c" in str(item) or "1003" in str(item) or "62000-62499" in str(item) for item in removed)


def test_someone_elses_tunnel_in_the_way_is_a_problem():
    theirs = Tunnel("bb-b", "vxlan", "198.51.100.9", "198.51.100.1", 1450, vni=7, port=4789)
    p = plan(wanted(config()), {theirs}, set(), INTERFACES | {"bb-b"})
    assert any("did not make and will not replace" in problem and "bb-b" in problem for problem in p.problems)


def test_a_peer_is_switched_down_and_up_by_its_routes_alone():
    a = config()
    owned = wanted(a)
    link = link_of(a, "b")
    down = switching(a, State(owned), "b", True)
    assert [c.action for c in down.changes] == ["remove", "remove", "add", "add"]
    assert {c.item for c in down.changes} == peer_routes(a, link, False) | peer_routes(a, link, True)
    assert down.after == State(wanted(a, frozenset({"b"})), frozenset({"b"}))
    up = switching(a, down.after, "b", False)
    assert up.after == State(owned, frozenset())
    # Nothing to do for a peer the config does not have, or whose routes `net apply` did not make.
    assert switching(a, State(owned), "zz", True) is None
    assert switching(a, State(set()), "b", True) is None


@pytest.mark.parametrize("down", [frozenset(), frozenset({"b"})])
def test_the_state_file_keeps_the_down_peers(tmp_path, down):
    path = str(tmp_path / "netconfig.json")
    save_owned(path, wanted(config(), down), down)
    assert read_state(path) == State(wanted(config(), down), down)
