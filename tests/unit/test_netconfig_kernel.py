"""netconfig's netlink side without a kernel: the calls it makes (to fakes that record them) and
the messages it reads (pyroute2's own message classes, encoded and decoded, never sent).

GRE and WireGuard cannot be created on the machines the lab runs on, so this is where their
netlink requests are checked; the lab creates VXLAN tunnels for real (test_backbone.py)."""
from __future__ import annotations

import base64
import socket

import pytest
from pyroute2.netlink.generic.wireguard import wgmsg
from pyroute2.netlink.nfnetlink.nftsocket import nft_chain_msg, nft_rule_msg, nft_table_msg
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from netconfig.kernel import Kernel, LinkKernel
from netconfig.nft import CHAINS, NftKernel, NftRule, NftTable, expressions, parse
from netconfig.steering import LocalRuleMoved, Rule, RuleKernel
from netconfig.items import Route
from netconfig.sysctl import Sysctl, SysctlKernel
from netconfig.tunnel import Tunnel, TunnelKernel

PRIVATE = base64.b64encode(bytes(range(32))).decode()
PUBLIC = base64.b64encode(bytes(range(100, 132))).decode()  # stands for PRIVATE's: only looked up here
PEER = base64.b64encode(bytes(range(32, 64))).decode()


def decoded(cls, attrs: list, **header):
    """A message as pyroute2 reads it from the kernel: built, encoded, decoded."""
    msg = cls()
    for key, value in header.items():
        msg[key] = value
    msg["attrs"] = attrs
    msg.encode()
    out = cls(msg.data)
    out.decode()
    return out


def link(index: int, name: str, kind: str | None = None, data: list | None = None, mtu: int = 1500):
    attrs = [["IFLA_IFNAME", name], ["IFLA_MTU", mtu]]
    if kind:
        info = [["IFLA_INFO_KIND", kind]] + ([["IFLA_INFO_DATA", {"attrs": data}]] if data else [])
        attrs.append(["IFLA_LINKINFO", {"attrs": info}])
    return decoded(ifinfmsg, attrs, index=index, flags=1)


def rule(family: int, attrs: list, action: int = 1, dst_len: int = 0, **header):
    return decoded(fibmsg, attrs + [["FRA_SUPPRESS_PREFIXLEN", 0xFFFFFFFF]], family=family, action=action,
                   dst_len=dst_len, table=252, **header)


class FakeIPRoute:
    """Answers dumps from canned messages and records every change asked of it."""

    def __init__(self, links=(), rules=(), fail_on: str | None = None):
        self.links, self.rules = list(links), list(rules)
        self.calls: list[tuple] = []
        self.fail_on = fail_on

    def get_links(self):
        return self.links

    def get_rules(self, family):
        return [r for r in self.rules if r["family"] == family]

    def _record(self, what, verb, spec):
        self.calls.append((what, verb, spec))
        if self.fail_on == verb:
            raise OSError(95, "Operation not supported")

    def link(self, verb, **spec):
        self._record("link", verb, spec)

    def rule(self, verb, **spec):
        self._record("rule", verb, spec)

    def route(self, verb, **spec):
        self._record("route", verb, spec)


