"""The Python side of the compiled receive path (_recvbatch.c, issue 17): finds the extension and the
addresses of pylibsrtp's srtp_unprotect and srtp_unprotect_rtcp, which its `receive` calls.

The extension is optional, like the send path's (sendbatch.py): without it, or beside a pylibsrtp
whose functions are not the libsrtp 2 ones it was written for, `EXTENSION` is None and the media
port's shell reads each datagram with recvfrom and the port unprotects with pylibsrtp.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from pylibsrtp._binding import ffi, lib  # type: ignore[import-not-found]  # cffi's compiled module: no stubs

from .sendbatch import SIGNATURE

@dataclass(frozen=True, slots=True)
class RecvBatch:
    # receive(fd, limit, sessions, rtp, rtcp, fallback, listener, counters, now): read up to `limit`
    # (<= 64) datagrams and handle each (MediaPort.read_datagrams); any datagram not SRTP from a
    # session in `sessions` goes to fallback(listener, data, source address, now).
    receive: Callable[..., None]
    rtp: int  # srtp_unprotect's address
    rtcp: int  # srtp_unprotect_rtcp's address


def _function(name: str) -> int | None:
    function = ffi.addressof(lib, name)
    if ffi.typeof(function).cname != SIGNATURE:
        return None
    return int(ffi.cast("uintptr_t", function))


def _load() -> RecvBatch | None:
    try:
        extension = importlib.import_module("appliance.rtc._recvbatch")
    except ImportError:
        return None
    rtp, rtcp = _function("srtp_unprotect"), _function("srtp_unprotect_rtcp")
    if rtp is None or rtcp is None:
        return None
    return RecvBatch(extension.receive, rtp, rtcp)


EXTENSION = _load()

