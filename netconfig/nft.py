"""nftables through its netlink API (pyroute2.nftables): conntrack exemption and per-slice counters.

One table, `inet edgecall`, which netconfig owns whole:

    chain prerouting (raw)   ip daddr <relay> udp|tcp dport <slice> counter notrack   every slice
    chain output (raw)       ip saddr <relay> udp|tcp sport <own slice> counter notrack
    chain forward            oifname <tunnel> ip daddr <relay> udp|tcp dport <peer's slice> counter

`notrack` before conntrack (raw priority) keeps relay packets out of conntrack, which can rewrite
the ports of forwarded flows and holds an entry per peer for nothing. The counters say, per slice,
how many packets landed here and how many of a peer's were forwarded to it: the rest were dropped.

pyroute2's nftables module carries raw expressions only (the nft language belongs to
libnftables, which pyroute2 does not use): rules are built from the expressions below, which
`nft list ruleset` prints back as the rules above, and read back by parsing the same shape.
"""
from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import struct
from dataclasses import dataclass

from pyroute2.netlink.exceptions import NetlinkError

from .items import ItemKind
from .steering import PROTOCOLS

TABLE = "edgecall"
NFPROTO_INET = 1
NFPROTO = {4: 2, 6: 10}  # NFPROTO_IPV4, NFPROTO_IPV6
IFNAMSIZ = 16
# Chain: (hook, its number, priority). -300 is "raw", before conntrack (-200) sees the packet.
CHAINS = {"prerouting": ("prerouting", 0, -300), "output": ("output", 3, -300), "forward": ("forward", 2, 0)}
NETWORK, TRANSPORT = "NFT_PAYLOAD_NETWORK_HEADER", "NFT_PAYLOAD_TRANSPORT_HEADER"
# Where the addresses and ports are: (source, destination) offsets.
ADDRESS = {4: ((12, 4), (16, 4)), 6: ((8, 16), (24, 16))}
PORT = ((0, 2), (2, 2))
META_KEYS = {"NFT_META_NFPROTO": 15, "NFT_META_L4PROTO": 16, "NFT_META_OIFNAME": 7}
BASES = {NETWORK: 1, TRANSPORT: 2}


@dataclass(frozen=True, order=True)
class NftTable(ItemKind):
    name: str = TABLE

    kind = "nft-table"
    rank = 5

    @property
    def key(self) -> tuple:
        return (self.kind, self.name)

    def __str__(self) -> str:
        return f"nftables table inet {self.name} (chains {', '.join(CHAINS)})"


@dataclass(frozen=True, order=True)
class NftRule(ItemKind):
    chain: str
    family: int
    address: str  # the relay address: the destination, or in `output` the source
    protocol: int
    first: int
    last: int
    oif: str | None = None  # `forward`: the peer's tunnel
    notrack: bool = False

    kind = "nft-rule"
    rank = 6

    @property
    def key(self) -> tuple:
        return (self.kind, *dataclasses.astuple(self))

    @property
    def needs(self) -> set[str]:
        return set()  # oifname matches by name

    @property
    def outbound(self) -> bool:
        return self.chain == "output"

    def __str__(self) -> str:
        ip, direction = ("ip" if self.family == 4 else "ip6"), ("saddr", "sport") if self.outbound else ("daddr", "dport")
        proto = PROTOCOLS.get(self.protocol, self.protocol)
        oif = f"oifname {self.oif} " if self.oif else ""
        return (f"nft {self.chain}: {oif}{ip} {direction[0]} {self.address} {proto} {direction[1]} "
                f"{self.first}-{self.last} counter" + (" notrack" if self.notrack else ""))


def _expr(name: str, **data) -> dict:
    attrs = [(f"NFTA_{name.upper()}_{key.upper()}", value) for key, value in data.items()]
    return {"attrs": [("NFTA_EXPR_NAME", name)] + ([("NFTA_EXPR_DATA", {"attrs": attrs})] if data else [])}


