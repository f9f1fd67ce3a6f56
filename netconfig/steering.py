"""Policy rules: the items that steer another box's relay ports into its tunnel.

With the relay address on `lo` of every box, the kernel's `0: from all lookup local` rule would
deliver every packet for it locally, whatever its port. So the backbone's rules come first and
the `local` lookup moves behind them (verified: a rule before it never fires otherwise). From the
rule priority P of the config (the offsets are in appliance/config/backbone_numbers.py):

    P      iif <tunnel> lookup local        a peer forwarded it: deliver it here
    P+1    iif <tunnel> blackhole           ...and never route it on (forwarded at most once)
    P+2    to <relay> ipproto udp|tcp dport <peer's slice> lookup <peer's table>
    P+3    lookup local                     the `local` lookup, moved
           (0: lookup local deleted)

Every box holds the relay address, so a packet from a tunnel that is for a relay is always
delivered at P; P+1 only catches what no box should forward twice.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import socket
from dataclasses import dataclass

from .items import LOCAL_TABLE, ItemKind

PROTOCOLS = {17: "udp", 6: "tcp"}


def family_name(family: int) -> str:
    return f"IPv{family}"


@dataclass(frozen=True, order=True)
class Rule(ItemKind):
    family: int  # 4 or 6
    priority: int
    table: int = 0  # for action "lookup"
    action: str = "lookup"  # or "blackhole"
    iif: str | None = None  # an interface name; the rule matches even before the interface exists
    to: str | None = None  # a network: 203.0.113.10/32
    protocol: int | None = None
    ports: str | None = None  # destination ports, first-last

    kind = "rule"
    rank = 7

    @property
    def key(self) -> tuple:
        # Rules with the same priority coexist: a rule is identified by all of it.
        return (self.kind, *dataclasses.astuple(self))

    @property
    def needs(self) -> set[str]:
        return set()

    def __str__(self) -> str:
        parts = [f"rule {self.priority} ({family_name(self.family)}): from all"]
        if self.iif:
            parts.append(f"iif {self.iif}")
        if self.to:
            parts.append(f"to {self.to}")
        if self.protocol is not None:
            parts.append(f"ipproto {PROTOCOLS.get(self.protocol, self.protocol)}")
        if self.ports:
            parts.append(f"dport {self.ports}")
        table = "local" if self.table == LOCAL_TABLE else self.table
        parts.append(f"lookup {table}" if self.action == "lookup" else self.action)
        return " ".join(parts)


@dataclass(frozen=True, order=True)
class LocalRuleMoved(ItemKind):
    """Present when the kernel has no `0: from all lookup local` rule of the family.

    Adding it deletes that rule; removing it puts the rule back. It ranks after every Rule, so
    the moved `local` lookup is in place before rule 0 goes, and rule 0 is back before it leaves.
    """

    family: int

    kind = "local-rule-moved"
    rank = 8

    @property
    def key(self) -> tuple:
        return (self.kind, self.family)

    def __str__(self) -> str:
        return f"{family_name(self.family)} local lookup moved from rule 0 to behind the steering rules"


FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}
ACTIONS = {1: "lookup", 6: "blackhole"}  # FR_ACT_TO_TBL, FR_ACT_BLACKHOLE
ACTION_NAMES = {"lookup": "FR_ACT_TO_TBL", "blackhole": "FR_ACT_BLACKHOLE"}
FIB_RULE_INVERT = 0x2
NO_SUPPRESS = 0xFFFFFFFF
# Selectors netconfig never sets: a rule with any of them is someone else's, and not modelled.
UNMODELLED = ("FRA_SRC", "FRA_FWMARK", "FRA_OIFNAME", "FRA_SPORT_RANGE", "FRA_UID_RANGE", "FRA_L3MDEV", "FRA_GOTO",
              "FRA_TUN_ID", "FRA_SUPPRESS_IFGROUP")


class RuleKernel:
    """Policy rules through netlink (pyroute2's `rule`), of the families the scope has rules of."""

    def __init__(self, ipr):
        self.ipr = ipr

    def read(self, scope: set) -> set:
        out: set = set()
        for version in sorted({item.family for item in scope if isinstance(item, (Rule, LocalRuleMoved))}):
            rules = {rule for rule in map(self._rule, self.ipr.get_rules(family=FAMILY[version])) if rule}
            out |= rules
            if Rule(version, 0, LOCAL_TABLE) not in rules:
                out.add(LocalRuleMoved(version))
        return out

    def _rule(self, msg) -> Rule | None:
        unmodelled = (any(msg.get(name) is not None for name in UNMODELLED) or msg["tos"] or msg["src_len"]
                      or msg["flags"] & FIB_RULE_INVERT or msg.get("FRA_SUPPRESS_PREFIXLEN", NO_SUPPRESS) != NO_SUPPRESS)
        action = ACTIONS.get(msg["action"])
        if unmodelled or action is None:
            return None
        version = 4 if msg["family"] == socket.AF_INET else 6
        dst = msg.get("FRA_DST")
        ports = msg.get("FRA_DPORT_RANGE")
        return Rule(
            family=version,
            priority=msg.get("FRA_PRIORITY") or 0,
            table=(msg.get("FRA_TABLE") or msg["table"]) if action == "lookup" else 0,
            action=action,
            iif=msg.get("FRA_IIFNAME"),
            to=str(ipaddress.ip_network(f"{dst}/{msg['dst_len']}")) if dst else None,
            protocol=msg.get("FRA_IP_PROTO"),
            # pyroute2 reads and writes a port range as first:last (it refuses first-last).
            ports=ports.replace(":", "-") if ports else None,
        )

    def add(self, item) -> None:
        if isinstance(item, LocalRuleMoved):
            self.ipr.rule("del", family=FAMILY[item.family], priority=0, table=LOCAL_TABLE)
        else:
            self.ipr.rule("add", **_spec(item))

    def remove(self, item) -> None:
        if isinstance(item, LocalRuleMoved):
            self.ipr.rule("add", family=FAMILY[item.family], priority=0, table=LOCAL_TABLE)
        else:
            self.ipr.rule("del", **_spec(item))


def _spec(rule: Rule) -> dict:
    spec = {"family": FAMILY[rule.family], "priority": rule.priority, "action": ACTION_NAMES[rule.action]}
    if rule.action == "lookup":
        spec["table"] = rule.table
    if rule.iif:
        spec["iifname"] = rule.iif
    if rule.to:
        network = ipaddress.ip_network(rule.to)
        spec["dst"], spec["dst_len"] = str(network.network_address), network.prefixlen
    if rule.protocol is not None:
        spec["ip_proto"] = rule.protocol
    if rule.ports:
        spec["dport_range"] = rule.ports.replace("-", ":")
    return spec
