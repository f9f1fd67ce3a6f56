"""The listening sockets of the box's public ports, made here or handed down by the worker supervisor.

With several workers (appliance/workers/) the supervisor makes every public listener once per
worker with SO_REUSEPORT, so the kernel spreads 5-tuples (UDP) and connections (TCP) over the
workers, and keeps its copies open: a worker that dies and is started again takes the same socket
back, its flows wait in its buffer meanwhile and no other worker's flows are rehashed (a group that
lost a member would move flows between the survivors). A worker finds its sockets in the
environment (HANDED_DOWN: JSON [{"kind", "host", "port", "fd"}]); a lone process makes its own.
"""
from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from .udp import udp_socket

HANDED_DOWN = "EDGECALL_SOCKETS"
BACKLOG = 1024


@dataclass(frozen=True)
class Handed:
    kind: str  # "udp" or "tcp"
    host: str
    port: int
    fd: int


def encode(sockets: Iterable[Handed]) -> str:
    return json.dumps([asdict(s) for s in sockets])


def _handed_down() -> dict[tuple[str, str, int], int]:
    raw = os.environ.get(HANDED_DOWN)
    if not raw:
        return {}
    return {(s["kind"], s["host"], int(s["port"])): int(s["fd"]) for s in json.loads(raw)}


def _take(kind: str, host: str, port: int) -> socket.socket | None:
    fd = _handed_down().get((kind, host, port))
    if fd is None:
        return None
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock


def udp_listener(host: str, port: int, reuse: bool = False) -> socket.socket:
    """A bound UDP socket for (host, port): the one handed down, else a new one."""
    return _take("udp", host, port) or udp_socket(host, port, reuse=reuse)


def tcp_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket for (host, port): the one handed down, else a new one."""
    return _take("tcp", host, port) or make_tcp(host, port)


def make_tcp(host: str, port: int, shared: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