def _value(raw: bytes) -> dict:
    return {"attrs": [("NFTA_DATA_VALUE", raw)]}


def _meta(key: str, value: bytes) -> list[dict]:
    return [_expr("meta", dreg=1, key=META_KEYS[key]), _expr("cmp", sreg=1, op=0, data=_value(value))]


def expressions(rule: NftRule) -> list[dict]:
    """The rule as nftables expressions: each match loads a field into register 1, then compares."""
    (address_offset, address_len), (port_offset, port_len) = (
        ADDRESS[rule.family][0 if rule.outbound else 1], PORT[0 if rule.outbound else 1])
    out = _meta("NFT_META_NFPROTO", bytes([NFPROTO[rule.family]]))
    out += _meta("NFT_META_L4PROTO", bytes([rule.protocol]))
    out += [_expr("payload", dreg=1, base=BASES[NETWORK], offset=address_offset, len=address_len),
            _expr("cmp", sreg=1, op=0, data=_value(ipaddress.ip_address(rule.address).packed)),
            _expr("payload", dreg=1, base=BASES[TRANSPORT], offset=port_offset, len=port_len),
            _expr("range", sreg=1, op=0, from_data=_value(struct.pack("!H", rule.first)),
                  to_data=_value(struct.pack("!H", rule.last)))]
    if rule.oif:
        out += _meta("NFT_META_OIFNAME", rule.oif.encode().ljust(IFNAMSIZ, b"\0"))
    out.append(_expr("counter", bytes=0, packets=0))
    if rule.notrack:
        out.append(_expr("notrack"))
    return out


def parse(chain: str, exprs) -> tuple[NftRule, int] | None:
    """The NftRule that `exprs` (a rule read back through pyroute2) was made from, and its
    counter's packets; None for a rule of any other shape."""
    fields: dict = {"chain": chain}
    loaded = None
    packets = None
    for expr in exprs:
        name, data = expr.get_attr("NFTA_EXPR_NAME"), expr.get_attr("NFTA_EXPR_DATA")
        if name in ("meta", "payload"):
            loaded = _load(name, data)
        elif name == "cmp" and loaded:
            if not _compare(fields, loaded, data.get_attr("NFTA_CMP_DATA").get_attr("NFTA_DATA_VALUE")):
                return None
        elif name == "range" and loaded and loaded[0] == "port":
            fields["port_outbound"] = loaded[1] == PORT[0]
            fields["first"], fields["last"] = (
                struct.unpack("!H", data.get_attr(key).get_attr("NFTA_DATA_VALUE"))[0]
                for key in ("NFTA_RANGE_FROM_DATA", "NFTA_RANGE_TO_DATA"))
        elif name == "counter":
            packets = data.get_attr("NFTA_COUNTER_PACKETS")
        elif name == "notrack":
            fields["notrack"] = True
        else:
            return None
    # Where the address and the port were read: the source in `output`, else the destination.
    directions = {fields.pop("address_outbound", None), fields.pop("port_outbound", None)}
    try:
        rule = NftRule(**fields)
    except TypeError:  # a field missing: not one of ours
        return None
    return (rule, packets) if packets is not None and directions == {rule.outbound} else None


def _load(name: str, data) -> tuple | None:
    if name == "meta":
        return ("meta", data.get_attr("NFTA_META_KEY"))
    base, offset, length = (data.get_attr(f"NFTA_PAYLOAD_{k}") for k in ("BASE", "OFFSET", "LEN"))
    if base == NETWORK:
        return ("address", (offset, length))
    if base == TRANSPORT:
        return ("port", (offset, length))
    return None


