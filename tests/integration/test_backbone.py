"""The backbone in the lab: two boxes relay TURN on one anycast address, each from its own port
slice, joined by a VXLAN tunnel; a TURN peer's packets that the router sends to the box without
the allocation cross the tunnel to the box with it, in the kernel.

    client ──┐                ┌── peer (turnutils_peer)
             rtr (FRR, ECMP over both boxes)
          ┌──┘                └──┐
        boxa ═══ underlay link ═══ boxb        (VXLAN bb-boxb / bb-boxa over it)

Each box runs what the image runs (`net apply`, BIRD, `appliance run`, `appliance announce`),
inside its namespace only. The router hashes flows by addresses (ECMP, L3), so the client's flow
to the anycast address lands on one box (the owner: it allocates the relay, from its slice) and
the peer is given an address whose flow lands on the other: the peer's packets to the relay
take the misdirected path for real. Counters are read with `ip` and `nft`, not through the product.
"""
from __future__ import annotations

import base64
import json
import re
import shutil
import time
from dataclasses import dataclass

import pytest

from netconfig.tunnel import public_key
from tests.lab.appliance import REPO
from tests.lab.boxes import ANY4, ANYCAST6, BOX_ASN, PYTHON, ROUTER_ASN, SECRET, TURN_PORT, Box, box_toml
from tests.lab.frr import Frr, FrrNeighbor, frr_unavailable
from tests.lab.netns import Host, Lab, wait_for
from tests.lab.turn_client import uclient

pytestmark = pytest.mark.lab

ANY6 = ANYCAST6.split("/")[0]
SLICES = {"boxa": (61000, 61499), "boxb": (61500, 61999)}
# Router side and box side of each uplink, IPv4 and IPv6.
UPLINKS = {"boxa": ("192.0.2.1", "192.0.2.2", "2001:db8:1::1", "2001:db8:1::2"),
           "boxb": ("192.0.2.9", "192.0.2.10", "2001:db8:2::1", "2001:db8:2::2")}
UNDERLAY = {"boxa": "192.0.2.17", "boxb": "192.0.2.18"}
OVERLAY = {"boxa": ("192.0.2.129", "2001:db8:bb::1"), "boxb": ("192.0.2.130", "2001:db8:bb::2")}
# Tables: table_base (1000) + the peer's index in the backbone subnet (.129 is 1, .130 is 2).
TABLE = {"boxa": 1001, "boxb": 1002}
CLIENT, CLIENT_GW = "198.51.100.2", "198.51.100.1"
PEER_GW = "198.51.100.65"
# The peer host holds these; the test picks one whose flow the router sends to the other box.
PEER_ADDRESSES = [f"198.51.100.{n}" for n in range(70, 86)]
PEER_PORT = 7000
MESSAGES = ["-n", "200", "-l", "120", "-z", "5", "-m", "1", "-c"]
HANG = 20.0  # a hang bound only: nothing asserts how fast anything happened


def backbone_toml(name: str, other: str, box_dir) -> str:
    """The box's config: its slice, IPv6 relays too, the underlay on eth1, and the other box as its peer."""
    gw4, up4, gw6, up6 = UPLINKS[name]
    first, last = SLICES[name]
    their_first, their_last = SLICES[other]
    return box_toml(box_dir, name, f"{up4}/29", f"{up6}/64", gw4, gw6, relay_ports=f"{first}-{last}",
                    turn=f'relay_address_v6 = "{ANY6}"\nallow_peers = ["198.51.100.0/24"]', bfd=False, extra=f"""
[[net.uplinks]]
interface = "eth1"
addresses = ["{UNDERLAY[name]}/29"]

[backbone]
kind = "vxlan"
underlay = "{UNDERLAY[name]}"
overlay = "{OVERLAY[name][0]}/25"
overlay_v6 = "{OVERLAY[name][1]}/64"

[[backbone.peers]]
node = "{other}"
underlay = "{UNDERLAY[other]}"
overlay = "{OVERLAY[other][0]}"
overlay_v6 = "{OVERLAY[other][1]}"
relay_ports = "{their_first}-{their_last}"
""")


