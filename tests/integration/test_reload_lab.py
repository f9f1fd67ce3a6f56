"""A reload that changes the backbone's peers, in a lab namespace: the running box makes the kernel hold
the new peer's tunnel and slice through `net apply` and says so; a peer taken out goes again. Judged by
reading the kernel with `ip`. Only ever inside the lab's namespaces.
"""
from __future__ import annotations

import json
import shutil

import pytest

from appliance.config import parse_config
from netconfig.backbone import links
from tests.lab.appliance import REPO
from tests.lab.boxes import PYTHON
from tests.lab.netns import Host, Lab, wait_for

pytestmark = pytest.mark.lab

PEER_B = """
[[backbone.peers]]
node = "boxb"
underlay = "192.0.2.18"
overlay = "192.0.2.130"
relay_ports = "61500-61999"
"""
PEER_C = """
[[backbone.peers]]
node = "boxc"
underlay = "192.0.2.19"
overlay = "192.0.2.131"
relay_ports = "62000-62499"
"""


def box_toml(host: Host, peers: str) -> str:
    return f"""
[node]
id = "boxa"
[api]
listen = "127.0.0.1:8080"
[sfu]
enabled = false
[turn]
workers = 1
listen = ["udp://192.0.2.17:3478"]
secrets = ["lab-secret"]
relay_address = "192.0.2.17"
relay_ports = "61000-61499"
[net]
state_file = "{host.dir}/net.json"
[[net.uplinks]]
interface = "eth0"
addresses = ["192.0.2.17/29"]
[announce]
bird_dir = "{host.dir}/bird"
[backbone]
kind = "vxlan"
underlay = "192.0.2.17"
overlay = "192.0.2.129/25"
{peers}"""


def appliance(host: Host, *args: str, check: bool = True):
    return host.run([PYTHON, "-m", "appliance", *args, "--config", host.dir / "appliance.toml"], check=check, cwd=REPO)


def tunnels(host: Host) -> set[str]:
    return {link["ifname"] for link in json.loads(host.run(["ip", "-j", "link", "show"]).stdout)
            if link["ifname"].startswith("bb-")}


def routing_tables(host: Host) -> set[int]:
    rules = json.loads(host.run(["ip", "-j", "-4", "rule", "show"]).stdout)
    return {int(rule["table"]) for rule in rules if str(rule.get("table", "")).isdigit()}


def test_a_reload_adds_and_removes_a_backbone_peer_through_net_apply(lab: Lab):
    if shutil.which("nft") is None:
        pytest.skip("nftables is not installed")
    box, other = lab.host("boxa"), lab.host("boxb")
    lab.link(box, other, [], ["192.0.2.18/29"])  # the box's end is net apply's to address
    config = box.dir / "appliance.toml"
    config.write_text(box_toml(box, PEER_B))
    appliance(box, "net", "apply")
    box.popen([PYTHON, "-m", "appliance", "run", "--config", config], log="appliance", cwd=REPO)
    wait_for(lambda: appliance(box, "status", check=False).returncode == 0, "the box answering on its control socket",
             detail=lambda: box.log_path("appliance").read_text())
    b, c = links(parse_config(box_toml(box, PEER_B + PEER_C), "appliance.toml"))
    assert tunnels(box) == {b.interface} and c.table not in routing_tables(box)

    config.write_text(box_toml(box, PEER_B + PEER_C))
    reloaded = appliance(box, "reload")
    assert reloaded.stdout.splitlines()[1:] == ["  applied: backbone.peers[boxc]"], reloaded.stdout
    assert tunnels(box) == {b.interface, c.interface} and c.table in routing_tables(box)

    config.write_text(box_toml(box, PEER_B))
    reloaded = appliance(box, "reload")
    assert reloaded.stdout.splitlines()[1:] == ["  applied: backbone.peers[boxc]"], reloaded.stdout
    assert tunnels(box) == {b.interface} and c.table not in routing_tables(box)
    assert "reloaded" in box.log_path("appliance").read_text()
