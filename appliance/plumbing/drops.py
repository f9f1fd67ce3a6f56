"""What the kernel dropped at a service's UDP sockets, as a Prometheus counter read at scrape time."""
from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily

from .udp import receive_drops


class ReceiveDropsCollector:
    """edgecall_udp_receive_drops_total{sockets=`name`}: datagrams lost before the service read them
    (full receive buffers): a busy loop's symptom that no counter of the service itself can show."""

    def __init__(self, name: str, sockets: Callable[[], list[socket.socket]]) -> None:
        self.name = name
        self.sockets = sockets

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("edgecall_udp_receive_drops", "Datagrams the kernel dropped at the UDP sockets "
                                     "of a service, before it read them (full receive buffers).", labels=["sockets"])
        family.add_metric([self.name], receive_drops(self.sockets()))
        yield family
