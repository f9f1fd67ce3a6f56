"""What anycast does to a client's media, on loopback: one address the clients send to, and each
client's flow forwarded to the box the test chooses now. The boxes see every client's packets come
from one socket per client (the switch's), whichever box they reach, as boxes behind an anycast
address see the client's own address; their answers go back to the client from the switch's
address, as from the anycast address. `move_to` is the router withdrawing a box's route.

This stands in for FRR and BIRD only where the loopback tests have none; tests/integration/
test_failover_lab.py runs the same failures through real routers in network namespaces."""
from __future__ import annotations

import asyncio
from typing import Any


class _Flow(asyncio.DatagramProtocol):
    """One client's side toward the boxes: its own socket, so every box sees the same source."""

    def __init__(self, switch: UdpSwitch, client: tuple[str, int]) -> None:
        self.switch = switch
        self.client = client
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if addr[1] == self.switch.target and self.switch.transport is not None:
            self.switch.transport.sendto(data, self.client)


class UdpSwitch(asyncio.DatagramProtocol):
    def __init__(self, target: int) -> None:
        self.target = target  # the media port (on 127.0.0.1) of the box flows go to now
        self.transport: Any = None
        self.flows: dict[tuple[str, int], _Flow] = {}
        self.forwarded = 0

    @classmethod
    async def start(cls, target: int) -> UdpSwitch:
        switch = cls(target)
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: switch, local_addr=("127.0.0.1", 0))
        return switch

    @property
    def port(self) -> int:
        return self.transport.get_extra_info("sockname")[1]

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        flow = self.flows.get(addr)
        if flow is None:
            flow = self.flows[addr] = _Flow(self, addr)
            asyncio.ensure_future(self._open(flow, data))
            return
        if flow.transport is not None:
            flow.transport.sendto(data, ("127.0.0.1", self.target))
            self.forwarded += 1

    async def _open(self, flow: _Flow, first: bytes) -> None:
        await asyncio.get_running_loop().create_datagram_endpoint(lambda: flow, local_addr=("127.0.0.1", 0))
        flow.transport.sendto(first, ("127.0.0.1", self.target))

    def move_to(self, target: int) -> None:
        """Every flow goes to the box at `target` from now on (and only its answers come back)."""
        self.target = target

    def close(self) -> None:
        for flow in self.flows.values():
            if flow.transport is not None:
                flow.transport.close()
        if self.transport is not None:
            self.transport.close()
