"""Keep systemd-networkd's DHCP off the interfaces that `[net]` configures statically.

The image's catch-all 80-edgecall-dhcp.network asks DHCP on every Ethernet port (the first-boot
default serves on a DHCP address); `appliance net apply` owns the ports listed in `[[net.uplinks]]`:
it sets them up and gives them their addresses. A .network file that sorts first takes those ports
out of networkd's hands (networkd uses the first file that matches a link).

The file is kept on the state partition, and /etc/systemd/network/10-edgecall-static.network in the
image links to it (networkd starts after /var is mounted; it ignores the link while it leads nowhere):
so from the boot after the configuration named them, networkd never asks DHCP on those ports. When
the file changes, networkd is told to re-read it at once.
"""
from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

from ..config import Config

FILE_NAME = "10-edgecall-static.network"


def render(config: Config) -> str | None:
    """The .network file for the statically configured interfaces; None when there are none."""
    names = sorted({uplink.interface for uplink in config.net.uplinks})
    if not names:
        return None
    return ("# Written by `appliance boot config` from [[net.uplinks]]: `appliance net apply` configures these\n"
            "# interfaces; networkd leaves them alone (no DHCP, no addresses of its own).\n"
            f"[Match]\nName={' '.join(names)}\n\n[Link]\nUnmanaged=yes\n")


def networkctl_reload() -> None:
    # networkd re-reads its files and reconfigures the links whose matching file changed.
    subprocess.run(["networkctl", "reload"], check=True, capture_output=True, timeout=60)


def install(config: Config, directory: str, reload: Callable[[], None] = networkctl_reload) -> str | None:
    """Write (or remove) the file in `directory` and have networkd re-read it when it changed; a line
    for the console when it did."""
    path = os.path.join(directory, FILE_NAME)
    wanted = render(config)
    try:
        with open(path, encoding="utf-8") as f:
            present: str | None = f.read()
    except FileNotFoundError:
        present = None
    if wanted == present:
        return None
    if wanted is None:
        os.unlink(path)
    else:
        os.makedirs(directory, exist_ok=True)
        with open(path + ".new", "w", encoding="utf-8") as f:
            f.write(wanted)
        os.replace(path + ".new", path)
    names = ", ".join(sorted({uplink.interface for uplink in config.net.uplinks}))
    try:
        reload()
    except (OSError, subprocess.SubprocessError) as e:
        return f"  networkd was not told about the static interfaces ({e}); it reads them at the next boot"
    return f"  DHCP off on {names}: [[net.uplinks]] configures them" if names else "  DHCP on every Ethernet port again"
