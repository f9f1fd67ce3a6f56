"""The image's boot step: which configuration the services get, and what the console says."""
from __future__ import annotations

import ipaddress
import os
import re
import stat
import tomllib

from appliance.boot import Paths, announce, prepare, stage
from appliance.boot.interfaces import FirstInterface, first_interface
from appliance.cluster.nats_server import client_token, route_password
from appliance.config import load_config

GOOD = """\
[node]
id = "box-1"

[api]
listen = "192.0.2.10:8080"

[[apps]]
id = "app"
secret = "s3cret"
"""

BROKEN = """\
[api]
listen = "192.0.2.10:80800"
"""

BGP = GOOD + """
[bgp]
local_asn = 65010
router_id = "192.0.2.10"

[cluster]
nats = ["nats://192.0.2.10:4222"]
secret = "a-cluster-secret-of-some-length"
"""

SECRET = "a-cluster-secret-of-some-length"

# Three boxes joined by a backbone; this one is 192.0.2.129 inside it, and its NATS server is the first URL.
CLUSTER = GOOD + f"""
[turn]
relay_ports = "49152-49999"

[backbone]
underlay = "198.51.100.1"
overlay = "192.0.2.129/25"

[[backbone.peers]]
node = "box-2"
underlay = "198.51.100.2"
overlay = "192.0.2.130"
relay_ports = "50000-50999"

[[backbone.peers]]
node = "box-3"
underlay = "198.51.100.3"
overlay = "192.0.2.131"
relay_ports = "51000-51999"

[cluster]
nats = ["nats://192.0.2.129:4222", "nats://192.0.2.130:4222", "nats://192.0.2.131:4222"]
secret = "{SECRET}"
"""


def paths_in(tmp_path) -> Paths:
    (tmp_path / "etc").mkdir()
    return Paths(operator=str(tmp_path / "etc" / "appliance.toml"), run_dir=str(tmp_path / "run"),
                 state_dir=str(tmp_path / "state"), issue=str(tmp_path / "run" / "issue"),
                 consoles=(str(tmp_path / "console"),), group=None)


def no_interface_expected():
    raise AssertionError("the operator's file is there: no interface is needed")


def test_a_valid_file_is_what_the_services_get_and_becomes_the_last_good_one(tmp_path):
    paths = paths_in(tmp_path)
    open(paths.operator, "w").write(GOOD)
    outcome = prepare(paths, no_interface_expected)
    assert outcome.code == 0
    assert open(paths.effective).read() == GOOD
    assert open(paths.last_good).read() == GOOD
    assert any("http://192.0.2.10:8080/" in line for line in outcome.lines)
    assert not os.path.exists(paths.bird_conf) and not os.path.exists(paths.nats_conf)


def test_bgp_and_a_cluster_give_bird_and_nats_their_configs(tmp_path):
    paths = paths_in(tmp_path)
    open(paths.operator, "w").write(BGP)
    assert prepare(paths, no_interface_expected).code == 0
    assert "router id 192.0.2.10;" in open(paths.bird_conf).read()
    # bird.service reads the control socket's path from here (its EnvironmentFile).
    assert open(paths.bird_env).read() == "BIRD_CONTROL_SOCKET=/run/bird/bird.ctl\n"
    nats = open(paths.nats_conf).read()
    assert 'host: "192.0.2.10"\nport: 4222\n' in nats
    assert "cluster {" not in nats  # no backbone, no peers to route to: a cluster of one
    # Dropping [bgp] and [cluster] later stops both again.
    open(paths.operator, "w").write(GOOD)
    assert prepare(paths, no_interface_expected).code == 0
    assert not os.path.exists(paths.bird_conf) and not os.path.exists(paths.nats_conf)


def test_a_clustered_box_renders_its_nats_server_from_the_file_alone(tmp_path):
    paths = paths_in(tmp_path)
    open(paths.operator, "w").write(CLUSTER)
    assert prepare(paths, no_interface_expected).code == 0
    nats = open(paths.nats_conf).read()
    # Clients on the first URL's address (the box's overlay address), JetStream in the unit's state directory.
    assert 'server_name: "box-1"\nhost: "192.0.2.129"\nport: 4222\n' in nats
    assert 'jetstream {\n  store_dir: "/var/lib/nats"\n}' in nats
    assert f'authorization {{\n  token: "{client_token(SECRET)}"\n}}' in nats
    # Routes on the overlay address, port 6222, to every peer's, with the password every box derives alike.
    assert 'cluster {\n  name: "edgecall"\n  host: "192.0.2.129"\n  port: 6222\n' in nats
    password = route_password(SECRET)
    assert f'    user: "edgecall"\n    password: "{password}"\n' in nats
    assert re.findall(r'"nats-route://([^"]*)"', nats) == [
        f"edgecall:{password}@192.0.2.130:6222", f"edgecall:{password}@192.0.2.131:6222"]
    # Derived credentials only, readable by root only (the unit gets it as a credential).
    assert SECRET not in nats
    assert stat.S_IMODE(os.stat(paths.nats_conf).st_mode) == 0o600
    # A box that leaves the cluster runs no NATS server.
    open(paths.operator, "w").write(CLUSTER.replace("[cluster]\nnats", "[cluster]\n# nats"))
    assert prepare(paths, no_interface_expected).code == 0
    assert not os.path.exists(paths.nats_conf)


def test_nats_listens_on_an_ipv6_or_loopback_first_url_with_nats_default_port(tmp_path):
    paths = paths_in(tmp_path)
    for url, listen in (("nats://[::1]", 'host: "::1"\nport: 4222\n'),
                        ("nats://127.0.0.1:14222", 'host: "127.0.0.1"\nport: 14222\n')):
        open(paths.operator, "w").write(GOOD + f'\n[cluster]\nnats = ["{url}"]\nsecret = "{SECRET}"\n')
        assert prepare(paths, no_interface_expected).code == 0
        assert listen in open(paths.nats_conf).read()


