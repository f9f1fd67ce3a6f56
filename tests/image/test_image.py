"""The firmware image boots in QEMU and serves; with a broken configuration it says why and serves nothing.

Both boots use one copy of the image, as an operator's box would: the first from UEFI (OVMF) with a
good appliance.toml on the EDGECALL partition, the second from legacy BIOS after the file was broken.
The built image is reused while no file it is made from changed since (`./build.sh image` otherwise).
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from .guest import Guest, write_config_partition

pytestmark = pytest.mark.slow

REPO = Path(__file__).parents[2]
SOURCES = ["image", "systemd", "appliance", "netconfig", "pyproject.toml", "build.sh"]
APP, SECRET = "imagetest", "image-test-secret"
# 10.0.2.15: the address QEMU's user network gives its first DHCP client.
GOOD = f"""\
[node]
id = "image-test"

[api]
listen = "10.0.2.15:8080"

[[apps]]
id = "{APP}"
secret = "{SECRET}"

[sfu]
udp = "10.0.2.15:3479"

[turn]
listen = ["udp://10.0.2.15:3478", "tcp://10.0.2.15:3478"]
relay_address = "10.0.2.15"
secrets = ["image-test-turn-secret"]
"""
BROKEN = GOOD.replace('listen = "10.0.2.15:8080"', 'listen = "10.0.2.15:80800"')
BOOT_TIMEOUT = 900  # software emulation on 2 shared cores: minutes, not seconds
SETTLE_TIMEOUT = 300


def image_path() -> Path:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    return REPO / "build" / f"edgecall-{version}.img"


def stale(image: Path) -> bool:
    if not image.exists():
        return True
    files = subprocess.run(["git", "ls-files", *SOURCES], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    newest = max((REPO / f).stat().st_mtime for f in files if (REPO / f).exists())
    return newest > image.stat().st_mtime


@pytest.fixture(scope="module")
def disk(tmp_path_factory) -> Path:
    image = image_path()
    if stale(image):
        if os.geteuid() != 0:
            pytest.skip("building the image needs root (mmdebstrap); run ./build.sh image as root first")
        subprocess.run(["./build.sh", "image"], cwd=REPO, check=True, timeout=45 * 60)
    copy = tmp_path_factory.mktemp("image") / image.name
    subprocess.run(["cp", "--sparse=always", str(image), str(copy)], check=True)
    return copy


@pytest.fixture(scope="module")
def ssh_key(disk) -> Path:
    key = disk.parent / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "image-test", "-f", str(key)], check=True)
    return key


def http(port: int, method: str, path: str, body: bytes | None = None, token: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def healthy(port: int) -> bool:
    try:
        return http(port, "GET", "/healthz")[0] == 200
    except (OSError, ValueError):
        return False


# Run by the image's own Python inside the guest (see guest.py on UDP and restrict=on), with this
# project's STUN codec: a Binding request to the media port, and what came back.
STUN_BINDING = """
import socket
from appliance.stun import Message, Method, Class
request = Message(Method.BINDING, Class.REQUEST)
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
    sock.settimeout(5)
    sock.sendto(request.encode(), ("10.0.2.15", 3479))
    answer = Message.parse(sock.recv(2048))
same = answer.transaction_id == request.transaction_id
print("answered" if same and answer.method == Method.BINDING and answer.message_class == Class.SUCCESS else answer)
"""


def record(line: str) -> None:
    """The figures the issue note quotes, beside the image."""
    with open(REPO / "build" / "image-boot.txt", "a") as f:
        f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
    print(line)


def startup(guest: Guest) -> str:
    """systemd-analyze's line: how long the kernel and the userspace took, as systemd counts them."""
    done = guest.ssh("systemd-analyze")
    return ((done.stdout or done.stderr).strip().splitlines() or ["(systemd-analyze said nothing)"])[0]


