"""ICMP echo through one interface: is a backbone peer's kernel reachable through its tunnel?

The request goes out of the tunnel device itself (SO_BINDTODEVICE), so a reply proves the tunnel
works both ways, not just that some route to the peer exists. Only the peer's kernel answers,
so a peer whose services restart stays "up" and keeps its forwarded packets; its own health
agent withdraws its anycast prefixes if its services fail. Raw sockets need CAP_NET_RAW (the
agent runs as root); unprivileged ICMP sockets are off by default (net.ipv4.ping_group_range).

The codec is sans-I/O; `echo` is the asyncio shell.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct

ECHO_REQUEST = {4: 8, 6: 128}
ECHO_REPLY = {4: 0, 6: 129}
PAYLOAD = b"edgecall backbone probe"


def checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def request(version: int, ident: int, sequence: int) -> bytes:
    """An echo request. ICMPv6's checksum covers a pseudo-header the kernel fills in for raw
    ICMPv6 sockets, so it is left 0 there; ICMP's is computed here."""
    header = struct.pack("!BBHHH", ECHO_REQUEST[version], 0, 0, ident, sequence)
    if version == 6:
        return header + PAYLOAD
    return header[:2] + struct.pack("!H", checksum(header + PAYLOAD)) + header[4:] + PAYLOAD


def is_reply(version: int, data: bytes, ident: int, sequence: int) -> bool:
    """Whether `data` (as a raw socket reads it: IPv4 with its IP header, IPv6 without) is the reply."""
    if version == 4:
        if not data:
            return False
        data = data[(data[0] & 0x0F) * 4:]
    if len(data) < 8:
        return False
    kind, code, _, got_ident, got_sequence = struct.unpack("!BBHHH", data[:8])
    return (kind, code, got_ident, got_sequence) == (ECHO_REPLY[version], 0, ident, sequence)


async def echo(address: str, interface: str, timeout: float, ident: int, sequence: int) -> str | None:
    """None when `address` answers within `timeout` s through `interface`; otherwise what happened."""
    target = ipaddress.ip_address(address)
    family, protocol = (socket.AF_INET, socket.IPPROTO_ICMP) if target.version == 4 else (socket.AF_INET6, socket.IPPROTO_ICMPV6)
    loop = asyncio.get_running_loop()
    try:
        sock = socket.socket(family, socket.SOCK_RAW, protocol)
    except OSError as e:
        return f"cannot open a raw ICMP socket: {e.strerror or e}"
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        await loop.sock_sendto(sock, request(target.version, ident, sequence), (address, 0))
        deadline = loop.time() + timeout
        while (remaining := deadline - loop.time()) > 0:
            data, source = await asyncio.wait_for(loop.sock_recvfrom(sock, 2048), remaining)
            # A raw socket sees every ICMP packet: keep only this reply.
            if ipaddress.ip_address(source[0].split("%")[0]) == target and is_reply(target.version, data, ident, sequence):
                return None
    except asyncio.TimeoutError:
        pass
    except OSError as e:
        return f"{address} through {interface}: {e.strerror or e}"
    finally:
        sock.close()
    return f"{address} through {interface}: no echo reply within {timeout} s"
