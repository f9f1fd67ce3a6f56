"""One boot of the firmware image in QEMU, for the image test.

Software emulation (TCG): KVM opens on these machines but nested guests assert or hang.
User networking with restrict=on: the guest reaches nothing outside, only the forwarded host
ports reach it (TCP only: libslirp 4.7 with restrict=on drops the guest's UDP replies to a
forwarded port, so UDP is probed from inside the guest), and, when a test asks for one, one
guestfwd address whose connections QEMU hands to a command it spawns for each (the update test's
bundle server, http_once.py). The serial console goes to a file the test reads; every wait has a deadline.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
GUEST_API, GUEST_SSH = 8080, 22
SECOND_PORT = "ens8"  # the name the guest gives a second network port in PCI slot 8


def free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def partition_offset(disk: Path, name: str) -> int:
    """Byte offset of the GPT partition labelled `name`."""
    table = json.loads(subprocess.run(["sfdisk", "--json", str(disk)], check=True, capture_output=True,
                                      text=True).stdout)["partitiontable"]
    sector = table.get("sectorsize", 512)
    return next(p["start"] * sector for p in table["partitions"] if p.get("name") == name)


def write_config_partition(disk: Path, files: dict[str, str | None]) -> None:
    """Put (or, for None, delete) files on the EDGECALL FAT partition, as an operator would from any OS."""
    target = f"{disk}@@{partition_offset(disk, 'EDGECALL')}"
    for name, text in files.items():
        if text is None:
            subprocess.run(["mdel", "-i", target, f"::{name}"], capture_output=True)
            continue
        local = disk.parent / name
        local.write_text(text)
        subprocess.run(["mcopy", "-o", "-i", target, str(local), f"::{name}"], check=True, capture_output=True)


@dataclass
class Guest:
    disk: Path
    workdir: Path
    uefi: bool
    ssh_key: Path
    api_port: int = field(default_factory=lambda: free_port(socket.SOCK_STREAM))
    ssh_port: int = field(default_factory=lambda: free_port(socket.SOCK_STREAM))
    # The guest's reboots boot it again (the update test); otherwise QEMU exits when the guest reboots.
    reboots: bool = False
    # (guest address, guest port, command): each connection of the guest to the address and port is
    # the stdin and stdout of the command (no commas in it: they separate QEMU's options).
    guestfwd: tuple[str, int, str] | None = None
    # A second network port (SECOND_PORT), on a restricted user network of its own (10.0.3.0/24).
    second_port: bool = False
    process: subprocess.Popen | None = None
    started: float = 0.0

    @property
    def serial_log(self) -> Path:
        return self.workdir / f"serial-{'uefi' if self.uefi else 'bios'}.log"

    def start(self) -> None:
        net = (f"user,id=n0,restrict=on,"
               f"hostfwd=tcp:127.0.0.1:{self.api_port}-:{GUEST_API},"
               f"hostfwd=tcp:127.0.0.1:{self.ssh_port}-:{GUEST_SSH}")
        if self.guestfwd is not None:
            address, port, program = self.guestfwd
            net += f",guestfwd=tcp:{address}:{port}-cmd:{program}"
        command = ["qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-smp", "2",
                   *([] if self.reboots else ["-no-reboot"]),
                   # The box's disk, network port and serial console; nothing else: the firmware
                   # probes no floppy or CD drive, and loads no network boot ROM (the image boots from disk).
                   "-nodefaults", "-display", "none", "-vga", "std",
                   "-serial", f"file:{self.serial_log}", "-monitor", "none",
                   "-drive", f"file={self.disk},if=virtio,format=raw",
                   "-netdev", net, "-device", "virtio-net-pci,netdev=n0,romfile="]
        if self.second_port:
            # Another subnet than the first port's: both ask DHCP until a configuration says otherwise.
            command += ["-netdev", "user,id=n1,restrict=on,net=10.0.3.0/24",
                        "-device", "virtio-net-pci,netdev=n1,romfile=,addr=0x8"]
        if self.uefi:
            vars_copy = self.workdir / "OVMF_VARS.fd"
            shutil.copyfile(OVMF_VARS, vars_copy)
            command += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}",
                        "-drive", f"if=pflash,format=raw,file={vars_copy}"]
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=open(self.workdir / "qemu.stderr", "w"), start_new_session=True)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=20)

    def wait_stopped(self, timeout: float) -> None:
        """Until QEMU exits by itself (the guest powered off)."""
        self.process.wait(timeout=timeout)

    def console(self) -> str:
        try:
            return self.serial_log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"qemu exited ({self.process.returncode}); serial console:\n{self.console()[-4000:]}")

    def wait_for(self, what: str, check, timeout: float, every: float = 2.0):
        """Poll `check()` until it returns something truthy; fail with the console's tail at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            self.alive()
            result = check()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout:.0f} s; serial console:\n{self.console()[-4000:]}")
            time.sleep(every)

    def ssh(self, command: str, timeout: float = 60, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ssh", "-i", str(self.ssh_key), "-p", str(self.ssh_port), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
             "-o", "ConnectTimeout=10", "root@127.0.0.1", command],
            input=stdin, capture_output=True, text=True, timeout=timeout)

    def ssh_ready(self) -> bool:
        try:
            return self.ssh("true", timeout=30).returncode == 0
        except subprocess.TimeoutExpired:
            return False
