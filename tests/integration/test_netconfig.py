"""`appliance net apply` in a lab namespace, judged by reading the kernel's state with `ip`.

It only ever runs inside the lab's namespaces (`ip netns exec`), never in the machine's own.
"""
from __future__ import annotations

import json
import sys

import pytest

from tests.lab.appliance import REPO
from tests.lab.netns import Host

pytestmark = pytest.mark.lab

PYTHON = sys.executable


def config(host: Host, uplink: list[str], routes: str = "", anycast: str = '"203.0.113.10/32", "2001:db8:ffff::10/128"') -> str:
    return f"""
[anycast]
prefixes = [{anycast}]

[net]
state_file = "{host.dir}/net.json"

[announce]
bird_dir = "{host.dir}/bird"

[[net.uplinks]]
interface = "eth0"
addresses = [{", ".join(f'"{a}"' for a in uplink)}]
{routes}"""


DEFAULT_ROUTES = """
[[net.routes]]
to = "0.0.0.0/0"
via = "192.0.2.1"

[[net.routes]]
to = "::/0"
via = "2001:db8::1"
metric = 100
"""


def net(host: Host, action: str, text: str, check: bool = True):
    path = host.dir / "appliance.toml"
    path.write_text(text)
    return host.run([PYTHON, "-m", "appliance", "net", action, "--config", path], check=check, cwd=REPO)


def kernel_state(host: Host) -> dict:
    """Links (up or not), addresses and main-table routes of the namespace, from `ip -j`.

    Carrier, and the `linkdown` flag it puts on routes, are left out: a veth end just set up
    gains its carrier a moment later, whatever netconfig does.
    """
    def ip(*args: str):
        return json.loads(host.run(["ip", "-j", *args]).stdout or "[]")

    routes = [{k: v for k, v in r.items() if k != "flags"}
              for r in ip("-4", "route", "show", "table", "main") + ip("-6", "route", "show", "table", "main")]
    return {
        "links": {link["ifname"]: "UP" in link["flags"] for link in ip("link", "show")},
        "addresses": sorted((a["ifname"], x["local"], x["prefixlen"]) for a in ip("address", "show") for x in a["addr_info"]),
        "routes": routes,
    }


def addresses(host: Host, device: str) -> set[str]:
    state = json.loads(host.run(["ip", "-j", "address", "show", "dev", device]).stdout)
    return {f"{a['local']}/{a['prefixlen']}" for link in state for a in link["addr_info"] if a["scope"] != "link"}


@pytest.fixture
def box(lab) -> Host:
    """A host with one link (eth0, down and unaddressed on its side) toward a router."""
    box, rtr = lab.host("box"), lab.host("rtr")
    lab.link(rtr, box, a_addrs=["192.0.2.1/24", "2001:db8::1/64"])
    box.run(["ip", "link", "set", "eth0", "down"])
    return box


def test_apply_twice_changes_nothing_the_second_time(box):
    text = config(box, ["192.0.2.2/24", "2001:db8::2/64"], DEFAULT_ROUTES)
    first = net(box, "apply", text).stdout
    assert "add link eth0 up" in first and "add address 203.0.113.10/32 on lo" in first
    assert "add route 0.0.0.0/0 via 192.0.2.1 metric 0" in first
    assert addresses(box, "lo") >= {"203.0.113.10/32", "2001:db8:ffff::10/128"}
    assert addresses(box, "eth0") == {"192.0.2.2/24", "2001:db8::2/64"}
    assert "default via 192.0.2.1" in box.run(["ip", "-4", "route"]).stdout
    assert "default via 2001:db8::1 dev eth0 proto static metric 100" in box.run(["ip", "-6", "route"]).stdout
    before = kernel_state(box)
    assert net(box, "apply", text).stdout == "nothing to change\n"
    assert kernel_state(box) == before
    assert "net apply would change nothing" in net(box, "show", text).stdout


def test_it_removes_what_it_made_and_nothing_else(box):
    # Someone else's address, which the config also wants: netconfig leaves it and does not claim it.
    box.run(["ip", "address", "add", "198.51.100.7/32", "dev", "lo"])
    wanted = config(box, ["192.0.2.2/24", "2001:db8::2/64"], DEFAULT_ROUTES, anycast='"203.0.113.10/32", "198.51.100.7/32"')
    net(box, "apply", wanted)
    assert "198.51.100.7/32 on lo: present, made by someone else" in net(box, "show", wanted).stdout
    smaller = config(box, ["192.0.2.2/24", "2001:db8::2/64"], anycast='"203.0.113.10/32"')
    changes = net(box, "apply", smaller).stdout.splitlines()
    assert sorted(changes) == ["remove route 0.0.0.0/0 via 192.0.2.1 metric 0", "remove route ::/0 via 2001:db8::1 metric 100"]
    assert "198.51.100.7/32" in addresses(box, "lo")
    # An address of its own that someone deleted is no longer its own to remove: nothing fails.
    box.run(["ip", "address", "del", "203.0.113.10/32", "dev", "lo"])
    assert net(box, "apply", config(box, ["192.0.2.2/24", "2001:db8::2/64"], anycast="")).stdout == "nothing to change\n"
    assert "198.51.100.7/32" in addresses(box, "lo")


def test_a_config_it_cannot_apply_leaves_the_namespace_as_it_was(box):
    net(box, "apply", config(box, ["192.0.2.2/24"]))
    before = kernel_state(box)
    # Addresses and a link go in first; the route's gateway is on no link, so the kernel refuses
    # it part-way and everything done before must be undone.
    unreachable = '\n[[net.routes]]\nto = "198.51.100.0/24"\nvia = "203.0.113.99"\n'
    result = net(box, "apply", config(box, ["192.0.2.3/24", "2001:db8::3/64"], unreachable), check=False)
    assert result.returncode == 1
    assert "Network is unreachable" in result.stderr and "undid" in result.stderr
    assert kernel_state(box) == before
    # Refused before anything is tried: an interface the namespace does not have.
    missing = config(box, ["192.0.2.3/24"]).replace('interface = "eth0"', 'interface = "eth9"')
    result = net(box, "apply", missing, check=False)
    assert result.returncode == 1 and "no interface eth9" in result.stderr
    assert kernel_state(box) == before
    # And something in the way that it did not make: a route to the same prefix and metric.
    box.run(["ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.1"])
    before = kernel_state(box)
    taken = '\n[[net.routes]]\nto = "198.51.100.0/24"\ninterface = "eth0"\n'
    result = net(box, "apply", config(box, ["192.0.2.3/24"], taken), check=False)
    assert result.returncode == 1 and "did not make and will not replace" in result.stderr
    assert kernel_state(box) == before