@dataclass
class Backbone:
    rtr: Host
    client: Host
    peer: Host
    frr: Frr
    boxes: dict[str, Box]
    client_side: str
    peer_side: str

    def landing(self, source: str, side: str) -> Box:
        """The box the router sends a flow from `source` (arriving on `side`) to the anycast address."""
        device = json.loads(self.rtr.run(["ip", "-j", "route", "get", ANY4, "from", source, "iif", side]).stdout)[0]["dev"]
        return next(box for box in self.boxes.values() if box.router_side == device)

    def next_hops(self) -> set[str]:
        routes = json.loads(self.rtr.run(["ip", "-j", "route", "show", f"{ANY4}/32"]).stdout or "[]")
        return {hop["dev"] for route in routes for hop in route.get("nexthops", [route])}

    def logs(self) -> str:
        return "\n".join([*(b.logs() for b in self.boxes.values()), self.frr.log("bgpd")])


def build(lab: Lab) -> Backbone:
    for reason in (frr_unavailable(), shutil.which("bird") is None and "BIRD 2 is not installed (Debian package bird2)",
                   shutil.which("turnutils_uclient") is None and "coturn's turnutils are not installed",
                   shutil.which("nft") is None and "nftables is not installed"):
        if reason:
            pytest.skip(reason)
    rtr, client, peer = lab.host("rtr"), lab.host("client"), lab.host("peer")
    for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"):
        rtr.run(["sysctl", "-qw", f"{key}=1"])
    client_side, _ = lab.link(rtr, client, [f"{CLIENT_GW}/26"], [f"{CLIENT}/26"])
    client.run(["ip", "route", "add", "default", "via", CLIENT_GW])
    peer_side, _ = lab.link(rtr, peer, [f"{PEER_GW}/26"], [f"{a}/26" for a in PEER_ADDRESSES])
    peer.run(["ip", "route", "add", "default", "via", PEER_GW])
    boxes = {}
    for name, (gw4, _, gw6, _) in UPLINKS.items():
        host = lab.host(name)
        # Only the router's end is addressed here: the box's ends are `appliance net apply`'s job.
        router_side, _ = lab.link(rtr, host, [f"{gw4}/29", f"{gw6}/64"])
        boxes[name] = Box(host, router_side, host.dir / "appliance.toml")
    lab.link(boxes["boxa"].host, boxes["boxb"].host)  # the underlay: eth1 on both
    for name, other in (("boxa", "boxb"), ("boxb", "boxa")):
        boxes[name].config.write_text(backbone_toml(name, other, boxes[name].host.dir))
    # No BFD: nothing here fails a box, and a BFD session that misses its 100 ms beats while the
    # boxes start on a busy machine leaves BIRD idle for its 60 s error wait.
    frr = Frr(rtr, ROUTER_ASN, "192.0.2.1", [FrrNeighbor(up4, BOX_ASN) for _, up4, _, _ in UPLINKS.values()],
              maximum_paths=2)
    frr.start()
    backbone = Backbone(rtr, client, peer, frr, boxes, client_side, peer_side)
    for box in boxes.values():
        box.boot()
    wait_for(lambda: backbone.next_hops() == {b.router_side for b in boxes.values()},
             "the router's two ECMP next hops for the anycast /32", timeout=60, detail=backbone.logs)
    return backbone


@pytest.fixture
def backbone(lab):
    return build(lab)


def nft_packets(box: Box, chain: str, ports: tuple[int, int]) -> int:
    """Packets counted by the box's nftables rules of `chain` that match the destination ports `ports`."""
    ruleset = json.loads(box.host.run(["nft", "-j", "list", "table", "inet", "edgecall"]).stdout)["nftables"]
    total = 0
    for entry in ruleset:
        rule = entry.get("rule")
        if not rule or rule["chain"] != chain:
            continue
        ranges = [m["match"]["right"]["range"] for m in rule["expr"] if "match" in m and "range" in m["match"]["right"]]
        if [list(ports)] == ranges:
            total += next(e["counter"]["packets"] for e in rule["expr"] if "counter" in e)
    return total


