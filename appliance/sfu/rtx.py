"""RTX (RFC 4588): retransmissions on their own SSRC and payload type, the original sequence
number (OSN) in the first two payload bytes. The box unwraps what publishers send it; each leg
wraps what it resends (forward.Leg.retransmit)."""
from __future__ import annotations

from .forward import payload_offset


def unwrap(packet: bytes, media_pt: int, media_ssrc: int) -> bytes | None:
    """The original packet inside an RTX packet, or None for one that carries none (a
    padding-only bandwidth probe, or a truncated packet). The padding goes; the marker bit,
    timestamp and header extensions stay as sent."""
    offset = payload_offset(packet)
    end = len(packet)
    if packet[0] & 0x20 and end > 12:
        end -= packet[-1]
    if offset < 0 or end - offset < 2:
        return None
    header = bytes((packet[0] & 0xDF, (packet[1] & 0x80) | media_pt)) + packet[offset:offset + 2] + packet[4:8]
    return header + media_ssrc.to_bytes(4, "big") + packet[12:offset] + packet[offset + 2:end]