class FakeWireGuard:
    def __init__(self, devices=None, fail: bool = False):
        self.devices, self.fail = devices or {}, fail
        self.sets: list[tuple] = []

    def __call__(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def info(self, name):
        return [self.devices[name]]

    def set(self, interface, **kwargs):
        self.sets.append((interface, kwargs))
        if self.fail:
            raise OSError(2, "No such file or directory")


def test_rules_are_asked_for_as_ip_rule_would():
    ipr = FakeIPRoute()
    rules = RuleKernel(ipr)
    rules.add(Rule(4, 102, 1002, to="203.0.113.10/32", protocol=17, ports="61500-61999"))
    rules.add(Rule(6, 101, action="blackhole", iif="bb-b"))
    rules.remove(Rule(4, 103, 255))
    rules.add(LocalRuleMoved(6))
    rules.remove(LocalRuleMoved(4))
    assert ipr.calls == [
        ("rule", "add", {"family": socket.AF_INET, "priority": 102, "action": "FR_ACT_TO_TBL", "table": 1002,
                         "dst": "203.0.113.10", "dst_len": 32, "ip_proto": 17, "dport_range": "61500:61999"}),
        ("rule", "add", {"family": socket.AF_INET6, "priority": 101, "action": "FR_ACT_BLACKHOLE", "iifname": "bb-b"}),
        ("rule", "del", {"family": socket.AF_INET, "priority": 103, "action": "FR_ACT_TO_TBL", "table": 255}),
        ("rule", "del", {"family": socket.AF_INET6, "priority": 0, "table": 255}),
        ("rule", "add", {"family": socket.AF_INET, "priority": 0, "table": 255}),
    ]


def test_rules_are_read_back_and_the_missing_rule_0_is_seen():
    v4, v6 = socket.AF_INET, socket.AF_INET6
    kernel_rules = [
        rule(v4, [["FRA_TABLE", 255], ["FRA_PRIORITY", 100], ["FRA_IIFNAME", "bb-b"]]),
        rule(v4, [["FRA_TABLE", 0], ["FRA_PRIORITY", 101], ["FRA_IIFNAME", "bb-b"]], action=6),
        rule(v4, [["FRA_TABLE", 1002], ["FRA_PRIORITY", 102], ["FRA_DST", "203.0.113.10"], ["FRA_IP_PROTO", 17],
                  ["FRA_DPORT_RANGE", "61500:61999"]], dst_len=32),
        rule(v4, [["FRA_TABLE", 254], ["FRA_PRIORITY", 32766]]),
        rule(v4, [["FRA_TABLE", 1002], ["FRA_PRIORITY", 102], ["FRA_FWMARK", 7]]),  # someone else's kind of rule
        rule(v6, [["FRA_TABLE", 255]]),  # IPv6 still has `0: from all lookup local`
    ]
    read = RuleKernel(FakeIPRoute(rules=kernel_rules)).read({LocalRuleMoved(4), LocalRuleMoved(6)})
    assert read == {
        Rule(4, 100, 255, iif="bb-b"), Rule(4, 101, action="blackhole", iif="bb-b"),
        Rule(4, 102, 1002, to="203.0.113.10/32", protocol=17, ports="61500-61999"), Rule(4, 32766, 254),
        LocalRuleMoved(4), Rule(6, 0, 255),
    }
    assert RuleKernel(FakeIPRoute(rules=kernel_rules)).read({Rule(4, 1, 1)}) >= {LocalRuleMoved(4)}


def test_tunnels_are_read_back_by_kind():
    links = [
        link(1, "lo"),
        link(5, "bb-b", "vxlan", [["IFLA_VXLAN_ID", 4098], ["IFLA_VXLAN_LOCAL", "198.51.100.1"],
                                  ["IFLA_VXLAN_GROUP", "198.51.100.2"], ["IFLA_VXLAN_PORT", 4789]], mtu=1450),
        link(6, "bb-c", "vxlan", [["IFLA_VXLAN_ID", 4099], ["IFLA_VXLAN_LOCAL6", "2001:db8::1"],
                                  ["IFLA_VXLAN_GROUP6", "2001:db8::3"], ["IFLA_VXLAN_PORT", 4789]], mtu=1430),
        link(7, "bb-d", "gre", [["IFLA_GRE_LOCAL", "198.51.100.1"], ["IFLA_GRE_REMOTE", "198.51.100.4"]], mtu=1476),
        link(8, "bb-e", "ip6gre", [["IFLA_IP6GRE_LOCAL", "2001:db8::1"], ["IFLA_IP6GRE_REMOTE", "2001:db8::5"]], mtu=1448),
        link(9, "theirs", "vxlan", [["IFLA_VXLAN_ID", 1]]),
    ]
    ipr = FakeIPRoute(links)
    wanted = {Tunnel(name, "vxlan", "", None, 0) for name in ("bb-b", "bb-c", "bb-d", "bb-e")}
    assert TunnelKernel(LinkKernel(ipr), {}).read(wanted) == {
        Tunnel("bb-b", "vxlan", "198.51.100.2", "198.51.100.1", 1450, vni=4098, port=4789),
        Tunnel("bb-c", "vxlan", "2001:db8::3", "2001:db8::1", 1430, vni=4099, port=4789),
        Tunnel("bb-d", "gre", "198.51.100.4", "198.51.100.1", 1476),
        Tunnel("bb-e", "ip6gre", "2001:db8::5", "2001:db8::1", 1448),
    }
    assert TunnelKernel(LinkKernel(ipr), {}).read(set()) == set()


def test_a_wireguard_tunnel_is_read_through_its_own_netlink_family():
    device = decoded(wgmsg, [["WGDEVICE_A_IFNAME", "bb-b"], ["WGDEVICE_A_LISTEN_PORT", 51822],
                             ["WGDEVICE_A_PUBLIC_KEY", PUBLIC],
                             ["WGDEVICE_A_PEERS", [{"attrs": [["WGPEER_A_PUBLIC_KEY", PEER], [
                                 "WGPEER_A_ENDPOINT", {"addr": "198.51.100.2", "port": 51821}]]}]]], cmd=0, version=1)
    ipr = FakeIPRoute([link(5, "bb-b", "wireguard", mtu=1440)])
    tunnels = TunnelKernel(LinkKernel(ipr), {}, FakeWireGuard({"bb-b": device}))
    assert tunnels.read({Tunnel("bb-b", "wireguard", "", None, 0)}) == {
        Tunnel("bb-b", "wireguard", "198.51.100.2", None, 1440, port=51822, remote_port=51821, public_key=PUBLIC,
               peer_key=PEER)}


@pytest.mark.parametrize(("tunnel", "spec"), [
    (Tunnel("bb-b", "vxlan", "198.51.100.2", "198.51.100.1", 1450, vni=4098, port=4789),
     {"vxlan_id": 4098, "vxlan_port": 4789, "vxlan_learning": 0, "vxlan_local": "198.51.100.1",
      "vxlan_group": "198.51.100.2"}),
    (Tunnel("bb-b", "vxlan", "2001:db8::2", "2001:db8::1", 1430, vni=4098, port=4789),
     {"vxlan_id": 4098, "vxlan_port": 4789, "vxlan_learning": 0, "vxlan_local6": "2001:db8::1",
      "vxlan_group6": "2001:db8::2"}),
    (Tunnel("bb-b", "gre", "198.51.100.2", "198.51.100.1", 1476),
     {"gre_local": "198.51.100.1", "gre_remote": "198.51.100.2", "gre_ttl": 64}),
    (Tunnel("bb-b", "ip6gre", "2001:db8::2", "2001:db8::1", 1448),
     {"ip6gre_local": "2001:db8::1", "ip6gre_remote": "2001:db8::2", "ip6gre_ttl": 64}),
])
def test_tunnels_are_created_with_their_kinds_attributes(tunnel, spec):
    ipr = FakeIPRoute()
    TunnelKernel(LinkKernel(ipr), {}).add(tunnel)
    assert ipr.calls == [("link", "add", {"ifname": "bb-b", "kind": tunnel.type, "mtu": tunnel.mtu, **spec})]


def test_a_wireguard_tunnel_gets_its_key_and_peer_or_is_taken_back():
    tunnel = Tunnel("bb-b", "wireguard", "198.51.100.2", None, 1440, port=51822, remote_port=51821, public_key=PUBLIC,
                    peer_key=PEER)
    ipr, wg = FakeIPRoute(), FakeWireGuard()
    TunnelKernel(LinkKernel(ipr), {PUBLIC: PRIVATE}, wg).add(tunnel)
    assert ipr.calls == [("link", "add", {"ifname": "bb-b", "kind": "wireguard", "mtu": 1440})]
    assert wg.sets == [("bb-b", {"private_key": PRIVATE, "listen_port": 51822, "peer": {
        "public_key": PEER, "endpoint_addr": "198.51.100.2", "endpoint_port": 51821,
        "allowed_ips": ["0.0.0.0/0", "::/0"], "persistent_keepalive": 25}})]
    ipr = FakeIPRoute()
    with pytest.raises(OSError):
        TunnelKernel(LinkKernel(ipr), {PUBLIC: PRIVATE}, FakeWireGuard(fail=True)).add(tunnel)
    assert ipr.calls[-1] == ("link", "del", {"ifname": "bb-b"})


def test_routes_on_link_are_scoped_link_and_blackholes_go_nowhere():
    ipr = FakeIPRoute([link(1, "lo"), link(5, "bb-b")])
    links = LinkKernel(ipr)
    links.add(Route("192.0.2.130/32", 0, None, "bb-b"))
    links.add(Route("0.0.0.0/0", 0, "192.0.2.130", "bb-b", 1002))
    links.remove(Route("::/0", 1024, table=1002, type="blackhole"))
    assert [spec for _, _, spec in ipr.calls] == [
        {"dst": "192.0.2.130/32", "priority": 0, "table": 254, "proto": 4, "type": "unicast", "scope": 253, "oif": 5},
        {"dst": "0.0.0.0/0", "priority": 0, "table": 1002, "proto": 4, "type": "unicast", "gateway": "192.0.2.130", "oif": 5},
        {"dst": "::/0", "priority": 1024, "table": 1002, "proto": 4, "type": "blackhole"},
    ]


RULES = [
    NftRule("prerouting", 4, "203.0.113.10", 17, 61500, 61999, notrack=True),
    NftRule("prerouting", 6, "2001:db8:ffff::10", 6, 61000, 61499, notrack=True),
    NftRule("output", 4, "203.0.113.10", 17, 61000, 61499, notrack=True),
    NftRule("output", 6, "2001:db8:ffff::10", 17, 61000, 61000, notrack=True),
    NftRule("forward", 4, "203.0.113.10", 6, 61500, 61999, oif="bb-b"),
]


def nft_rule(item: NftRule, handle: int = 1, exprs=None):
    return decoded(nft_rule_msg, [["NFTA_RULE_TABLE", "edgecall"], ["NFTA_RULE_CHAIN", item.chain],
                                  ["NFTA_RULE_HANDLE", handle],
                                  ["NFTA_RULE_EXPRESSIONS", exprs if exprs is not None else expressions(item)]])


@pytest.mark.parametrize("item", RULES, ids=str)
def test_nft_rules_read_back_as_written(item):
    msg = nft_rule(item)
    assert parse(item.chain, msg.get_attr("NFTA_RULE_EXPRESSIONS")) == (item, 0)


def test_an_nft_rule_of_another_shape_is_not_taken_for_one():
    item = RULES[0]
    mark = [{"attrs": [("NFTA_EXPR_NAME", "meta"), ("NFTA_EXPR_DATA", {"attrs": [("NFTA_META_DREG", 1), ("NFTA_META_KEY", 3)]})]},
            {"attrs": [("NFTA_EXPR_NAME", "cmp"), ("NFTA_EXPR_DATA", {"attrs": [
                ("NFTA_CMP_SREG", 1), ("NFTA_CMP_OP", 0), ("NFTA_CMP_DATA", {"attrs": [("NFTA_DATA_VALUE", b"\0\0\0\1")]})]})]}]
    for exprs in (expressions(item)[:-2] + expressions(item)[-1:],  # no counter
                  expressions(item)[:6] + expressions(item)[8:],  # no port range
                  mark + expressions(item)):  # an extra selector (meta mark 1)
        assert parse(item.chain, nft_rule(item, exprs=exprs).get_attr("NFTA_RULE_EXPRESSIONS")) is None
    # Read where the other chain keeps its address: source in a rule said to be prerouting's.
    output = RULES[2]
    assert parse("prerouting", nft_rule(output).get_attr("NFTA_RULE_EXPRESSIONS")) is None


class FakeNFTables:
    def __init__(self, tables=(), chains=(), rules=(), fail_on: str | None = None):
        self.tables, self.chains, self.rules = list(tables), list(chains), list(rules)
        self.calls: list[tuple] = []
        self.fail_on = fail_on
        self.closed = 0

    def __call__(self):
        return self

    def get_tables(self):
        return self.tables

    def get_chains(self):
        return self.chains

    def get_rules(self):
        return self.rules

    def close(self):
        self.closed += 1

    def _record(self, what, verb, spec):
        self.calls.append((what, verb, spec))
        if what == self.fail_on:
            raise OSError(1, "Operation not permitted")

    def table(self, verb, **spec):
        self._record("table", verb, spec)

    def chain(self, verb, **spec):
        self._record("chain", verb, spec)

    def rule(self, verb, **spec):
        self._record("rule", verb, spec)


def chains(**override):
    hooks = {name: (number, priority) for name, (_, number, priority) in CHAINS.items()} | override
    return [decoded(nft_chain_msg, [["NFTA_CHAIN_TABLE", "edgecall"], ["NFTA_CHAIN_NAME", name], ["NFTA_CHAIN_HOOK", {
        "attrs": [["NFTA_HOOK_HOOKNUM", number], ["NFTA_HOOK_PRIORITY", priority]]}]]) for name, (number, priority) in hooks.items()]


def test_the_nft_table_and_its_rules_are_read_with_their_counters():
    table = decoded(nft_table_msg, [["NFTA_TABLE_NAME", "edgecall"]])
    nft = FakeNFTables([table], chains(), [nft_rule(item, handle) for handle, item in enumerate(RULES)])
    kernel = NftKernel(nft)
    assert kernel.read({NftTable()}) == {NftTable(), *RULES}
    assert kernel.counters() == {item: 0 for item in RULES}
    assert NftKernel(FakeNFTables([table], chains(forward=(2, 10)))).read({NftTable()}) == set()  # a chain not ours
    assert NftKernel(FakeNFTables()).read({NftTable()}) == set() and NftKernel(FakeNFTables()).counters() == {}
    assert kernel.read({Rule(4, 1, 1)}) == set()  # nothing of nftables in scope: not even asked
    kernel.remove(RULES[3])
    assert nft.calls == [("rule", "del", {"table": "edgecall", "chain": "output", "handle": 3})]
    assert nft.closed == 3  # one socket per call that asked nftables


def test_the_nft_table_is_made_with_its_chains_or_not_at_all():
    nft = FakeNFTables()
    NftKernel(nft).add(NftTable())
    assert nft.calls == [("table", "add", {"name": "edgecall"})] + [
        ("chain", "add", {"table": "edgecall", "name": name, "hook": hook, "type": "filter", "priority": priority})
        for name, (hook, _, priority) in CHAINS.items()]
    failing = FakeNFTables(fail_on="chain")
    with pytest.raises(OSError):
        NftKernel(failing).add(NftTable())
    assert failing.calls[-1] == ("table", "del", {"name": "edgecall"})


def test_settings_are_read_written_and_put_back(tmp_path):
    (tmp_path / "net/ipv4").mkdir(parents=True)
    (tmp_path / "net/ipv4/ip_forward").write_text("0\n")
    sysctl = SysctlKernel(str(tmp_path))
    wanted = {Sysctl("net/ipv4/ip_forward", "1"), Sysctl("net/ipv4/conf/bb-b/rp_filter", "2")}
    assert sysctl.read(wanted) == {Sysctl("net/ipv4/ip_forward", "0")}  # the device's does not exist yet
    sysctl.add(Sysctl("net/ipv4/ip_forward", "1", previous="0"))
    assert (tmp_path / "net/ipv4/ip_forward").read_text() == "1"
    sysctl.remove(Sysctl("net/ipv4/ip_forward", "1", previous="0"))
    assert (tmp_path / "net/ipv4/ip_forward").read_text() == "0"
    sysctl.remove(Sysctl("net/ipv4/conf/bb-b/rp_filter", "2"))  # nothing to put back: nothing is written


def test_the_kernel_sends_each_kind_to_its_own_writer(tmp_path):
    ipr, nft = FakeIPRoute([link(1, "lo")]), FakeNFTables()
    kernel = Kernel(ipr, sysctl=SysctlKernel(str(tmp_path)), nft=NftKernel(nft))
    kernel.add(Rule(4, 103, 255))
    kernel.add(NftTable())
    kernel.remove(Tunnel("lo", "vxlan", "", None, 0))
    assert [call[:2] for call in ipr.calls] == [("rule", "add"), ("link", "del")]
    assert nft.calls[0] == ("table", "add", {"name": "edgecall"})
