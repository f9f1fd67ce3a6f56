"""Anycast in the lab: two boxes announce the same prefixes to a real FRR router, which spreads a
client's traffic over both (ECMP) and moves it away from a box that dies, is cut off or drains.

Each box runs what the image runs: `appliance net apply` (uplink and anycast addresses, routes),
its own BIRD on the rendered bird.conf, `appliance run` and the health agent `appliance announce`,
all with `[sfu] enabled = false` (the SFU does not exist yet). Times are measured and printed,
never asserted, except as generous bounds against a hang.
"""
from __future__ import annotations

import json
import shutil
import signal
import time
from dataclasses import dataclass

import pytest

from appliance.config import parse_config
from appliance.runner import assemble
from netconfig.bgp_state import read_bgp
from tests.lab.appliance import REPO
from tests.lab.boxes import ANY4, ANYCAST4, ANYCAST6, BOX_ASN, PYTHON, ROUTER_ASN, TURN_PORT, Box, box_toml
from tests.lab.frr import Frr, FrrNeighbor, frr_unavailable
from tests.lab.netns import Host, Lab, wait_for

pytestmark = pytest.mark.lab

CLIENT4, CLIENT_GW4 = "198.51.100.2", "198.51.100.1"
# A hang bound only: nothing below asserts how fast anything happened.
HANG = 15.0


def turn_assembled() -> bool:
    """Whether `appliance run` serves TURN yet (the lead is writing its listener)."""
    config = parse_config('[turn]\nsecrets = ["s"]\n', "probe.toml")
    return any(service.name == "turn" for service in assemble(config).services)


TURN = turn_assembled()
NEEDS_TURN = "the TURN listener is not in appliance.runner.assemble() yet; nothing on the anycast address answers STUN"


@dataclass
class Anycast:
    lab: Lab
    rtr: Host
    client: Host
    frr: Frr
    boxes: dict[str, Box]
    client_side: str  # the router's interface toward the client

    def next_hops(self, prefix: str) -> set[str]:
        """The router's interfaces toward the boxes that its kernel routes `prefix` through.

        Interfaces, not gateways: FRR installs an IPv6 route via the box's link-local address.
        """
        family = "-6" if ":" in prefix else "-4"
        routes = json.loads(self.rtr.run(["ip", family, "-j", "route", "show", prefix]).stdout or "[]")
        hops = set()
        for route in routes:
            hops |= {hop["dev"] for hop in route.get("nexthops", [])}
            if "dev" in route:
                hops.add(route["dev"])
        return hops

    def box_of_client_flow(self) -> Box:
        """The box the router sends the client's packets for the anycast address to (ECMP hash)."""
        route = self.rtr.run(["ip", "-j", "route", "get", ANY4, "from", CLIENT4, "iif", self.client_side]).stdout
        device = json.loads(route)[0]["dev"]
        return next(b for b in self.boxes.values() if b.router_side == device)

    def logs(self) -> str:
        return "\n".join([*(b.logs() for b in self.boxes.values()), self.frr.log("bgpd"),
                          self.frr.vtysh("show bgp summary", "show ip route " + ANYCAST4, "show ipv6 route " + ANYCAST6)])


def wait_gone(anycast: Anycast, box: Box, since: float, what: str) -> float:
    """Seconds from `since` until the router's kernel no longer routes the anycast /32 to `box`."""
    deadline = time.monotonic() + HANG
    while box.router_side in anycast.next_hops(ANYCAST4):
        assert time.monotonic() < deadline, f"{what}: next hop {box.host.name} still there after {HANG} s\n{anycast.logs()}"
        time.sleep(0.005)
    return time.monotonic() - since


def binding(host: Host, count: int = 1, every: float = 0.02) -> dict:
    result = host.run([PYTHON, "-m", "tests.lab.stun_flow", ANY4, TURN_PORT, "--count", count, "--every", every],
                      cwd=REPO, timeout=count * every + 30)
    return json.loads(result.stdout)


