"""The boot step keeps networkd's DHCP off the interfaces `[[net.uplinks]]` configures statically."""
from __future__ import annotations

import ipaddress
import os
from pathlib import Path

import pytest

from appliance.boot import Paths, prepare
from appliance.boot.interfaces import FirstInterface
from appliance.boot.networkd import FILE_NAME
from appliance.config import parse_config

BASE = """
[api]
listen = "192.0.2.10:8080"

[sfu]
udp = "192.0.2.10:3479"

[turn]
listen = ["udp://192.0.2.10:3478"]
relay_address = "192.0.2.10"
secrets = ["s"]
"""
UPLINKS = BASE + """
[[net.uplinks]]
interface = "eth1"
addresses = ["192.0.2.10/24"]

[[net.uplinks]]
interface = "enp3s0"
addresses = ["198.51.100.10/24"]
"""


def paths_in(tmp_path) -> Paths:
    (tmp_path / "etc").mkdir()
    return Paths(operator=str(tmp_path / "etc" / "appliance.toml"), run_dir=str(tmp_path / "run"),
                 state_dir=str(tmp_path / "state"), issue=str(tmp_path / "run" / "issue"),
                 consoles=(str(tmp_path / "console"),), group=None, networkd_dir=str(tmp_path / "network"))


def test_uplinks_are_left_to_net_apply_and_networkd_rereads_only_when_that_changes(tmp_path):
    paths = paths_in(tmp_path)
    reloads = []
    network_file = os.path.join(paths.networkd_dir, FILE_NAME)
    open(paths.operator, "w").write(UPLINKS)
    outcome = prepare(paths, reload_network=lambda: reloads.append(1))
    assert outcome.code == 0 and reloads == [1]
    text = open(network_file).read()
    assert "[Match]\nName=enp3s0 eth1\n\n[Link]\nUnmanaged=yes\n" in text
    assert "  DHCP off on enp3s0, eth1: [[net.uplinks]] configures them" in outcome.lines
    # The catch-all DHCP file is 80-edgecall-dhcp.network: networkd takes the first file that matches.
    assert FILE_NAME < "80-edgecall-dhcp.network"
    prepare(paths, reload_network=lambda: reloads.append(1))
    assert reloads == [1]
    # Without uplinks every port may ask DHCP again.
    open(paths.operator, "w").write(BASE)
    outcome = prepare(paths, reload_network=lambda: reloads.append(1))
    assert not os.path.exists(network_file) and reloads == [1, 1]
    assert "  DHCP on every Ethernet port again" in outcome.lines


def test_a_box_without_uplinks_writes_nothing_and_reloads_nothing(tmp_path):
    paths = paths_in(tmp_path)

    def no_reload():
        raise AssertionError("nothing changed for networkd")

    open(paths.operator, "w").write(BASE)
    assert prepare(paths, reload_network=no_reload).code == 0
    os.unlink(paths.operator)
    first = FirstInterface("eth0", ipaddress.IPv4Address("10.0.2.15"))
    assert prepare(paths, lambda: first, reload_network=no_reload).code == 0
    assert not os.path.exists(paths.networkd_dir)


def test_a_reload_that_fails_is_said_and_the_file_stays_for_the_next_boot(tmp_path):
    paths = paths_in(tmp_path)

    def no_networkd():
        raise FileNotFoundError(2, "No such file or directory", "networkctl")

    open(paths.operator, "w").write(UPLINKS)
    outcome = prepare(paths, reload_network=no_networkd)
    assert outcome.code == 0
    assert any("networkd was not told about the static interfaces" in line for line in outcome.lines)
    assert os.path.exists(os.path.join(paths.networkd_dir, FILE_NAME))


@pytest.mark.parametrize("extra", ["", UPLINKS.removeprefix(BASE), '[anycast]\nprefixes = ["203.0.113.10/32"]\n',
                                   '[[net.routes]]\nto = "0.0.0.0/0"\nvia = "192.0.2.1"\n'])
def test_net_apply_runs_at_boot_exactly_when_it_has_something_to_make(tmp_path, extra):
    from netconfig.netstate import wanted

    paths = paths_in(tmp_path)
    open(paths.operator, "w").write(BASE + extra)
    assert prepare(paths, reload_network=lambda: None).code == 0
    assert os.path.exists(paths.net_wanted) == bool(wanted(parse_config(BASE + extra, "test.toml")))
    unit = (Path(__file__).parents[2] / "systemd" / "appliance-net.service").read_text().splitlines()
    assert f"ConditionPathExists=|{paths.net_wanted}".replace(paths.run_dir, Paths().run_dir) in unit
    assert f"ConditionPathExists=|{parse_config(BASE, 't').net.state_file}" in unit


def test_the_image_lets_networkd_read_the_file_from_its_start():
    image = Path(__file__).parents[2] / "image" / "overlay"
    where = os.path.join(Paths().networkd_dir, FILE_NAME)
    assert os.readlink(image / "etc/systemd/network" / FILE_NAME) == where
    drop_in = (image / "etc/systemd/system/systemd-networkd.service.d/edgecall.conf").read_text().splitlines()
    assert f"RequiresMountsFor={Paths().networkd_dir}" in drop_in
    assert f"d {Paths().networkd_dir} 0755 root root -" in (image / "usr/lib/tmpfiles.d/edgecall.conf").read_text()
    unit = (Path(__file__).parents[2] / "systemd" / "appliance-config.service").read_text().splitlines()
    assert f"ReadWritePaths={Paths().networkd_dir}" in unit
