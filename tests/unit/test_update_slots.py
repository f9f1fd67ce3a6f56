"""`appliance update` and the boot-time health check on a box laid out in files: two slot "partitions"
of fixed size, an ESP directory with GRUB's environment block, the state directory. What GRUB does
between boots (boot edgecall_try once, clearing it) is played by `grub_boots`, as image/grub/grub.cfg
does it; the image test runs the real GRUB."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.update import grubenv, lifecycle, store
from appliance.update.bundle import INITRD, KERNEL, ROOT, public_pem, write_bundle
from appliance.update.command import status
from appliance.update.confirm import confirm
from appliance.update.health import Health
from appliance.update.install import UpdateError, install
from appliance.update.layout import Layout

SLOT_SIZE = 1 << 20
KEY = Ed25519PrivateKey.generate()
V1, V2 = "1.0.0", "2.0.0"


@pytest.fixture
def box(tmp_path) -> Layout:
    """A box running V1 from slot A, marked good, slot B empty."""
    layout = Layout(partitions=str(tmp_path / "dev"), esp=str(tmp_path / "esp"),
                    release=str(tmp_path / "version"), public_key=str(tmp_path / "update.pub"),
                    state_dir=str(tmp_path / "state"), cmdline=str(tmp_path / "cmdline"))
    (tmp_path / "dev").mkdir()
    for slot in "ab":
        with open(layout.partition(slot), "wb") as f:
            f.truncate(SLOT_SIZE)
    (tmp_path / "esp" / "grub").mkdir(parents=True)
    (tmp_path / "esp" / "grub" / "grubenv").write_bytes(grubenv.render({lifecycle.GOOD: "a"}))
    for path in (layout.kernel("a"), layout.initrd("a")):
        Path(path).write_bytes(b"slot a's boot file")
    Path(layout.public_key).write_bytes(public_pem(KEY))
    boot(layout, "a", V1)
    return layout


def boot(layout: Layout, slot: str, version: str) -> None:
    Path(layout.cmdline).write_text(f"root=PARTLABEL=root-{slot} ro edgecall.slot={slot} quiet\n")
    Path(layout.release).write_text(version + "\n")


def grub_boots(layout: Layout, versions: dict[str, str]) -> str:
    """What grub.cfg does: the slot to try once if armed (clearing it), else the good one."""
    env = grubenv.read(layout.grubenv)
    slot = env.get(lifecycle.TRY) or lifecycle.good_slot(env)
    grubenv.update(layout.grubenv, {lifecycle.TRY: ""})
    boot(layout, slot, versions[slot])
    return slot


def bundle(tmp_path: Path, version: str, key=KEY, root: bytes = b"root " * 1000) -> str:
    parts = {KERNEL: b"kernel " + version.encode(), INITRD: b"initrd " + version.encode(), ROOT: root}
    for name, data in parts.items():
        (tmp_path / name).write_bytes(data)
    path = tmp_path / f"edgecall-{version}.update"
    with open(path, "wb") as out:
        write_bundle(out, version, {name: str(tmp_path / name) for name in parts}, key)
    return str(path)


def snapshot(layout: Layout) -> dict[str, str]:
    """Every file of the box's disks and state, by content."""
    roots = (layout.partitions, layout.esp, layout.state_dir)
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for root in roots if os.path.isdir(root) for p in sorted(Path(root).rglob("*")) if p.is_file()}


def healthy() -> Health:
    return Health(True, "healthy")


def reboot_not_expected() -> None:
    raise AssertionError("no reboot expected")


def test_an_update_writes_the_other_slot_and_arms_one_boot_into_it(box, tmp_path):
    done = install(bundle(tmp_path, V2), box, say=lambda line: None)
    assert (done.slot, done.version, done.running) == ("b", V2, "a")
    assert open(box.partition("b"), "rb").read(5000) == b"root " * 1000
    assert os.path.getsize(box.partition("b")) == SLOT_SIZE  # a partition keeps its size
    assert Path(box.kernel("b")).read_bytes() == b"kernel 2.0.0" and Path(box.kernel("a")).read_bytes() == b"slot a's boot file"
    assert grubenv.read(box.grubenv) == {lifecycle.GOOD: "a", lifecycle.TRY: "b"}
    assert os.path.exists(box.pending)
    assert status(box) == [f"slot a: {V1:<24} booted, marked good", f"slot b: {V2:<24} tried once at the next boot",
                           status(box)[-1]]
    assert "wrote 2.0.0 to slot b: the next boot tries it once" in status(box)[-1]