def tx_packets(box: Box, device: str) -> int:
    return json.loads(box.host.run(["ip", "-j", "-s", "link", "show", "dev", device]).stdout)[0]["stats64"]["tx"]["packets"]


def time_exceeded(host: Host) -> int:
    """ICMP time-exceeded messages the host has sent: what a forwarding loop ends in."""
    lines = [line.split() for line in host.run(["cat", "/proc/net/snmp"]).stdout.splitlines() if line.startswith("Icmp:")]
    return int(dict(zip(lines[0], lines[1]))["OutTimeExcds"])


def rules(box: Box, family: str = "-4") -> list[str]:
    return [line.strip() for line in box.host.run(["ip", family, "rule"]).stdout.splitlines()]


def roles(backbone: Backbone) -> tuple[Box, Box, str]:
    """The owner (where the client's flow lands), the other box, and a peer address landing on the other."""
    owner = backbone.landing(CLIENT, backbone.client_side)
    other = next(b for b in backbone.boxes.values() if b is not owner)
    address = next((a for a in PEER_ADDRESSES if backbone.landing(a, backbone.peer_side) is other), None)
    assert address, f"the router hashes every peer address to {owner.host.name}"
    return owner, other, address


def relay(backbone: Backbone, peer_address: str):
    echo = backbone.peer.popen(["turnutils_peer", "-L", peer_address, "-p", PEER_PORT], log="turnutils_peer")
    try:
        time.sleep(0.3)  # the peer binds its socket
        return uclient(ANY4, TURN_PORT, "-e", peer_address, "-r", str(PEER_PORT), "-W", SECRET, "-u", "lab-user",
                       *MESSAGES, netns=backbone.client.netns, timeout=HANG * 3)
    finally:
        echo.terminate()
        echo.wait(5)


def test_a_peers_packets_landing_on_the_other_box_reach_the_relay_through_the_tunnel(backbone):
    owner, other, peer_address = roles(backbone)
    name, other_name = owner.host.name, other.host.name
    print(f"\nECMP: client {CLIENT} lands on {name}; peer {peer_address} lands on {other_name}")
    assert backbone.landing(peer_address, backbone.peer_side) is other
    tunnel = f"bb-{name}"
    before = {"tx": tx_packets(other, tunnel), "landed": nft_packets(other, "prerouting", SLICES[name]),
              "forwarded": nft_packets(other, "forward", SLICES[name]), "own": nft_packets(owner, "output", SLICES[name])}
    started = time.monotonic()
    result = relay(backbone, peer_address)
    took = time.monotonic() - started
    assert result.sent > 0 and result.received == result.sent and result.lost == 0, result.output[-3000:]
    # The relay was allocated on the owner, in its slice: the owner's counter of packets sent from
    # its slice saw the data go to the peer, the other box's counter of packets to it saw the echoes.
    assert nft_packets(owner, "output", SLICES[name]) - before["own"] >= result.sent
    landed = nft_packets(other, "prerouting", SLICES[name]) - before["landed"]
    forwarded = nft_packets(other, "forward", SLICES[name]) - before["forwarded"]
    tunnel_tx = tx_packets(other, tunnel) - before["tx"]
    rtt = re.findall(r"Average round trip delay ([\d.]+) ms", result.output)
    print(f"MEASURED {result.sent} messages relayed, none lost, in {took:.2f} s (average round trip "
          f"{rtt[-1] if rtt else '?'} ms); {other_name} took {landed} of the peer's packets for {name}'s slice and "
          f"forwarded {forwarded} through {tunnel} (its tx counter: +{tunnel_tx})")
    # Every echo the peer sent came back through the other box and its tunnel.
    assert landed >= result.sent and forwarded == landed and tunnel_tx >= forwarded
    wait_for(lambda: re.search(rf"backbone {name} \(bb-{name}\): up, its slice forwarded; packets forwarded {forwarded}\b",
                               other.appliance("status").stdout), "`appliance status` showing the forwarded packets",
             timeout=HANG, detail=lambda: other.appliance("status").stdout)

    # The same steering for IPv6, and for the other direction, read from the kernel's decisions.
    route = other.host.run(["ip", "-6", "route", "get", ANY6, "from", "2001:db8:c::2", "iif", "eth0", "ipproto", "udp",
                            "dport", str(SLICES[name][0])]).stdout
    assert f"via {OVERLAY[name][1]} dev {tunnel} table {TABLE[name]}" in route, route
    own_port = other.host.run(["ip", "route", "get", ANY4, "from", peer_address, "iif", "eth0", "ipproto", "udp",
                               "dport", str(SLICES[other_name][0])]).stdout
    assert own_port.startswith(f"local {ANY4}"), own_port
    early_demux = other.host.run(["sysctl", "-n", "net.ipv4.udp_early_demux"]).stdout.strip()
    print(f"net.ipv4.udp_early_demux = {early_demux} on both boxes (the kernel's default): no effect on the steering")

    for box in backbone.boxes.values():
        assert box.appliance("net", "apply").stdout == "nothing to change\n"
    assert f"from all to {ANY4} ipproto udp dport {SLICES[name][0]}-{SLICES[name][1]} lookup {TABLE[name]}" in " ".join(
        rules(other))
    assert not any(line.startswith("0:") for line in rules(other) + rules(other, "-6"))


