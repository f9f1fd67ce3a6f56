"""netconfig's sans-I/O parts: the wanted state, the plan, the state file, and rollback against a
fake kernel. Nothing here touches a real network namespace (the lab tests `net apply` itself)."""
from __future__ import annotations

import pytest

from appliance.config import parse_config
from netconfig.apply import ApplyError, read_state, run_changes, save_owned
from netconfig.netstate import Address, LinkUp, Route, wanted
from netconfig.plan import Change, plan

CONFIG = """
[anycast]
prefixes = ["203.0.113.10/32", "2001:db8:ffff::10/128"]

[[net.uplinks]]
interface = "eth0"
addresses = ["192.0.2.2/24", "2001:db8::2/64"]

[[net.routes]]
to = "0.0.0.0/0"
via = "192.0.2.1"

[[net.routes]]
to = "::/0"
via = "2001:db8::1"

[[net.routes]]
to = "198.51.100.0/24"
interface = "eth0"
metric = 50
"""
INTERFACES = {"lo", "eth0"}
DEFAULT4 = Route("0.0.0.0/0", 0, "192.0.2.1")
DEFAULT6 = Route("::/0", 1024, "2001:db8::1")
DIRECT = Route("198.51.100.0/24", 50, None, "eth0")
ANYCAST = {Address("lo", "203.0.113.10/32"), Address("lo", "2001:db8:ffff::10/128")}
UPLINK = {Address("eth0", "192.0.2.2/24"), Address("eth0", "2001:db8::2/64")}
WANTED = {LinkUp("lo"), LinkUp("eth0"), *ANYCAST, *UPLINK, DEFAULT4, DEFAULT6, DIRECT}


def want() -> set:
    return wanted(parse_config(CONFIG, "test.toml"))


def test_wanted_state_of_a_config():
    assert want() == WANTED


def test_a_config_without_net_wants_nothing():
    assert wanted(parse_config("", "test.toml")) == set()


def test_from_an_empty_kernel_everything_is_added_links_first_routes_last():
    p = plan(want(), {LinkUp("lo")}, set(), INTERFACES)
    assert not p.problems
    assert [c.action for c in p.changes] == ["add"] * 8
    ranks = [c.item.rank for c in p.changes]
    assert ranks == sorted(ranks)
    assert p.owned == WANTED - {LinkUp("lo")}
    assert p.foreign == {LinkUp("lo")}


def test_a_route_given_by_gateway_matches_whatever_interface_the_kernel_resolved():
    kernel = WANTED - {DEFAULT4} | {Route("0.0.0.0/0", 0, "192.0.2.1", "eth0")}
    p = plan(want(), kernel, WANTED, INTERFACES)
    assert p.changes == [] and not p.problems
    assert p.present == WANTED


def test_what_it_made_and_no_longer_wants_is_removed_routes_before_addresses():
    owned = WANTED | {Address("lo", "203.0.113.99/32"), Route("192.0.2.128/25", 0, "192.0.2.1")}
    p = plan(want(), owned, owned, INTERFACES)
    assert p.changes == [Change("remove", Route("192.0.2.128/25", 0, "192.0.2.1")),
                         Change("remove", Address("lo", "203.0.113.99/32"))]
    assert p.owned == WANTED


def test_what_it_did_not_make_is_never_removed_nor_claimed():
    theirs = Address("lo", "198.51.100.7/32")
    p = plan(set(), WANTED | {theirs}, set(), INTERFACES)
    assert p.changes == [] and p.owned == set()


def test_its_own_route_changed_in_the_config_is_replaced():
    old = Route("0.0.0.0/0", 0, "192.0.2.254")
    kernel = WANTED - {DEFAULT4} | {old}
    p = plan(want(), kernel, kernel, INTERFACES)
    assert p.changes == [Change("remove", old), Change("add", DEFAULT4)]


def test_someone_elses_route_in_the_way_is_a_problem():
    theirs = Route("0.0.0.0/0", 0, "192.0.2.254", "eth0")
    p = plan(want(), WANTED - {DEFAULT4} | {theirs}, set(), INTERFACES)
    assert p.problems == ["route 0.0.0.0/0 via 192.0.2.1 metric 0: the kernel holds route 0.0.0.0/0 via 192.0.2.254 "
                          "dev eth0 metric 0, which netconfig did not make and will not replace"]


def test_a_missing_interface_is_a_problem():
    p = plan(want(), set(), set(), {"lo"})
    assert sum("no interface eth0" in problem for problem in p.problems) == 4  # link, 2 addresses, 1 route


def test_an_owned_item_someone_changed_is_no_longer_owned():
    changed = Route("0.0.0.0/0", 0, "192.0.2.254", "eth0")
    p = plan(set(), {changed}, {DEFAULT4}, INTERFACES)
    assert p.changes == [] and p.owned == set()


def test_the_state_file_round_trips(tmp_path):
    path = str(tmp_path / "run" / "netconfig.json")
    assert read_state(path).owned == set()
    save_owned(path, WANTED)
    assert read_state(path).owned == WANTED
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["netconfig.json"]


def test_a_state_file_of_another_version_is_refused(tmp_path):
    path = tmp_path / "netconfig.json"
    path.write_text('{"version": 99, "items": []}')
    with pytest.raises(ApplyError, match="version 99"):
        read_state(str(path)).owned


class FakeKernel:
    """Records what it is asked to do; refuses one item."""

    def __init__(self, refuse):
        self.refuse = refuse
        self.calls = []

    def add(self, item):
        self._call("add", item)

    def remove(self, item):
        self._call("remove", item)

    def _call(self, action, item):
        if item == self.refuse and action == "add":
            raise OSError(101, "Network is unreachable")
        self.calls.append((action, item))


def test_a_failure_part_way_undoes_what_was_done_newest_first():
    kernel = FakeKernel(refuse=DEFAULT4)
    changes = [Change("remove", Route("192.0.2.128/25", 0, "192.0.2.1")), Change("add", LinkUp("eth0")),
               Change("add", Address("eth0", "192.0.2.2/24")), Change("add", DEFAULT4), Change("add", DEFAULT6)]
    with pytest.raises(ApplyError, match=r"add route 0.0.0.0/0 .*Network is unreachable; undid 3 change\(s\)"):
        run_changes(kernel, changes)
    assert kernel.calls == [
        ("remove", Route("192.0.2.128/25", 0, "192.0.2.1")), ("add", LinkUp("eth0")), ("add", Address("eth0", "192.0.2.2/24")),
        ("remove", Address("eth0", "192.0.2.2/24")), ("remove", LinkUp("eth0")), ("add", Route("192.0.2.128/25", 0, "192.0.2.1")),
    ]
