"""The per-packet forwarding path: a publisher's RTP rewritten for each subscriber leg.

Synchronous and allocation-light (ARCHITECTURE principle 4): the publisher's handler finds the
track by SSRC (one dict lookup) and each leg writes a new 12-byte header (its own SSRC, payload
type, sequence number and timestamp) in front of the original payload. CSRCs are dropped; header
extensions go out only as the subscriber negotiated them (extensions.py), their block built once
per packet for every leg that shares an id mapping.
"""
from __future__ import annotations

import random
import struct
from typing import Any

_HEADER = struct.Struct(">BBHII")
_pack_header = _HEADER.pack


class Leg:
    """One subscriber's copy of a track: its SSRC, payload types and a continuous sequence."""

    __slots__ = (
        "send", "port_session", "ssrc", "pt_map", "seq_delta", "ts_delta", "rebase", "last_seq", "last_ts",
        "packets", "octets", "mid", "subscriber", "source", "ext_map", "ext_key",
    )

    def __init__(self, send, port_session: Any, ssrc: int, pt_map: dict[int, int], mid: str, subscriber: Any) -> None:
        self.send = send  # MediaPort.send_rtp
        self.port_session = port_session
        self.ssrc = ssrc
        self.pt_map = pt_map
        self.mid = mid
        self.subscriber = subscriber
        self.source = None
        # Sequence and timestamp start at random values (RFC 3550 5.1) and stay continuous for
        # the subscriber when the leg moves to another source: `rebase` recomputes the deltas.
        self.last_seq = random.getrandbits(16)
        self.last_ts = random.getrandbits(32)
        self.seq_delta = 0
        self.ts_delta = 0
        self.rebase = True
        self.packets = 0
        self.octets = 0
        self.set_extensions({})

    def set_extensions(self, mapping: dict[int, int]) -> None:
        """Publisher id -> this subscriber's id of the header extensions it receives."""
        self.ext_map = mapping
        self.ext_key = tuple(sorted(mapping.items()))  # legs with equal keys share one block per packet

    def forward(self, packet: bytes, payload: bytes, seq: int, ts: int, extension: bytes = b"") -> None:
        pt = self.pt_map.get(packet[1] & 0x7F)
        if pt is None:
            return
        if self.rebase:
            # One sequence step and a small timestamp step past the last packet sent.
            self.seq_delta = (self.last_seq + 1 - seq) & 0xFFFF
            self.ts_delta = (self.last_ts + 3000 - ts) & 0xFFFFFFFF
            self.rebase = False
        out_seq = (seq + self.seq_delta) & 0xFFFF
        out_ts = (ts + self.ts_delta) & 0xFFFFFFFF
        self.last_seq, self.last_ts = out_seq, out_ts
        self.packets += 1
        self.octets += len(payload)
        first = 0x80 | (packet[0] & 0x20) | (0x10 if extension else 0)
        self.send(self.port_session,
                  _pack_header(first, (packet[1] & 0x80) | pt, out_seq, out_ts, self.ssrc) + extension + payload)


def payload_offset(packet: bytes) -> int:
    """Where the payload starts: after the fixed header, the CSRCs and any header extension.
    -1 for a packet too short for what its header announces."""
    offset = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        if len(packet) < offset + 4:
            return -1
        offset += 4 + 4 * (packet[offset + 2] << 8 | packet[offset + 3])
    return offset if offset <= len(packet) else -1
