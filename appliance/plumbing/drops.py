"""What the kernel dropped at the services' UDP sockets, as one Prometheus counter read at scrape time."""
from __future__ import annotations

import socket
import weakref
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily

from .udp import receive_drops

Sockets = Callable[[], list[socket.socket]]


class ReceiveDropsCollector:
    """edgecall_udp_receive_drops_total{sockets}: datagrams lost before a service read them (full receive
    buffers), a busy loop's symptom that no counter of the service itself can show. One per registry, with
    a sample for each service's sockets: a family may appear only once in a scrape."""

    def __init__(self) -> None:
        self.groups: dict[str, Sockets] = {}

    def describe(self) -> list:
        return []

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily("edgecall_udp_receive_drops", "Datagrams the kernel dropped at the UDP sockets "
                                     "of a service, before it read them (full receive buffers).", labels=["sockets"])
        for name, sockets in self.groups.items():
            family.add_metric([name], receive_drops(sockets()))
        yield family


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, ReceiveDropsCollector] = weakref.WeakKeyDictionary()


def count_drops(registry: CollectorRegistry, name: str, sockets: Sockets) -> None:
    """Count the kernel's drops at `sockets()` in `registry` as edgecall_udp_receive_drops_total{sockets=`name`}."""
    collector = _collectors.get(registry)
    if collector is None:
        collector = _collectors[registry] = ReceiveDropsCollector()
        registry.register(collector)
    collector.groups[name] = sockets
