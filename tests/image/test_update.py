"""A/B updates of the firmware image in QEMU: a bundle signed with another key is refused and nothing
is written; a version whose service fails comes back to the previous one by itself; a good version is
kept once healthy. One disk through BIOS boots (the rollback) and then UEFI boots (the update kept), so
that GRUB's environment block is written by both loaders. On the way: the state partition grows to
the end of the disk, and a second port that [[net.uplinks]] configures never asks DHCP.

The second and third versions are made here from the build's bundle, not by another mmdebstrap: its
root file system unpacked, the version file changed (and for the failing one, appliance.service given
a command that exits 1), packed again and signed with the build's key. The guest fetches bundles over
a guestfwd address whose connections QEMU hands to http_once.py: restrict=on stays, no host port opens.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.update.bundle import (INITRD, KERNEL, MANIFEST, ROOT, load_private_key, parse_manifest, public_pem,
                                     write_bundle)

from .guest import SECOND_PORT, Guest, write_config_partition
from .test_image import BOOT_TIMEOUT, GOOD, REPO, SETTLE_TIMEOUT, healthy, image_path, record, stale, startup

pytestmark = pytest.mark.slow

SERVER = ("10.0.2.100", 80)  # the guestfwd address the guest fetches bundles from
GROWTH = 512 << 20  # the disk is this much larger than the image: the state partition takes it
ROLLBACK_TIMEOUT = 900  # two boots and an update under TCG
BROKEN_UNIT = "[Service]\nExecStart=\nExecStart=/bin/false\n"
# After the first boot: the first port serves on its DHCP address (GOOD), the second is configured statically.
CONFIG = GOOD + f'\n[[net.uplinks]]\ninterface = "{SECOND_PORT}"\naddresses = ["192.0.2.10/24"]\n'


def signing_key() -> Path:
    return Path(os.environ.get("EDGECALL_SIGNING_KEY") or REPO / "build" / "update-signing-dev.pem")


@pytest.fixture(scope="module")
def built() -> tuple[Path, Path]:
    """The image and its bundle, built by `./build.sh image` unless both are newer than their sources."""
    image = image_path()
    bundle = image.with_suffix(".update")
    if stale(image) or not bundle.exists():
        if os.geteuid() != 0:
            pytest.skip("building the image needs root (mmdebstrap); run ./build.sh image as root first")
        subprocess.run(["./build.sh", "image"], cwd=REPO, check=True, timeout=45 * 60)
    return image, bundle


@pytest.fixture(scope="module")
def bundles(built, tmp_path_factory) -> Iterator[dict[str, Path]]:
    """v2, v2 whose service fails, and v2 signed with a key the image does not trust (removed after)."""
    work = tmp_path_factory.mktemp("bundles")
    try:
        yield make_bundles(built[1], work)
    finally:
        shutil.rmtree(work)


def make_bundles(bundle: Path, work: Path) -> dict[str, Path]:
    with tarfile.open(bundle) as archive:
        for name in (KERNEL, INITRD, ROOT):
            (work / name).write_bytes(archive.extractfile(name).read())
    tree = work / "root"
    subprocess.run(["unsquashfs", "-quiet", "-no-progress", "-d", str(tree), str(work / ROOT)], check=True)
    key = load_private_key(str(signing_key()))
    if (tree / "usr/lib/edgecall/update.pub").read_bytes() != public_pem(key):
        pytest.skip(f"the image trusts another key than {signing_key()} (set EDGECALL_SIGNING_KEY to the build's)")
    version = (tree / "usr/lib/edgecall/version").read_text().strip()
    signers = {"v2": [("v2", key), ("v2-other-key", Ed25519PrivateKey.generate())], "broken": [("broken", key)]}
    out = {}
    for name, changes in (("v2", {}), ("broken", {"etc/systemd/system/appliance.service.d/broken.conf": BROKEN_UNIT})):
        (tree / "usr/lib/edgecall/version").write_text(f"{version}+{name}\n")
        for path, text in changes.items():
            (tree / path).parent.mkdir(parents=True, exist_ok=True)
            (tree / path).write_text(text)
        squashfs = work / f"{name}.squashfs"
        # A fast compression level: the kernel reads any, and the test pays for this one.
        subprocess.run(["mksquashfs", str(tree), str(squashfs), "-quiet", "-no-progress", "-noappend",
                        "-comp", "zstd", "-Xcompression-level", "3"], check=True)
        parts = {KERNEL: str(work / KERNEL), INITRD: str(work / INITRD), ROOT: str(squashfs)}
        for bundle_name, signer in signers[name]:
            with open(work / f"{bundle_name}.update", "wb") as f:
                write_bundle(f, f"{version}+{name}", parts, signer)
            out[bundle_name] = work / f"{bundle_name}.update"
        squashfs.unlink()
    shutil.rmtree(tree)
    return out


def url(bundle: Path) -> str:
    return f"http://{SERVER[0]}/{bundle.name}"


def slot_fingerprint(guest: Guest) -> str:
    """What an update would change: slot B's first 16 MiB, the ESP's files, GRUB's block, the record."""
    done = guest.ssh("head -c 16M /dev/disk/by-partlabel/root-b | sha256sum; sha256sum /boot/grub/grubenv; "
                     "ls -l --time-style=+%s /boot; cat /var/lib/edgecall-update/record.json 2>/dev/null; true")
    assert done.returncode == 0, done.stderr
    return done.stdout


