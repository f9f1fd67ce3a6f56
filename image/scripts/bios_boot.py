"""Make a GPT disk image boot GRUB from legacy BIOS, as grub-install does, on a plain file.

grub-install wants a block device; this writes the same two things: GRUB's boot.img into the
protective MBR's code area, told where core.img starts, and core.img into the bios_grub
partition, its first sector told where the rest of it lies (GRUB 2.06 i386-pc layout:
boot.img's kernel sector at 0x5c; diskboot.img's block list at the end of core.img's first sector).

Usage: bios_boot.py DISK CORE_IMG BOOT_IMG
"""
from __future__ import annotations

import struct
import sys
import uuid

SECTOR = 512
BIOS_BOOT = uuid.UUID("21686148-6449-6e6f-744e-656564454649")
MBR_CODE = 440  # bytes of boot code before the disk signature and the partition table
KERNEL_SECTOR = 0x5C
DRIVE_CHECK = 0x66
BLOCKLIST = SECTOR - 12  # struct { u64 start; u16 sectors; u16 segment; }


def partitions(disk) -> list[tuple[uuid.UUID, int, int, str]]:
    """(type, first LBA, last LBA, name) of every used GPT entry."""
    disk.seek(SECTOR)
    header = disk.read(92)
    if header[:8] != b"EFI PART":
        raise SystemExit("bios_boot: no GPT header at LBA 1")
    entries_lba, count, size = struct.unpack_from("<QII", header, 72)
    disk.seek(entries_lba * SECTOR)
    table = disk.read(count * size)
    found = []
    for i in range(count):
        entry = table[i * size:(i + 1) * size]
        kind = uuid.UUID(bytes_le=entry[:16])
        if kind.int:
            first, last = struct.unpack_from("<QQ", entry, 32)
            found.append((kind, first, last, entry[56:128].decode("utf-16-le").rstrip("\0")))
    return found


def main(disk_path: str, core_path: str, boot_path: str) -> None:
    core = bytearray(open(core_path, "rb").read())
    boot = open(boot_path, "rb").read()
    with open(disk_path, "r+b") as disk:
        bios = [p for p in partitions(disk) if p[0] == BIOS_BOOT]
        if len(bios) != 1:
            raise SystemExit("bios_boot: expected one bios_grub partition")
        _, first, last, _ = bios[0]
        sectors = -(-len(core) // SECTOR)
        if sectors > last - first + 1:
            raise SystemExit(f"bios_boot: core.img needs {sectors} sectors, the partition has {last - first + 1}")
        segment = struct.unpack_from("<H", core, BLOCKLIST + 10)[0]
        struct.pack_into("<QHH", core, BLOCKLIST, first + 1, sectors - 1, segment)
        disk.seek(first * SECTOR)
        disk.write(bytes(core).ljust(sectors * SECTOR, b"\0"))
        disk.seek(0)
        mbr = bytearray(disk.read(SECTOR))
        mbr[:MBR_CODE] = boot[:MBR_CODE]
        struct.pack_into("<Q", mbr, KERNEL_SECTOR, first)
        # A hard disk: trust no BIOS's drive number below 0x80 (grub-setup's workaround, the jump made NOPs).
        mbr[DRIVE_CHECK:DRIVE_CHECK + 2] = b"\x90\x90"
        disk.seek(0)
        disk.write(mbr)
    print(f"bios_boot: core.img ({sectors} sectors) at LBA {first}, boot.img in the MBR",
          file=sys.stderr)


if __name__ == "__main__":
    main(*sys.argv[1:])
