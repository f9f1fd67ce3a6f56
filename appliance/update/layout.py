"""Where the image keeps what updates touch: two root slots, their boot files on the ESP, GRUB's
environment block, and the update record on the state partition. The image's paths by default;
tests point them at files of their own."""
from __future__ import annotations

import os
from dataclasses import dataclass

SLOTS = ("a", "b")
CMDLINE_SLOT = "edgecall.slot="  # grub.cfg passes the slot it booted


class NotOnTheImage(Exception):
    """Not booted by the image's GRUB: no slot to update beside."""


@dataclass(frozen=True)
class Layout:
    partitions: str = "/dev/disk/by-partlabel"  # root-a, root-b (image/repart.d)
    esp: str = "/boot"  # the EFI system partition (FAT, label ECBOOT): GRUB, grubenv, kernels, initrds
    release: str = "/usr/lib/edgecall/version"  # the running image's version
    public_key: str = "/usr/lib/edgecall/update.pub"  # what bundles must be signed with
    state_dir: str = "/var/lib/edgecall-update"  # on the state partition: survives slot swaps
    cmdline: str = "/proc/cmdline"

    def partition(self, slot: str) -> str:
        return os.path.join(self.partitions, f"root-{slot}")

    def kernel(self, slot: str) -> str:
        return os.path.join(self.esp, f"vmlinuz-{slot}")

    def initrd(self, slot: str) -> str:
        return os.path.join(self.esp, f"initrd-{slot}.img")

    @property
    def grubenv(self) -> str:
        return os.path.join(self.esp, "grub", "grubenv")

    @property
    def record(self) -> str:
        return os.path.join(self.state_dir, "record.json")

    @property
    def pending(self) -> str:
        # While it exists, appliance-update-confirm.service runs at boot (its ConditionPathExists=).
        return os.path.join(self.state_dir, "pending")

    def booted_slot(self) -> str:
        with open(self.cmdline, encoding="utf-8") as f:
            words = f.read().split()
        slots = [w.removeprefix(CMDLINE_SLOT) for w in words if w.startswith(CMDLINE_SLOT)]
        if not slots or slots[-1] not in SLOTS:
            raise NotOnTheImage(f"{self.cmdline} names no root slot ({CMDLINE_SLOT}a or b): "
                                "this system was not booted from the Edgecall image")
        return slots[-1]

    def running_version(self) -> str:
        try:
            with open(self.release, encoding="utf-8") as f:
                return f.read().strip() or "unknown"
        except FileNotFoundError:
            return "unknown"


def other(slot: str) -> str:
    return "b" if slot == "a" else "a"
