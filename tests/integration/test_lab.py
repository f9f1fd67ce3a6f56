"""The network-namespace lab, and BIRD announcing the anycast prefixes to a real FRR router in it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from appliance.config import Config, parse_config
from netconfig.bird_conf import announcement_path, protocol_name, render_announcement, render_bird_conf
from netconfig.bird_control import BirdControl
from tests.lab.appliance import REPO
from tests.lab.frr import Frr, FrrNeighbor, frr_unavailable
from tests.lab.netns import Host, Lab, check_lab_address, lab_unavailable, wait_for

EDGE = {4: "192.0.2.2", 6: "2001:db8::2"}
ROUTER = {4: "192.0.2.1", 6: "2001:db8::1"}
ANYCAST4, ANYCAST6 = "203.0.113.10/32", "2001:db8:ffff::10/128"
EDGE_ASN, ROUTER_ASN = 65010, 65000


def netns_names() -> set[str]:
    return {line.split()[0] for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()}


def alive(pid: int) -> bool:
    """Running, that is: a killed child of init stays a zombie until init reaps it, which may be late."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def join(lab: Lab) -> tuple[Host, Host]:
    """An edge and a router host on one dual-stack link."""
    edge, rtr = lab.host("edge"), lab.host("rtr")
    lab.link(edge, rtr, a_addrs=[f"{EDGE[4]}/24", f"{EDGE[6]}/64"], b_addrs=[f"{ROUTER[4]}/24", f"{ROUTER[6]}/64"])
    return edge, rtr


def test_only_documentation_ranges_are_accepted():
    assert str(check_lab_address("198.51.100.7/25")) == "198.51.100.7/25"
    assert str(check_lab_address("2001:db8:5::1/64")) == "2001:db8:5::1/64"
    for address in ("10.0.0.1/24", "192.0.2.1/16", "2001:db9::1/64", "2001:db8::1/16"):
        with pytest.raises(ValueError, match="only uses addresses inside"):
            check_lab_address(address)


@pytest.mark.lab
def test_two_hosts_ping_each_other_over_ipv4_and_ipv6(lab):
    edge, rtr = join(lab)
    assert edge.netns.startswith(lab.id) and edge.netns.endswith("-edge")
    for host, peer in ((edge, ROUTER), (rtr, EDGE)):
        for version in (4, 6):
            # -w: keep trying for up to 5 s; the first IPv6 neighbor solicitation can go unanswered.
            host.run(["ping", "-c", "1", "-w", "5", peer[version]])
    assert "192.0.2.2/24" in edge.run(["ip", "-4", "address", "show", "dev", "eth0"]).stdout


@pytest.mark.lab
def test_a_failing_test_still_tears_down_and_runs_never_collide():
    if reason := lab_unavailable():
        pytest.skip(reason)
    with pytest.raises(RuntimeError, match="the test failed"), Lab() as first, Lab() as second:
        hosts = [first.host("rtr"), second.host("rtr")]
        sleepers = [host.popen(["sleep", "60"]) for host in hosts]
        assert hosts[0].netns != hosts[1].netns
        assert {h.netns for h in hosts} <= netns_names()
        raise RuntimeError("the test failed")
    assert not {h.netns for h in hosts} & netns_names()
    assert all(s.poll() is not None for s in sleepers)
    assert not first.dir.exists()


