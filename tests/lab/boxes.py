"""An appliance box in the lab: its own namespace running what the image runs, from its own config.

`boot()` is the image's boot sequence: `appliance net apply`, BIRD on the rendered bird.conf,
`appliance run`, and the health agent `appliance announce`.
"""
from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .appliance import REPO
from .netns import Host

PYTHON = sys.executable
ROUTER_ASN, BOX_ASN = 65000, 65010
ANYCAST4, ANYCAST6 = "203.0.113.10/32", "2001:db8:ffff::10/128"
ANY4 = ANYCAST4.split("/")[0]
TURN_PORT = 3478
SECRET = "lab-secret"


def box_toml(box_dir: Path, name: str, uplink4: str, uplink6: str, gw4: str, gw6: str, relay_ports: str = "61000-61999",
             turn: str = "", extra: str = "", bfd: bool = True) -> str:
    """A box's config: TURN on the anycast address, BGP to the router at `gw4` (with BFD unless
    `bfd` is false), the uplink eth0; `turn` adds lines to [turn], `extra` adds tables at the end."""
    return f"""
[node]
id = "{name}"

[api]
listen = "127.0.0.1:8080"

[sfu]
enabled = false

[turn]
workers = 1
listen = ["udp://{ANY4}:{TURN_PORT}"]
secrets = ["{SECRET}"]
relay_address = "{ANY4}"
relay_ports = "{relay_ports}"
{turn}

[anycast]
prefixes = ["{ANYCAST4}", "{ANYCAST6}"]

[bgp]
local_asn = {BOX_ASN}
router_id = "{uplink4.split('/')[0]}"
control_socket = "{box_dir}/bird.ctl"

[[bgp.neighbors]]
address = "{gw4}"
asn = {ROUTER_ASN}
bfd = {str(bfd).lower()}

[net]
state_file = "{box_dir}/net.json"

[[net.uplinks]]
interface = "eth0"
addresses = ["{uplink4}", "{uplink6}"]

[[net.routes]]
to = "0.0.0.0/0"
via = "{gw4}"

[[net.routes]]
to = "::/0"
via = "{gw6}"

[announce]
bird_dir = "{box_dir}/bird"

{extra}"""


@dataclass
class Box:
    host: Host
    router_side: str  # the router's interface toward the box
    config: Path
    service: subprocess.Popen | None = None
    agent: subprocess.Popen | None = None

    def appliance(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.host.run([PYTHON, "-m", "appliance", *args, "--config", self.config], check=check, cwd=REPO)

    def start_service(self) -> None:
        self.service = self.host.popen([PYTHON, "-m", "appliance", "run", "--config", self.config],
                                       log="appliance", cwd=REPO)

    def start_agent(self) -> None:
        self.agent = self.host.popen([PYTHON, "-m", "appliance", "announce", "--config", self.config],
                                     log="announce", cwd=REPO)

    def boot(self) -> None:
        self.appliance("net", "apply")
        directory = self.host.dir
        (directory / "bird.conf").write_text(self.appliance("net", "bird-conf").stdout)
        self.host.popen(["bird", "-f", "-c", directory / "bird.conf", "-s", directory / "bird.ctl", "-P", directory / "bird.pid"])
        self.start_service()
        self.start_agent()

    def logs(self) -> str:
        return "\n".join(f"--- {self.host.name} {name}\n{self.host.log_path(name).read_text()}"
                         for name in ("bird", "appliance", "announce") if self.host.log_path(name).exists())
