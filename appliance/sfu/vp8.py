"""VP8's payload descriptor (RFC 7741 4.2): where a packet's picture id and TL0PICIDX are, and the
payload with them renumbered.

A subscriber's leg renumbers them as it renumbers sequence numbers, so that they stay continuous when
it moves to another simulcast layer or another track: each layer of a browser counts its own.
Forwarded as they were, a move that took the picture ids back froze subscribers in the lab (Firefox
and Chromium alike, from a Firefox publisher), or had them decode the new layer at the old one's
size: libwebrtc's frame buffer drops a frame whose id it has decoded past (the keyframe of the
move), then takes the new layer's frames whose ids the old layer used before as continuous.
"""
from __future__ import annotations

from typing import NamedTuple


class Picture(NamedTuple):
    """What a packet's descriptor numbers; an offset of 0 means the field is absent."""

    pid_at: int  # the picture id's first byte
    pid: int
    pid_mask: int  # 0x7F or 0x7FFF (the M bit: 7 or 15 bits)
    tl0_at: int  # TL0PICIDX
    tl0: int


def read(payload: bytes) -> Picture | None:
    """The numbered fields of a VP8 payload, None when it has neither (or is too short for them)."""
    if len(payload) < 2 or not payload[0] & 0x80:  # X: no extension byte, nothing numbered
        return None
    extension = payload[1]
    at = 2
    pid_at = pid = tl0_at = tl0 = 0
    pid_mask = 0x7F
    if extension & 0x80:  # I
        if len(payload) <= at:
            return None
        pid_at = at
        if payload[at] & 0x80:  # M
            if len(payload) <= at + 1:
                return None
            pid, pid_mask = (payload[at] & 0x7F) << 8 | payload[at + 1], 0x7FFF
            at += 2
        else:
            pid = payload[at]
            at += 1
    if extension & 0x40:  # L
        if len(payload) <= at:
            return None
        tl0_at, tl0 = at, payload[at]
    if not pid_at and not tl0_at:
        return None
    return Picture(pid_at, pid, pid_mask, tl0_at, tl0)


def write(payload: bytes, picture: Picture, pid: int, tl0: int) -> bytes:
    """`payload` with picture id `pid` and TL0PICIDX `tl0` where `picture` says they are."""
    out = bytearray(payload)
    if picture.pid_at:
        if picture.pid_mask == 0x7FFF:
            out[picture.pid_at] = 0x80 | pid >> 8
            out[picture.pid_at + 1] = pid & 0xFF
        else:
            out[picture.pid_at] = pid
    if picture.tl0_at:
        out[picture.tl0_at] = tl0
    return bytes(out)