@pytest.mark.lab
def test_an_interrupted_run_still_cleans_up():
    if reason := lab_unavailable():
        pytest.skip(reason)
    script = textwrap.dedent("""
        from tests.lab.netns import Lab
        host = Lab().host("x")
        forked = host.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"]).stdout.strip()
        print(host.netns, host.popen(["sleep", "60"]).pid, forked, flush=True)
        raise KeyboardInterrupt
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert "KeyboardInterrupt" in result.stderr
    netns, *pids = result.stdout.split()
    assert netns not in netns_names()
    assert not any(alive(int(pid)) for pid in pids)


@pytest.mark.lab
def test_a_killed_runs_lab_is_swept_by_the_next_lab():
    # SIGKILL (a CI job's or a session's end) runs no teardown: the next lab made removes what it left.
    if reason := lab_unavailable():
        pytest.skip(reason)
    script = textwrap.dedent("""
        import os, signal
        from tests.lab.netns import Lab
        lab = Lab()
        host = lab.host("x")
        forked = host.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!"]).stdout.strip()
        print(host.netns, lab.dir, forked, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    netns, directory, forked = result.stdout.split()
    assert netns in netns_names() and alive(int(forked))  # left behind
    with Lab() as lab:
        lab.host("y")
        assert netns not in netns_names()
        assert not Path(directory).exists() and not alive(int(forked))


def edge_config(neighbor: str, bfd: bool, password: str | None, control_socket: str) -> Config:
    password_line = f'password = "{password}"' if password else ""
    return parse_config(f"""
[node]
id = "edge-1"

[anycast]
prefixes = ["{ANYCAST4}", "{ANYCAST6}"]

[bgp]
local_asn = {EDGE_ASN}
router_id = "{EDGE[4]}"
control_socket = "{control_socket}"

[announce]
bird_dir = "{os.path.dirname(control_socket)}/bird"

[[bgp.neighbors]]
address = "{neighbor}"
asn = {ROUTER_ASN}
bfd = {str(bfd).lower()}
{password_line}
""", "edge.toml")


def start_bird(host: Host, config: Config, announce: bool = True) -> subprocess.Popen:
    """BIRD in `host`, announcing from the start unless `announce` is False (the health agent's job)."""
    conf = host.dir / "bird.conf"
    conf.write_text(render_bird_conf(config))
    if announce:
        os.makedirs(config.announce.bird_dir, exist_ok=True)
        Path(announcement_path(config)).write_text(render_announcement(config))
    ctl = config.bgp.control_socket
    process = host.popen(["bird", "-f", "-c", conf, "-s", ctl, "-P", host.dir / "bird.pid"])
    wait_for(lambda: os.path.exists(ctl), f"BIRD's control socket in {host}", detail=lambda: host.log_path("bird").read_text())
    return process


def learned(frr: Frr, family: str, prefix: str) -> dict | None:
    """FRR's best path to `prefix` in its BGP table, if it has one."""
    paths = frr.json(f"show bgp {family} unicast json").get("routes", {}).get(prefix, [])
    return next((p for p in paths if p.get("bestpath")), None)


@pytest.mark.lab
@pytest.mark.parametrize(
    ("version", "bfd", "password"),
    [(4, False, None), (6, True, "lab-secret")],
    ids=["ipv4-session", "ipv6-session-bfd-md5"],
)
def test_bird_announces_the_anycast_prefixes_to_frr(lab, version, bfd, password):
    if reason := frr_unavailable():
        pytest.skip(reason)
    if shutil.which("bird") is None:
        pytest.skip("BIRD 2 is not installed (Debian package bird2)")
    edge, rtr = join(lab)
    frr = Frr(rtr, ROUTER_ASN, ROUTER[4], [FrrNeighbor(EDGE[version], EDGE_ASN, password, bfd)])
    frr.start()
    config = edge_config(ROUTER[version], bfd, password, str(edge.dir / "bird.ctl"))
    session = protocol_name(config.bgp.neighbors[0])

    def logs() -> str:
        return "\n".join([edge.log_path("bird").read_text(), frr.log("bgpd"), frr.vtysh("show bgp summary")])

    bird_process = start_bird(edge, config)
    with BirdControl(config.bgp.control_socket) as bird:
        state = wait_for(lambda: (p := bird.protocols()[session]).info == "Established" and p,
                         f"BIRD session {session} Established", detail=logs)
        assert (state.proto, state.state) == ("BGP", "up")

        # One session carries both families: the router learns both prefixes with this box as next hop.
        path4 = wait_for(lambda: learned(frr, "ipv4", ANYCAST4), "FRR learned the IPv4 anycast prefix", detail=logs)
        path6 = wait_for(lambda: learned(frr, "ipv6", ANYCAST6), "FRR learned the IPv6 anycast prefix", detail=logs)
        assert path4["path"] == path6["path"] == str(EDGE_ASN)
        assert path4["nexthops"][0]["ip"] == EDGE[4]
        assert path6["nexthops"][0]["ip"] == EDGE[6]
        # and zebra put them into the router's kernel
        wait_for(lambda: f"via {EDGE[4]}" in rtr.run(["ip", "-4", "route", "show", ANYCAST4]).stdout,
                 "the IPv4 anycast route in the router's kernel", detail=logs)
        wait_for(lambda: "proto bgp" in rtr.run(["ip", "-6", "route", "show", ANYCAST6]).stdout,
                 "the IPv6 anycast route in the router's kernel", detail=logs)

        if bfd:
            wait_for(lambda: any(" Up " in line for line in bird.command("show bfd sessions").texts(1020)),
                     "BIRD's BFD session Up", detail=logs)
            peers = wait_for(lambda: [p for p in frr.json("show bfd peers json") if p["status"] == "up"],
                             "FRR's BFD peer up", detail=lambda: frr.vtysh("show bfd peers"))
            assert peers[0]["peer"] == EDGE[version]
        else:
            assert not any(p.proto == "BFD" for p in bird.protocols().values())

    # A dead box: with graceful restart off the router drops its routes at once, where it would
    # otherwise keep them as stale for 120 s (the deadline here is well below that).
    bird_process.kill()
    wait_for(lambda: learned(frr, "ipv4", ANYCAST4) is None and learned(frr, "ipv6", ANYCAST6) is None,
             "the router withdrew the anycast prefixes of a dead BIRD", timeout=10, detail=logs)