def test_the_new_slot_is_marked_good_once_healthy(box, tmp_path):
    install(bundle(tmp_path, V2), box, say=lambda line: None)
    assert grub_boots(box, {"a": V1, "b": V2}) == "b"
    assert confirm(box, 60, check=healthy, reboot=reboot_not_expected, say=lambda line: None) == 0
    assert lifecycle.good_slot(grubenv.read(box.grubenv)) == "b"
    assert not os.path.exists(box.pending)
    lines = status(box)
    assert lines[:2] == [f"slot a: {V1}", f"slot b: {V2:<24} booted, marked good"]
    assert "2.0.0 (slot b) healthy" in lines[2] and lines[2].endswith("after boot: marked good")
    # From now on b is booted by default, and an update goes to a.
    assert grub_boots(box, {"a": V1, "b": V2}) == "b"


def test_a_slot_that_fails_its_health_check_reboots_back_and_says_so(box, tmp_path):
    install(bundle(tmp_path, V2), box, say=lambda line: None)
    grub_boots(box, {"a": V1, "b": V2})
    reboots = []
    failing = [Health(False, "appliance.service is activating"), Health(False, "appliance.service failed", final=True)]
    assert confirm(box, 60, check=lambda: failing.pop(0), reboot=lambda: reboots.append(1),
                   sleep=lambda s: None, say=lambda line: None) == 1
    assert reboots == [1] and not failing
    assert grub_boots(box, {"a": V1, "b": V2}) == "a"  # GRUB goes back by itself
    confirm(box, 60, check=healthy, reboot=reboot_not_expected, say=lambda line: None)
    last = status(box)[-1]
    assert "2.0.0 (slot b) failed to become healthy (appliance.service failed): rolled back to 1.0.0 (slot a)" in last
    assert status(box)[:2] == [f"slot a: {V1:<24} booted, marked good", f"slot b: {V2}"]
    assert not os.path.exists(box.pending)


def test_a_slot_that_never_gets_healthy_is_given_up_at_the_deadline(box, tmp_path):
    install(bundle(tmp_path, V2), box, say=lambda line: None)
    grub_boots(box, {"a": V1, "b": V2})
    clock = iter(range(0, 1000, 10))
    reboots = []
    confirm(box, 60, check=lambda: Health(False, "http://10.0.2.15:8080/healthz answers 503"),
            reboot=lambda: reboots.append(1), clock=lambda: next(clock), sleep=lambda s: None, say=lambda line: None)
    assert reboots == [1]
    assert "failed to become healthy (not within 60 s: http://10.0.2.15:8080/healthz answers 503)" in status(box)[-1]


def test_a_slot_that_never_reached_its_health_check_is_left_by_the_next_boot(box, tmp_path):
    install(bundle(tmp_path, V2), box, say=lambda line: None)
    grub_boots(box, {"a": V1, "b": V2})  # and it panics before its health check runs
    assert grub_boots(box, {"a": V1, "b": V2}) == "a"
    confirm(box, 60, check=reboot_not_expected, reboot=reboot_not_expected, say=lambda line: None)
    assert "2.0.0 (slot b) did not come up (its boot never reached the health check): rolled back to 1.0.0" in status(box)[-1]


def test_a_bundle_signed_with_another_key_is_refused_and_nothing_is_written(box, tmp_path):
    before = snapshot(box)
    with pytest.raises(UpdateError, match=r"is not signed with this box's update key \(.*update.pub\): refusing it; "
                                          "nothing was written"):
        install(bundle(tmp_path, V2, key=Ed25519PrivateKey.generate()), box, say=lambda line: None)
    assert snapshot(box) == before


def test_a_tampered_bundle_is_refused_and_nothing_is_written(box, tmp_path):
    path = bundle(tmp_path, V2)
    data = Path(path).read_bytes()
    Path(path).write_bytes(data.replace(b"root root", b"root r00t", 1))
    before = snapshot(box)
    with pytest.raises(UpdateError, match="does not match the sha256 its manifest names"):
        install(path, box, say=lambda line: None)
    assert snapshot(box) == before