def _compare(fields: dict, loaded: tuple, value: bytes) -> bool:
    """Record what a `cmp` after `loaded` matches; False for a comparison of a kind ours never make."""
    if loaded == ("meta", "NFT_META_NFPROTO"):
        fields["family"] = {v: k for k, v in NFPROTO.items()}.get(value[0])
    elif loaded == ("meta", "NFT_META_L4PROTO"):
        fields["protocol"] = value[0]
    elif loaded == ("meta", "NFT_META_OIFNAME"):
        fields["oif"] = value.rstrip(b"\0").decode()
    elif loaded[0] == "address" and fields.get("family") in ADDRESS and loaded[1] in ADDRESS[fields["family"]]:
        fields["address_outbound"] = loaded[1] == ADDRESS[fields["family"]][0]
        fields["address"] = str(ipaddress.ip_address(value))
    else:
        return False
    return True


class NftKernel:
    """The table, its chains and rules, through netlink. Opens a socket per call: apply makes few."""

    def __init__(self, nftables_factory=None):
        if nftables_factory is None:
            from pyroute2.nftables.main import NFTables

            nftables_factory = lambda: NFTables(nfgen_family=NFPROTO_INET)  # noqa: E731
        self._open = nftables_factory

    @contextlib.contextmanager
    def _socket(self):
        try:
            nft = self._open()
            try:
                yield nft
            finally:
                nft.close()
        except NetlinkError as e:
            raise NetlinkError(e.code, f"nftables: {e} (on a kernel without nf_tables, set backbone.notrack = false)") from e

    def read(self, scope: set) -> set:
        if not any(isinstance(item, (NftTable, NftRule)) for item in scope):
            return set()
        with self._socket() as nft:
            if not self._has_table(nft):
                return set()
            out = {NftTable()} if self._chains_ok(nft) else set()
            return out | {rule for rule, _, _ in self._rules(nft)}

    def counters(self) -> dict[NftRule, int]:
        """Each of the table's rules with its counter's packets; empty when there is no table."""
        with self._socket() as nft:
            return {rule: packets for rule, packets, _ in self._rules(nft)} if self._has_table(nft) else {}

    def add(self, item) -> None:
        with self._socket() as nft:
            if isinstance(item, NftRule):
                nft.rule("add", table=TABLE, chain=item.chain, expressions=[[e] for e in expressions(item)])
                return
            nft.table("add", name=TABLE)
            try:
                for name, (hook, _, priority) in CHAINS.items():
                    nft.chain("add", table=TABLE, name=name, hook=hook, type="filter", priority=priority)
            except Exception:
                nft.table("del", name=TABLE)  # nothing half-made is left behind
                raise

    def remove(self, item) -> None:
        with self._socket() as nft:
            if isinstance(item, NftTable):
                nft.table("del", name=TABLE)
                return
            for rule, _, handle in self._rules(nft):
                if rule == item:
                    nft.rule("del", table=TABLE, chain=item.chain, handle=handle)
                    return
            raise LookupError(f"no such rule in table inet {TABLE}: {item}")

    @staticmethod
    def _has_table(nft) -> bool:
        return TABLE in {table.get_attr("NFTA_TABLE_NAME") for table in nft.get_tables()}

    def _chains_ok(self, nft) -> bool:
        found = {}
        for chain in nft.get_chains():
            hook = chain.get_attr("NFTA_CHAIN_HOOK")
            if chain.get_attr("NFTA_CHAIN_TABLE") == TABLE and hook is not None:
                found[chain.get_attr("NFTA_CHAIN_NAME")] = (hook.get_attr("NFTA_HOOK_HOOKNUM"),
                                                            hook.get_attr("NFTA_HOOK_PRIORITY"))
        return all(found.get(name) == (number, priority) for name, (_, number, priority) in CHAINS.items())

    def _rules(self, nft):
        for msg in nft.get_rules():
            if msg.get_attr("NFTA_RULE_TABLE") != TABLE:
                continue
            parsed = parse(msg.get_attr("NFTA_RULE_CHAIN"), msg.get_attr("NFTA_RULE_EXPRESSIONS") or ())
            if parsed:
                yield parsed[0], parsed[1], msg.get_attr("NFTA_RULE_HANDLE")
