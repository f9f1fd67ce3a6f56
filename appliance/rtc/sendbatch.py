"""The Python side of the compiled send path (_sendbatch.c, issue 17): finds the extension and the
address of pylibsrtp's srtp_protect, and makes each session's send target.

The extension is optional: `./build.sh setup` builds it where a C compiler and Python's headers are.
Without it, or beside a pylibsrtp whose srtp_protect is not the libsrtp 2 function it was written
for, `EXTENSION` is None and the media port protects and sends each packet at once in Python.
"""
from __future__ import annotations

import importlib
import socket
import struct
from collections.abc import Callable

import pylibsrtp
from pylibsrtp._binding import ffi, lib  # type: ignore[import-not-found]  # cffi's compiled module: no stubs

# Where a packet goes: its srtp_t's address, the destination as a struct sockaddr, and the
# pylibsrtp session owning that srtp_t, held so that libsrtp's context outlives queued packets.
Target = tuple[int, bytes, pylibsrtp.Session]
# protect_and_send(fd, srtp_protect's address, [(target, packet)]) -> (sent, srtp errors, send errors)
ProtectAndSend = Callable[[int, int, list[tuple[Target, bytes]]], tuple[int, int, int]]

# libsrtp 2's srtp_protect as pylibsrtp 0.12 to 1.0 declare it: the C side calls it so.
SIGNATURE = "srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)"

_FAMILY = struct.Struct("=H")  # sa_family_t, in the host's byte order
_IN = struct.Struct("!H4s8x")  # sin_port, sin_addr, sin_zero
_IN6 = struct.Struct("!HI16s")  # sin6_port, sin6_flowinfo, sin6_addr; then sin6_scope_id, the host's order
_SCOPE = struct.Struct("=I")


def _load() -> tuple[ProtectAndSend, int] | None:
    try:
        extension = importlib.import_module("appliance.rtc._sendbatch")
    except ImportError:
        return None
    protect = ffi.addressof(lib, "srtp_protect")
    if ffi.typeof(protect).cname != SIGNATURE:
        return None
    return extension.protect_and_send, int(ffi.cast("uintptr_t", protect))


# The extension's function and srtp_protect's address, or None: the port reads it when made.
EXTENSION = _load()


def srtp_address(srtp: pylibsrtp.Session) -> int:
    """The address of the srtp_t a pylibsrtp session holds."""
    return int(ffi.cast("uintptr_t", srtp._srtp[0]))


def sockaddr(family: int, addr: tuple) -> bytes | None:
    """`addr` as recvfrom gave it, as the struct sockaddr of a socket of `family`; None for what it
    cannot write (a scope given by name needs a lookup): that session then sends in Python."""
    try:
        if family == socket.AF_INET:
            return _FAMILY.pack(family) + _IN.pack(addr[1], socket.inet_pton(family, addr[0]))
        if family == socket.AF_INET6:
            flowinfo, scope = (addr[2], addr[3]) if len(addr) >= 4 else (0, 0)
            return (_FAMILY.pack(family) + _IN6.pack(addr[1], flowinfo, socket.inet_pton(family, addr[0]))
                    + _SCOPE.pack(scope))
    except (OSError, ValueError, TypeError, IndexError, struct.error):
        return None
    return None


def target(srtp: pylibsrtp.Session, family: int, addr: tuple) -> Target | None:
    """Where the packets a socket of `family` sends to `addr` under `srtp` go."""
    name = sockaddr(family, addr)
    return None if name is None else (srtp_address(srtp), name, srtp)
