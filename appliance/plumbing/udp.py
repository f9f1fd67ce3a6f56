"""UDP sockets for the event loop's reader callbacks (the TURN and media port shells)."""
from __future__ import annotations

import os
import socket

# Datagrams read per readiness callback before yielding to the loop (fairness between sockets).
READ_BATCH = 64
RECV_SIZE = 65536
# <linux/in.h> and <linux/in6.h>; Python's socket module does not name them.
IP_MTU_DISCOVER, IPV6_MTU_DISCOVER, PMTUDISC_DO = 10, 23, 2
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>


def udp_socket(host: str, port: int, reuse: bool = False, shared: bool = False) -> socket.socket:
    """A non-blocking UDP socket bound to (host, port); `shared`: one of a SO_REUSEPORT group (workers)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            # One family per socket: IPv4 clients of "::" would show as ::ffff: mapped addresses.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse or shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def connected_udp_socket(local: tuple[str, int], remote: tuple, share: int) -> socket.socket:
    """A non-blocking UDP socket bound to `local` beside the socket already there, which `share`
    (SO_REUSEADDR or SO_REUSEPORT) must allow, and connected to `remote`: the kernel gives it the
    datagrams from `remote` to `local` rather than to the unconnected socket."""
    family = socket.AF_INET6 if ":" in local[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, share, 1)
        sock.setblocking(False)
        sock.bind(local)
        sock.connect(remote)
    except OSError:
        sock.close()
        raise
    return sock


def set_dont_fragment(sock: socket.socket) -> None:
    """The DF bit on every datagram the socket sends: path MTU discovery "do"."""
    if sock.family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, PMTUDISC_DO)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, PMTUDISC_DO)


# Room to queue a burst while the loop is busy elsewhere: every publisher's media and every subscriber's
# reports share a listener, and at hundreds of legs the kernel's default (208 KiB) overflowed within one
# readiness callback's time (bench scale: drops at 300 legs, 500 carried with this).
RECEIVE_BUFFER = 4 << 20


def grow_receive_buffer(sock: socket.socket, size: int = RECEIVE_BUFFER) -> int:
    """Ask for `size` bytes of receive buffer: with SO_RCVBUFFORCE where the process may (CAP_NET_ADMIN),
    else SO_RCVBUF, which the kernel caps at net.core.rmem_max. What the socket has then (the kernel
    counts double what it is given, for its bookkeeping)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)


def receive_drops(socks: list[socket.socket]) -> int:
    """Datagrams the kernel dropped at these sockets since they were made (full receive buffers, bad
    checksums)."""
    return udp_drops({os.fstat(sock.fileno()).st_ino for sock in socks if sock.fileno() >= 0})


def udp_drops(inodes: set[int], pid: int | str = "self") -> int:
    """Datagrams the kernel dropped at the UDP sockets with these inodes, from /proc/net/udp and udp6 (the
    last column) of `pid`'s network namespace."""
    total = 0
    for table in (f"/proc/{pid}/net/udp", f"/proc/{pid}/net/udp6"):
        try:
            with open(table) as lines:
                next(lines)
                for line in lines:
                    fields = line.split()
                    if int(fields[9]) in inodes:
                        total += int(fields[12])
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return total