def build(lab: Lab, drain: float = 0.0) -> Anycast:
    if reason := frr_unavailable():
        pytest.skip(reason)
    if shutil.which("bird") is None:
        pytest.skip("BIRD 2 is not installed (Debian package bird2)")
    rtr, client = lab.host("rtr"), lab.host("client")
    for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
        rtr.run(["sysctl", "-qw", f"{key}=1"])
    client_side, _ = lab.link(rtr, client, a_addrs=[f"{CLIENT_GW4}/24", "2001:db8:c::1/64"],
                              b_addrs=[f"{CLIENT4}/24", "2001:db8:c::2/64"])
    client.run(["ip", "route", "add", "default", "via", CLIENT_GW4])
    client.run(["ip", "-6", "route", "add", "default", "via", "2001:db8:c::1"])
    boxes = {}
    links = {"box1": ("192.0.2.1", "192.0.2.2", "2001:db8:1::1", "2001:db8:1::2"),
             "box2": ("192.0.2.9", "192.0.2.10", "2001:db8:2::1", "2001:db8:2::2")}
    for name, (gw4, up4, gw6, up6) in links.items():
        host = lab.host(name)
        # Only the router's end is addressed here: the box's end is `appliance net apply`'s job.
        router_side, _ = lab.link(rtr, host, a_addrs=[f"{gw4}/29", f"{gw6}/64"])
        config = host.dir / "appliance.toml"
        config.write_text(box_toml(host.dir, name, f"{up4}/29", f"{up6}/64", gw4, gw6, turn=f"enabled = {str(TURN).lower()}",
                                   extra=f"[drain]\ntime = {drain}\n"))
        boxes[name] = Box(host, router_side, config)
    frr = Frr(rtr, ROUTER_ASN, "192.0.2.1",
              [FrrNeighbor(up4, BOX_ASN, bfd=True) for _, up4, _, _ in links.values()],
              maximum_paths=2, bfd_interval_ms=100)
    frr.start()
    anycast = Anycast(lab, rtr, client, frr, boxes, client_side)
    for box in boxes.values():
        box.boot()
    both = {b.router_side for b in boxes.values()}
    wait_for(lambda: anycast.next_hops(ANYCAST4) == both, "the router's two ECMP next hops for the anycast /32",
             timeout=60, detail=anycast.logs)
    return anycast


@pytest.fixture
def anycast(lab):
    return build(lab)


def test_both_boxes_announce_and_the_router_spreads_the_anycast_prefixes(anycast):
    both = {b.router_side for b in anycast.boxes.values()}
    wait_for(lambda: anycast.next_hops(ANYCAST6) == both, "the router's two ECMP next hops for the anycast /128",
             detail=anycast.logs)
    for box in anycast.boxes.values():
        state = read_bgp(parse_config(box.config.read_text(), str(box.config)))
        assert [s.established for s in state.sessions] == [True]
        assert state.announced == [ANYCAST4, ANYCAST6]
        status = box.appliance("status").stdout
        assert "Established" in status and f"announced: {ANYCAST4}, {ANYCAST6}" in status, status
        assert "health agent" in status and "announced" in status
    routes = anycast.frr.json(f"show ip route {ANYCAST4} json")[ANYCAST4][0]
    assert len(routes["nexthops"]) == 2
    if not TURN:
        pytest.skip(NEEDS_TURN)
    assert binding(anycast.client)["answered"] == [True]


def test_a_killed_service_loses_its_next_hop_and_the_other_box_answers(anycast):
    box = anycast.box_of_client_flow()
    killed = time.monotonic()
    box.service.send_signal(signal.SIGKILL)
    took = wait_gone(anycast, box, killed, "SIGKILL of the service")
    print(f"\nMEASURED withdraw after SIGKILL of the service (default probe settings): {took:.3f} s")
    assert anycast.next_hops(ANYCAST4) == {b.router_side for b in anycast.boxes.values()} - {box.router_side}
    assert box.agent.poll() is None  # the agent and BIRD keep running
    if not TURN:
        pytest.skip(NEEDS_TURN)
    assert binding(anycast.client)["answered"] == [True]