def test_a_peer_down_has_its_slice_dropped_and_counted_without_a_loop_then_removed(backbone):
    owner, other, peer_address = roles(backbone)
    name = owner.host.name
    tunnel, table = f"bb-{name}", TABLE[name]
    # The owner's backbone stops: VXLAN from the other box no longer gets in (nor do its probes).
    owner.host.run(["nft", "-f", "-"], input="table inet cut {\n chain input { type filter hook input priority -400; "
                   "udp dport 4789 drop; }\n}\n")
    cut = time.monotonic()
    wait_for(lambda: "blackhole" in other.host.run(["ip", "route", "show", "table", str(table)]).stdout,
             f"{other.host.name} dropping {name}'s slice", timeout=HANG, detail=backbone.logs)
    print(f"\nMEASURED {name}'s backbone cut -> {other.host.name} drops its slice after {time.monotonic() - cut:.2f} s "
          "(probes every 0.5 s, fall 2)")
    loops = {host.name: time_exceeded(host) for host in (backbone.rtr, owner.host, other.host)}
    before = {chain: nft_packets(other, chain, SLICES[name]) for chain in ("prerouting", "forward")}
    count = 100
    backbone.peer.run([PYTHON, "-c", (
        "import socket, time\n"
        f"s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('{peer_address}', {PEER_PORT}))\n"
        f"for i in range({count}):\n"
        f"    s.sendto(b'x' * 100, ('{ANY4}', {SLICES[name][0] + 7})); time.sleep(0.002)\n")])
    def counted(chain: str) -> int:
        return nft_packets(other, chain, SLICES[name]) - before[chain]

    wait_for(lambda: counted("prerouting") >= count, "the peer's packets landing on the other box", timeout=HANG)
    landed, forwarded = counted("prerouting"), counted("forward")
    print(f"MEASURED with {name}'s backbone down: {other.host.name} took {landed} packets for its slice, "
          f"forwarded {forwarded}, dropped {landed - forwarded}")
    assert landed == count and forwarded == 0
    assert {host.name: time_exceeded(host) for host in (backbone.rtr, owner.host, other.host)} == loops
    # The agent reads the counters each round: its next report has them.
    wait_for(lambda: re.search(rf"backbone {name} \(bb-{name}\): down, its slice dropped here .*dropped {count}\b",
                               other.appliance("status").stdout), "`appliance status` showing the drops", timeout=HANG,
             detail=lambda: other.appliance("status").stdout)
    # `net apply` wants what the agent set: nothing to change, the slice stays dropped.
    assert other.appliance("net", "apply").stdout == "nothing to change\n"

    owner.host.run(["nft", "delete", "table", "inet", "cut"])
    mended = time.monotonic()
    wait_for(lambda: f"via {OVERLAY[name][0]} dev {tunnel}" in other.host.run(["ip", "route", "show", "table",
                                                                                 str(table)]).stdout,
             f"{other.host.name} forwarding {name}'s slice again", timeout=HANG, detail=backbone.logs)
    print(f"MEASURED backbone back -> forwarding again after {time.monotonic() - mended:.2f} s (rise 3)")
    result = relay(backbone, peer_address)
    assert result.sent > 0 and result.received == result.sent and result.lost == 0, result.output[-3000:]

    # Without the peer in its config, the other box removes its tunnel, rules and table, and nothing else.
    kept_rules = [line for line in rules(other) + rules(other, "-6") if tunnel not in line and f"lookup {table}" not in line]
    text = other.config.read_text()
    other.config.write_text(text[:text.index("[[backbone.peers]]")])
    removed = other.appliance("net", "apply").stdout.splitlines()
    mentions = (tunnel, f"table {table}", f"lookup {table}", f"{SLICES[name][0]}-{SLICES[name][1]}")
    assert removed and all(line.startswith("remove ") and any(m in line for m in mentions) for line in removed), removed
    assert rules(other) + rules(other, "-6") == kept_rules
    assert other.host.run(["ip", "link", "show", tunnel], check=False).returncode != 0
    assert other.host.run(["ip", "route", "show", "table", str(table)], check=False).stdout == ""
    assert other.appliance("net", "apply").stdout == "nothing to change\n"