def test_a_root_larger_than_the_slot_is_refused_before_writing(box, tmp_path):
    before = snapshot(box)
    with pytest.raises(UpdateError, match="slot b holds 1048576; nothing was written"):
        install(bundle(tmp_path, V2, root=bytes(SLOT_SIZE + 1)), box, say=lambda line: None)
    assert snapshot(box) == before


def test_no_update_while_the_running_slot_is_on_trial(box, tmp_path):
    install(bundle(tmp_path, V2), box, say=lambda line: None)
    grub_boots(box, {"a": V1, "b": V2})
    before = snapshot(box)
    with pytest.raises(UpdateError, match="slot b runs on trial and is not marked good yet"):
        install(bundle(tmp_path, "3.0.0"), box, say=lambda line: None)
    assert snapshot(box) == before


def test_an_update_armed_without_reboot_stays_armed_through_a_health_check_run(box, tmp_path):
    install(bundle(tmp_path, V2), box, say=lambda line: None)
    confirm(box, 60, check=reboot_not_expected, reboot=reboot_not_expected, say=lambda line: None)
    assert grubenv.read(box.grubenv)[lifecycle.TRY] == "b" and os.path.exists(box.pending)
    # A second update before the reboot overwrites the armed slot: it is not bootable meanwhile.
    install(bundle(tmp_path, "2.0.1"), box, say=lambda line: None)
    assert status(box)[1] == f"slot b: {'2.0.1':<24} tried once at the next boot"


def test_a_download_that_fails_writes_nothing(box):
    before = snapshot(box)
    with pytest.raises(UpdateError, match="downloading http://127.0.0.1:9/x.update failed"):
        install("http://127.0.0.1:9/x.update", box, say=lambda line: None)
    assert snapshot(box) == before


def test_an_unreadable_record_is_started_afresh():
    record = lifecycle.Record.from_json("{not json")
    assert record.history == ["the update record was unreadable and was started afresh"]
    assert store.now().endswith("UTC")


def test_grub_the_unit_and_the_image_use_the_names_this_code_does():
    repo = Path(__file__).parents[2]
    grub = (repo / "image" / "grub" / "grub.cfg").read_text()
    image = Layout()
    assert f"load_env {lifecycle.GOOD} {lifecycle.TRY}" in grub
    assert "linux /vmlinuz-$slot " in grub and image.kernel("a") == f"{image.esp}/vmlinuz-a"
    assert "initrd /initrd-$slot.img" in grub and image.initrd("a").endswith("/initrd-a.img")
    assert "root=PARTLABEL=root-$slot" in grub and image.partition("a").endswith("/by-partlabel/root-a")
    assert "edgecall.slot=$slot" in grub
    unit = (repo / "systemd" / "appliance-update-confirm.service").read_text().splitlines()
    assert f"ConditionPathExists={image.pending}" in unit
    assert f"ReadWritePaths={image.state_dir} {image.esp}" in unit
    fstab = (repo / "image" / "overlay" / "etc" / "fstab").read_text()
    assert any(line.split()[:3] == ["PARTLABEL=ESP", image.esp, "vfat"] for line in fstab.splitlines() if line.strip())


def test_the_command_line_shows_the_status_and_refuses_without_a_bundle(box, tmp_path, capsys):
    from appliance.cli import parser
    from appliance.update.command import update

    assert update(parser().parse_args(["update", "--status"]), box) == 0
    assert capsys.readouterr().out.splitlines()[:2] == [f"slot a: {V1:<24} booted, marked good", "slot b: empty"]
    assert update(parser().parse_args(["update"]), box) == 2
    assert "give a bundle (FILE or URL), --status or --confirm" in capsys.readouterr().err
    path = bundle(tmp_path, V2, key=Ed25519PrivateKey.generate())
    assert update(parser().parse_args(["update", "--no-reboot", path]), box) == 1
    assert "refusing it; nothing was written" in capsys.readouterr().err
    Path(box.cmdline).write_text("root=/dev/sda1 ro\n")
    assert update(parser().parse_args(["update", "--status"]), box) == 1
    assert "was not booted from the Edgecall image" in capsys.readouterr().err
