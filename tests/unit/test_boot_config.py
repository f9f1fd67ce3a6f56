"""The image's boot step: which configuration the services get, and what the console says."""
from __future__ import annotations

import ipaddress
import os
import tomllib

from appliance.boot import Paths, announce, prepare
from appliance.boot.interfaces import FirstInterface, first_interface
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
nats = ["nats://192.0.2.20:4222"]
secret = "a-cluster-secret-of-some-length"
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
    assert not os.path.exists(paths.bird_conf) and not os.path.exists(paths.nats_flag)


def test_bgp_and_a_cluster_give_bird_its_config_and_start_nats(tmp_path):
    paths = paths_in(tmp_path)
    open(paths.operator, "w").write(BGP)
    assert prepare(paths, no_interface_expected).code == 0
    assert "router id 192.0.2.10;" in open(paths.bird_conf).read()
    assert open(paths.nats_flag).read() == "nats://192.0.2.20:4222\n"
    # Dropping [bgp] and [cluster] later stops both again.
    open(paths.operator, "w").write(GOOD)
    assert prepare(paths, no_interface_expected).code == 0
    assert not os.path.exists(paths.bird_conf) and not os.path.exists(paths.nats_flag)


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
    for path in (paths.effective, paths.bird_conf, paths.nats_flag):
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
