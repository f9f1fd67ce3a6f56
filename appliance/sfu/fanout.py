"""One publisher packet out on every leg of its stream: `fan_out`, the one call per packet that
`PublishedTrack.receive` makes, shared work (the extension elements of each ext_key) done once.

It is the compiled fan-out (_fanout.c, issue 17) where that extension is built, else
`forward_in_python`; this module tells the extension which classes' slots it reads and writes. The
extension is optional: `./build.sh setup` builds it where a C compiler and Python's headers are.
Legs outside its common case still forward in Python (it calls their `forward`).
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

from ..rtc.port import Listener, MediaPort, Session
from . import extensions
from .forward import Leg
from .transport import TransportSender

# fanout(legs, packet, payload, seq, ts, found, now): each leg forwards the packet as its
# forward(packet, payload, seq, ts, elements, now) would, with extensions.body(found, leg.ext_map) as
# `elements` (b"" when nothing is `found`).
Fanout = Callable[[list[Leg], bytes, bytes, int, int, dict[int, bytes] | None, float], None]


def _load() -> ModuleType | None:
    try:
        extension = importlib.import_module("appliance.sfu._fanout")
    except ImportError:
        return None
    extension.configure(Leg, Session, Listener, TransportSender, MediaPort.send_rtp, extensions.body)
    return extension


def forward_in_python(legs: list[Leg], packet: bytes, payload: bytes, seq: int, ts: int,
                      found: dict[int, bytes] | None, now: float) -> None:
    """What the compiled fan-out does, each leg through its own `forward`."""
    if not found:
        for leg in legs:
            leg.forward(packet, payload, seq, ts, b"", now)
        return
    bodies: dict[tuple, bytes] = {}
    for leg in legs:
        key = leg.ext_key
        elements = bodies.get(key)
        if elements is None:
            elements = bodies[key] = extensions.body(found, leg.ext_map)
        leg.forward(packet, payload, seq, ts, elements, now)


EXTENSION = _load()  # tracks.py configures its receive path, which calls the fan-out in C
FANOUT: Fanout | None = None if EXTENSION is None else EXTENSION.fanout  # None without the extension
fan_out: Fanout = FANOUT or forward_in_python