@pytest.mark.parametrize("kind", ["gre", "wireguard"])
def test_gre_and_wireguard_tunnels_where_the_kernel_has_them(lab, kind):
    """Production kernels have these; the lab's may not (then the unit tests' netlink checks stand)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    box, far = lab.host("box"), lab.host("far")
    lab.link(box, far, b_addrs=[f"{UNDERLAY['boxb']}/29"])
    probe = box.run(["ip", "link", "add", "probe0", "type", kind], check=False)
    if probe.returncode != 0:
        pytest.skip(f"this kernel has no {kind} link kind ({probe.stderr.strip()})")
    box.run(["ip", "link", "del", "probe0"])
    keys = [base64.b64encode(X25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption()))
            .decode() for _ in range(2)]
    config = box.dir / "appliance.toml"
    config.write_text(f"""
[turn]
relay_address = "{ANY4}"
relay_ports = "61000-61499"
[anycast]
prefixes = ["{ANY4}/32"]
[net]
state_file = "{box.dir}/net.json"
[[net.uplinks]]
interface = "eth0"
addresses = ["{UNDERLAY['boxa']}/29"]
[announce]
bird_dir = "{box.dir}/bird"
[backbone]
kind = "{kind}"
underlay = "{UNDERLAY['boxa']}"
overlay = "{OVERLAY['boxa'][0]}/25"
private_key = "{keys[0]}"
[[backbone.peers]]
node = "boxb"
underlay = "{UNDERLAY['boxb']}"
overlay = "{OVERLAY['boxb'][0]}"
relay_ports = "61500-61999"
public_key = "{public_key(keys[1])}"
""")
    net = [PYTHON, "-m", "appliance", "net", "apply", "--config", config]
    box.run(net, cwd=REPO)
    assert f" {kind} " in box.run(["ip", "-d", "link", "show", "bb-boxb"]).stdout
    assert box.run(net, cwd=REPO).stdout == "nothing to change\n"
