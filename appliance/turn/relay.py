"""The compiled relay of connected UDP sockets (_relay.c, issue 17): the event loop's reader callbacks
of a channel's socket connected to its peer and of a UDP client's connected socket, in C.

`RELAY` is the extension where it is built, else None: `./build.sh setup` builds it where a C compiler
and Python's headers are, and without it the shell reads those sockets with its Python callbacks. In C,
channel data in the common case is relayed without a Python frame; any other datagram goes to the
reader's fallback, the Python callback's work after its read.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from .allocation import Allocation, Channel


def _load() -> ModuleType | None:
    try:
        return importlib.import_module("appliance.turn._relay")
    except ImportError:
        return None


RELAY = _load()


def configure(connected_sink: type) -> ModuleType | None:
    """The extension, told the classes whose slots it reads and writes (the shell's sink of a connected
    socket among them, which io.py defines); None without the extension."""
    if RELAY is not None:
        RELAY.configure(Allocation, Channel, connected_sink)
    return RELAY
