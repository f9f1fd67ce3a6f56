"""The box's first Ethernet interface and its DHCP address, for the first-boot default."""
from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass

SYS_NET = "/sys/class/net"
ARPHRD_ETHER = 1


@dataclass(frozen=True)
class FirstInterface:
    name: str
    address: ipaddress.IPv4Address | None


def first_interface(sys_net: str = SYS_NET) -> FirstInterface | None:
    """The Ethernet interface backed by a device (not a bridge, tunnel or veth) with the lowest
    index, and its first global IPv4 address if it has one yet."""
    found = []
    for name in os.listdir(sys_net):
        base = os.path.join(sys_net, name)
        try:
            with open(os.path.join(base, "type")) as f:
                kind = int(f.read())
            with open(os.path.join(base, "ifindex")) as f:
                index = int(f.read())
        except (OSError, ValueError):
            continue
        if kind == ARPHRD_ETHER and os.path.exists(os.path.join(base, "device")):
            found.append((index, name))
    if not found:
        return None
    index, name = min(found)
    # Here, not at the top: pyroute2 takes a second to import under emulation, and the boot step needs
    # it only for the first-boot default.
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        for msg in ipr.get_addr(family=socket.AF_INET, index=index):
            address = ipaddress.IPv4Address(msg.get_attr("IFA_ADDRESS"))
            if not (address.is_loopback or address.is_link_local):
                return FirstInterface(name, address)
    return FirstInterface(name, None)