def test_a_box_cut_off_loses_its_next_hop_through_bfd(anycast):
    box1, box2 = anycast.boxes["box1"], anycast.boxes["box2"]
    # A box that dies behind a switch: the router's link stays up, only BFD can tell.
    box1.host.run(["nft", "-f", "-"], input="table inet cut {\n chain input { type filter hook input priority -300; "
                  "policy drop; }\n chain output { type filter hook output priority -300; policy drop; }\n}\n")
    cut = time.monotonic()
    took = wait_gone(anycast, box1, cut, "silent cut of box1")
    print(f"\nMEASURED withdraw after a silent cut (BFD at 100 ms; BIRD asks for 5 missed packets): {took:.3f} s")
    # The uplink veth down: the router's end loses carrier as well.
    box2.host.run(["ip", "link", "set", "eth0", "down"])
    down = time.monotonic()
    took = wait_gone(anycast, box2, down, "uplink of box2 down")
    print(f"MEASURED withdraw after the uplink veth down: {took:.3f} s")


def test_sigterm_withdraws_before_the_socket_closes_and_the_flow_loses_nothing(lab):
    drain = 3.0
    anycast = build(lab, drain=drain)
    box = anycast.box_of_client_flow()
    flows = []
    if TURN:
        # One flow from the client through the router, one inside the box to its own socket.
        count = int((drain + 2.0) / 0.02)
        flows = [host.popen([PYTHON, "-m", "tests.lab.stun_flow", ANY4, TURN_PORT, "--count", count], log=f"flow-{host.name}",
                            cwd=REPO) for host in (anycast.client, box.host)]
        time.sleep(0.5)
    stopped_wall = time.time()
    stopped = time.monotonic()
    box.service.send_signal(signal.SIGTERM)
    withdrawn = wait_gone(anycast, box, stopped, "SIGTERM drain")
    assert box.service.poll() is None, "the service closed before its route was withdrawn"
    box.service.wait(drain + HANG)
    exited = time.monotonic() - stopped
    print(f"\nMEASURED SIGTERM with a {drain} s drain: route withdrawn after {withdrawn:.3f} s, "
          f"service exited after {exited:.3f} s")
    assert withdrawn < exited
    assert box.service.returncode == 0
    if not TURN:
        pytest.skip(NEEDS_TURN)
    for flow in flows:
        flow.wait(HANG)
    through_router = json.loads(anycast.client.log_path("flow-client").read_text())
    assert all(through_router["answered"]), "the client's flow lost packets while its box drained"
    inside = json.loads(box.host.log_path(f"flow-{box.host.name}").read_text())
    during = [ok for sent, ok in zip(inside["sent_at"], inside["answered"])
              if inside["start"] + sent < stopped_wall + drain - 0.1]
    assert during and all(during), "the draining box stopped answering before the drain time ended"


def test_appliance_drain_and_undrain_toggle_the_announcement(anycast):
    box = anycast.boxes["box1"]
    assert box.appliance("drain").stdout.strip() == "draining"
    wait_gone(anycast, box, time.monotonic(), "appliance drain")
    assert box.service.poll() is None
    assert box.appliance("undrain").stdout.strip() == "serving"
    # Back after the rise count and the hold-down (10 s by default).
    wait_for(lambda: box.router_side in anycast.next_hops(ANYCAST4), "re-announced after undrain", timeout=30,
             detail=anycast.logs)


def test_the_agent_withdraws_when_it_stops(anycast):
    box = anycast.boxes["box2"]
    stopped = time.monotonic()
    box.agent.send_signal(signal.SIGTERM)
    took = wait_gone(anycast, box, stopped, "SIGTERM of the agent")
    assert box.agent.wait(HANG) == 0
    print(f"\nMEASURED withdraw after SIGTERM of the agent: {took:.3f} s")
