"""The media port's shell reading its UDP socket under uvloop, with the compiled receive path
(recvmmsg, recvbatch.py) and without it: the port is handed the same datagrams from the same sources."""
from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop

from appliance.rtc import recvbatch
from appliance.rtc.io import MediaIO
from appliance.rtc.port import Listener, MediaPort
from tests.lab.appliance import has_ipv6_loopback
from tests.unit.rtc.harness import PORT_CONTEXT

LOOPBACKS = ["127.0.0.1", pytest.param("::1", marks=pytest.mark.skipif(not has_ipv6_loopback(), reason="no ::1"))]
COUNT = 150  # more than one readiness callback's READ_BATCH


@pytest.mark.parametrize("host", LOOPBACKS)
@pytest.mark.parametrize("compiled", [pytest.param(True, marks=pytest.mark.skipif(
    recvbatch.EXTENSION is None, reason="the compiled receive path is not built")), False])
def test_the_port_gets_every_datagram_with_its_source(compiled, host):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    async def main() -> tuple[list[tuple[bytes, tuple]], list[tuple[bytes, tuple]]]:
        port = MediaPort(PORT_CONTEXT)
        if not compiled:
            port.recvbatch = None
        got: list[tuple[bytes, tuple]] = []

        def record(listener: Listener, data: bytes, addr: tuple, now: float) -> None:
            got.append((data, addr))

        port.datagram_received = record  # type: ignore[method-assign]  # what the shell and the batch API call
        io = MediaIO(asyncio.get_running_loop(), port)
        address = io.open_udp(host, 0)
        sent = []
        with socket.socket(family, socket.SOCK_DGRAM) as first, socket.socket(family, socket.SOCK_DGRAM) as second:
            for sock in (first, second):
                sock.bind((host, 0))
            for n in range(COUNT):
                sock = (first, second)[n % 3 == 0]
                # STUN-, DTLS- and SRTP-looking first bytes, and datagrams shorter than any header.
                data = bytes([(0, 22, 0x80, 0x90)[n % 4]]) + n.to_bytes(2, "big") * (n % 7)
                sock.sendto(data, address)
                sent.append((data, sock.getsockname()))
            for _ in range(400):  # loopback delivers at once; the reader needs a few loop rounds
                if len(got) >= COUNT:
                    break
                await asyncio.sleep(0.005)
        await io.close()
        return got, sent

    got, sent = uvloop.run(main())
    assert got == sent