def update_status(guest: Guest) -> str:
    """`appliance update --status`, or "" while the guest does not answer (it reboots)."""
    try:
        done = guest.ssh("appliance update --status", timeout=30)
    except subprocess.TimeoutExpired:
        return ""
    return done.stdout if done.returncode == 0 else ""


def slot_b_marked_good(guest: Guest) -> bool:
    lines = update_status(guest).splitlines()
    return len(lines) > 1 and lines[1].endswith("marked good")


@pytest.fixture
def disk(built, tmp_path) -> Iterator[Path]:
    """A copy of the image on a disk GROWTH larger than it (the state partition takes that), removed after."""
    copy = tmp_path / built[0].name
    subprocess.run(["cp", "--sparse=always", str(built[0]), str(copy)], check=True)
    os.truncate(copy, copy.stat().st_size + GROWTH)
    yield copy
    copy.unlink()


def test_a_failing_version_rolls_back_by_itself_and_a_good_one_is_kept(built, bundles, disk, tmp_path):
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "image-test", "-f", str(key)], check=True)
    write_config_partition(disk, {"appliance.toml": GOOD, "authorized_keys": key.with_suffix(".pub").read_text()})
    with tarfile.open(built[1]) as archive:
        version = parse_manifest(archive.extractfile(MANIFEST).read()).version
    started = time.monotonic()
    server = f"{sys.executable} {Path(__file__).with_name('http_once.py')} {bundles['v2'].parent}"
    bios = Guest(disk, tmp_path, uefi=False, ssh_key=key, reboots=True, guestfwd=(*SERVER, server), second_port=True)
    try:
        bios.start()
        bios.wait_for("/healthz answering 200", lambda: healthy(bios.api_port), BOOT_TIMEOUT, every=0.5)
        record(f"BIOS boot to healthy: {time.monotonic() - bios.started:.0f} s (TCG)")
        bios.wait_for("ssh", bios.ssh_ready, SETTLE_TIMEOUT)
        record("BIOS " + startup(bios))
        status = update_status(bios).splitlines()
        assert status[0].split() == ["slot", "a:", version, "booted,", "marked", "good"], status
        assert status[1].split() == ["slot", "b:", "empty"], status
        # The state partition took the disk's free space on the first boot, and /var's file system with it.
        size = int(bios.ssh("findmnt -bno SIZE /var").stdout)
        assert size > GROWTH, size

        before = slot_fingerprint(bios)
        refused = bios.ssh(f"appliance update {url(bundles['v2-other-key'])}", timeout=600)
        assert refused.returncode == 1
        assert "is not signed with this box's update key (/usr/lib/edgecall/update.pub): refusing it; " \
               "nothing was written" in refused.stderr
        assert slot_fingerprint(bios) == before
        # The operator configures the second port, for the boots to come.
        assert bios.ssh("cat > /etc/appliance/appliance.toml", stdin=CONFIG).returncode == 0

        # Drains, writes slot B, reboots into it once; its service fails; the box goes back to slot A.
        updating = bios.ssh(f"appliance update {url(bundles['broken'])}", timeout=900)
        assert f"slot b holds {version}+broken" in updating.stdout, updating.stdout + updating.stderr
        assert "draining: the health agent withdraws the anycast prefixes" in updating.stdout
        bios.wait_for("the box back on slot A, saying why",
                      lambda: "rolled back to" in update_status(bios), ROLLBACK_TIMEOUT, every=5)
        status = update_status(bios).splitlines()
        assert status[0].split() == ["slot", "a:", version, "booted,", "marked", "good"], status
        assert status[1].split() == ["slot", "b:", f"{version}+broken"], status
        assert (f"{version}+broken (slot b) failed to become healthy (appliance.service failed): "
                f"rolled back to {version} (slot a)") in status[2]
        # The journal of every boot (-D: each boot has a machine ID of its own, the root file system being
        # read-only, and journalctl alone reads the running one's).
        journal = "journalctl -D /var/log/journal"
        boots = bios.ssh(f"{journal} --list-boots | grep -cE '^ *-?[0-9]+ [0-9a-f]{{32}} '").stdout.strip()
        assert boots == "3", "v1, the failing version, v1 again"
        drained = bios.ssh(f"{journal} -b -2 -u appliance.service -o cat | grep draining").stdout
        assert "appliance drain" in drained
        # Since the boot that first named it, networkd has left the second port to `net apply` from its start.
        ports = bios.ssh("networkctl list --no-legend").stdout
        assert any(line.split()[1:2] == [SECOND_PORT] and "unmanaged" in line for line in ports.splitlines()), ports
        assert "inet 192.0.2.10/24" in bios.ssh(f"ip -4 addr show {SECOND_PORT}").stdout
        asked = bios.ssh(f"journalctl -b -u systemd-networkd -o cat | grep -i '{SECOND_PORT}.*dhcp'").stdout
        assert asked == "", asked

        armed = bios.ssh(f"appliance update --no-reboot {url(bundles['v2'])}", timeout=600)
        assert armed.returncode == 0 and f"slot b holds {version}+v2" in armed.stdout, armed.stdout + armed.stderr
        assert update_status(bios).splitlines()[1].split() == ["slot", "b:", f"{version}+v2", "tried", "once",
                                                               "at", "the", "next", "boot"]
        bios.ssh("systemctl poweroff")
        bios.wait_stopped(SETTLE_TIMEOUT)
    finally:
        bios.stop()

    uefi = Guest(disk, tmp_path, uefi=True, ssh_key=key, second_port=True)
    try:
        uefi.start()
        uefi.wait_for("/healthz answering 200", lambda: healthy(uefi.api_port), BOOT_TIMEOUT, every=0.5)
        record(f"UEFI boot to healthy, new slot on trial: {time.monotonic() - uefi.started:.0f} s (TCG)")
        uefi.wait_for("ssh", uefi.ssh_ready, SETTLE_TIMEOUT)
        uefi.wait_for("slot B marked good", lambda: slot_b_marked_good(uefi), SETTLE_TIMEOUT)
        status = update_status(uefi).splitlines()
        assert status[0].split() == ["slot", "a:", version], status
        assert status[1].split() == ["slot", "b:", f"{version}+v2", "booted,", "marked", "good"], status
        assert f"{version}+v2 (slot b) healthy" in status[2] and status[2].endswith("after boot: marked good")
        # Updates never touch the operator's partition or the state partition's data.
        assert uefi.ssh("cat /etc/appliance/appliance.toml").stdout == CONFIG
        assert uefi.ssh("cat /var/lib/appliance/last-good.toml").stdout == CONFIG
        assert uefi.ssh("cat /usr/lib/edgecall/version").stdout.strip() == f"{version}+v2"
    finally:
        uefi.stop()
    record(f"update test (BIOS rollback, UEFI update kept): {time.monotonic() - started:.0f} s")
