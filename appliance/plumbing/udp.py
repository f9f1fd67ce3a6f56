"""UDP sockets for the event loop's reader callbacks (the TURN and media port shells)."""
from __future__ import annotations

import socket

# Datagrams read per readiness callback before yielding to the loop (fairness between sockets).
READ_BATCH = 64
RECV_SIZE = 65536
# <linux/in.h> and <linux/in6.h>; Python's socket module does not name them.
IP_MTU_DISCOVER, IPV6_MTU_DISCOVER, PMTUDISC_DO = 10, 23, 2


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


def set_dont_fragment(sock: socket.socket) -> None:
    """The DF bit on every datagram the socket sends: path MTU discovery "do"."""
    if sock.family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, PMTUDISC_DO)
    else:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, PMTUDISC_DO)