def test_the_image_boots_from_uefi_and_serves(disk, ssh_key):
    write_config_partition(disk, {"appliance.toml": GOOD, "authorized_keys": ssh_key.with_suffix(".pub").read_text()})
    guest = Guest(disk, disk.parent, uefi=True, ssh_key=ssh_key)
    try:
        guest.start()
        guest.wait_for("/healthz answering 200", lambda: healthy(guest.api_port), BOOT_TIMEOUT, every=0.5)
        record(f"UEFI boot to healthy: {time.monotonic() - guest.started:.0f} s (TCG)")

        status, body = http(guest.api_port, "POST", f"/v1/apps/{APP}/sessions/new", b"{}", SECRET)
        assert status == 201, body
        assert json.loads(body)["sessionId"]
        assert http(guest.api_port, "POST", f"/v1/apps/{APP}/sessions/new", b"{}", "wrong")[0] == 401

        guest.wait_for("ssh with the key from the EDGECALL partition", guest.ssh_ready, SETTLE_TIMEOUT)
        record("UEFI " + startup(guest))
        stun = guest.ssh("/opt/edgecall/bin/python -", stdin=STUN_BINDING)
        assert stun.stdout.strip() == "answered", stun.stdout + stun.stderr
        state = guest.ssh("systemctl is-system-running --wait", timeout=SETTLE_TIMEOUT)
        failed = guest.ssh("systemctl --failed --no-legend").stdout
        assert state.stdout.strip() == "running", f"{state.stdout}{state.stderr}\nfailed units:\n{failed}"
        options = guest.ssh("findmnt -no OPTIONS /").stdout.split(",")
        assert "ro" in options
        assert guest.ssh("touch /usr/probe").returncode != 0
        assert guest.ssh("findmnt -no FSTYPE /etc/appliance").stdout.strip() == "vfat"
        # Room for the media listener's 4 MiB receive buffer, which the service cannot force.
        assert guest.ssh("cat /proc/sys/net/core/rmem_max").stdout.strip() == "4194304"

        screen = guest.ssh("appliance status")
        assert screen.returncode == 0, screen.stdout + screen.stderr
        assert "node image-test: serving" in screen.stdout
        # The config leaves [sfu]/[turn] workers at their default: one per core, two in this guest,
        # sharing a nats-server of their own (the image's hardened service runs them all).
        assert "worker 0 (image-test-w0" in screen.stdout and "worker 1 (image-test-w1" in screen.stdout, screen.stdout
        assert screen.stdout.count(": ready, restarted 0 times") == 2, screen.stdout
        console = guest.console()
        assert "Serving with /etc/appliance/appliance.toml" in console
        assert "API: http://10.0.2.15:8080/" in console
    finally:
        guest.stop()


def test_a_broken_config_is_reported_on_the_serial_console_and_nothing_serves(disk, ssh_key):
    write_config_partition(disk, {"appliance.toml": BROKEN, "authorized_keys": ssh_key.with_suffix(".pub").read_text()})
    guest = Guest(disk, disk.parent, uefi=False, ssh_key=ssh_key)
    try:
        guest.start()
        guest.wait_for("the configuration error on the serial console",
                       lambda: "/etc/appliance/appliance.toml:5: api.listen:" in guest.console(), BOOT_TIMEOUT)
        console = guest.console()
        assert "does not validate, so the services are not started" in console
        guest.wait_for("ssh with the key from the EDGECALL partition", guest.ssh_ready, SETTLE_TIMEOUT)
        guest.ssh("systemctl is-system-running --wait", timeout=SETTLE_TIMEOUT)
        listening = guest.ssh("ss -Hlntu").stdout
        for port in (8080, 3479, 3478):
            assert f":{port} " not in listening, listening
        assert guest.ssh("systemctl is-active appliance.service").stdout.strip() != "active"
        assert not healthy(guest.api_port)
        last_good = guest.ssh("cat /var/lib/appliance/last-good.toml")
        if last_good.returncode == 0:  # the UEFI boot ran first on this disk
            assert last_good.stdout == GOOD
            assert "The last good configuration is kept in /var/lib/appliance/last-good.toml" in console
        else:
            assert "There is no last good configuration on this box yet." in console
    finally:
        guest.stop()
