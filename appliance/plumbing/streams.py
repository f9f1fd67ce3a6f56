"""A TCP or TLS connection as a sans-I/O core sees it, with the bytes waiting for its reader bounded."""
from __future__ import annotations

import asyncio
from typing import Any

from ..logs import get_logger

log = get_logger("streams")


class StreamSink:
    """`sendto(data, None)` writes, `close()` closes.

    A reader that cannot keep up is cut off once MAX_BACKLOG bytes wait for it, so that a fast
    sender on the other side of a relay can never grow the box's memory without bound.
    """

    __slots__ = ("transport",)
    MAX_BACKLOG = 4 << 20

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def sendto(self, data: bytes, addr: Any = None) -> None:
        transport = self.transport
        if transport.is_closing():
            return
        if transport.get_write_buffer_size() > self.MAX_BACKLOG:
            log.warning("stream reader too slow; closing", peer=str(transport.get_extra_info("peername")))
            transport.abort()
            return
        transport.write(data)

    def close(self) -> None:
        self.transport.close()