def test_a_nats_url_without_a_host_or_a_good_port_is_refused(tmp_path):
    paths = paths_in(tmp_path)
    open(paths.operator, "w").write(GOOD + f'\n[cluster]\nnats = ["nats://192.0.2.10:4222", "nats://:4222", '
                                           f'"nats://192.0.2.11:70000"]\nsecret = "{SECRET}"\n')
    outcome = prepare(paths, no_interface_expected)
    assert outcome.code == 2
    text = "\n".join(outcome.lines)
    assert "cluster.nats[0]" not in text
    assert "cluster.nats[1]: expected a host and, optionally, a port (nats://HOST:PORT), found 'nats://:4222'" in text
    assert "cluster.nats[2]: expected a host" in text
    assert not os.path.exists(paths.nats_conf)


def test_a_broken_file_starts_nothing_and_keeps_the_last_good_one(tmp_path):
    paths = paths_in(tmp_path)
    open(paths.operator, "w").write(BGP)
    assert prepare(paths, no_interface_expected).code == 0
    open(paths.operator, "w").write(BROKEN)
    outcome = prepare(paths, no_interface_expected)
    assert outcome.code == 2
    text = "\n".join(outcome.lines)
    assert f"{paths.operator}:2: api.listen:" in text
    assert f"kept in {paths.last_good}" in text
    assert open(paths.last_good).read() == BGP
    for path in (paths.effective, paths.bird_conf, paths.bird_env, paths.nats_conf):
        assert not os.path.exists(path)


def test_a_broken_file_on_a_new_box_says_there_is_no_last_good_one(tmp_path):
    paths = paths_in(tmp_path)
    open(paths.operator, "w").write("[api\n")
    outcome = prepare(paths, no_interface_expected)
    assert outcome.code == 2
    assert "There is no last good configuration on this box yet." in outcome.lines
    assert not os.path.exists(paths.last_good)


def test_no_file_serves_the_first_boot_default_on_the_first_interface(tmp_path):
    paths = paths_in(tmp_path)
    found = FirstInterface("ens3", ipaddress.IPv4Address("10.0.2.15"))
    outcome = prepare(paths, lambda: found)
    assert outcome.code == 0
    config = load_config(paths.effective)
    assert str(config.api.listen) == "10.0.2.15:8080"
    assert [str(e) for e in config.sfu.udp] == ["10.0.2.15:3479"]
    assert str(config.turn.relay_address) == "10.0.2.15"
    text = "\n".join(outcome.lines)
    assert "on ens3 (DHCP address 10.0.2.15)" in text and "http://10.0.2.15:8080/" in text
    assert f"secret {config.apps[0].secret!r}" in text
    assert "labelled EDGECALL" in text
    assert not os.path.exists(paths.last_good)
    # The secrets are made once: the next boot, on another address, keeps them.
    moved = FirstInterface("ens3", ipaddress.IPv4Address("10.0.2.16"))
    assert prepare(paths, lambda: moved).code == 0
    again = load_config(paths.effective)
    assert str(again.api.listen) == "10.0.2.16:8080"
    assert again.apps[0].secret == config.apps[0].secret
    assert tomllib.loads(open(paths.effective).read())["turn"]["secrets"] == list(config.turn.secrets)


def test_no_file_and_no_address_starts_nothing(tmp_path):
    paths = paths_in(tmp_path)
    outcome = prepare(paths, lambda: FirstInterface("ens3", None), address_timeout=0)
    assert outcome.code == 1
    assert "no DHCP address on its first interface ens3" in outcome.lines[1]
    assert not os.path.exists(paths.effective)


def test_announce_writes_every_console_and_the_login_banner(tmp_path):
    paths = paths_in(tmp_path)
    open(paths.operator, "w").write(BROKEN)
    outcome = prepare(paths, no_interface_expected)
    announce(paths, outcome)
    assert "does not validate" in open(paths.consoles[0]).read()
    issue = open(paths.issue).read()
    assert issue.startswith("Debian GNU/Linux 12 \\n \\l\n")
    assert "api.listen" in issue


def test_first_interface_is_the_lowest_numbered_ethernet_device(tmp_path):
    # A sysfs-shaped tree: a bridge (no device), and two NICs; indexes no real link has.
    for name, kind, index, device in (("br0", 1, 900001, False), ("ens4", 1, 900003, True),
                                      ("ens3", 1, 900002, True), ("wg0", 65534, 900000, True)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "type").write_text(f"{kind}\n")
        (tmp_path / name / "ifindex").write_text(f"{index}\n")
        if device:
            (tmp_path / name / "device").mkdir()
    assert first_interface(str(tmp_path)) == FirstInterface("ens3", None)


def test_a_reload_stages_the_edited_file_only_when_it_validates(tmp_path):
    paths = paths_in(tmp_path)
    open(paths.operator, "w").write(GOOD)
    assert prepare(paths, no_interface_expected).code == 0
    open(paths.operator, "w").write(GOOD.replace("[api]", "[api]\nbogus = 1", 1) if "[api]" in GOOD else GOOD + "\nbogus = 1\n")
    refused = stage(paths)
    assert refused.code != 0 and "bogus" in "\n".join(refused.lines)
    assert open(paths.effective).read() == GOOD  # the running box's file is untouched
    edited = GOOD + "\n# edited\n"
    open(paths.operator, "w").write(edited)
    assert stage(paths).code == 0
    assert open(paths.effective).read() == edited and open(paths.last_good).read() == edited
