"""ChannelData messages (RFC 8656 section 12): a 4-byte header, then application data.

Over UDP the padding to a multiple of 4 bytes may be left off; over TCP and TLS it
must be sent, so a stream can be split into frames (see `framing`).
"""
from __future__ import annotations

import struct

from .error import StunError

# RFC 8656 allows 0x4000-0x4FFF, but RFC 5766 allowed up to 0x7FFF and its clients use
# that range (libwebrtc, coturn's uclient, pion pick from all of it). A TURN port carries
# only STUN and ChannelData, so first bytes 0x40-0x7F are unambiguous there; only a port
# shared with DTLS and RTP (RFC 7983, see `demux`) is limited to 0x40-0x4F.
CHANNEL_FIRST = 0x4000
CHANNEL_LAST = 0x7FFF

_HEAD = struct.Struct(">HH")
PADDING = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")


def is_channel_number(number: int) -> bool:
    return CHANNEL_FIRST <= number <= CHANNEL_LAST


def pack_channel_data(channel: int, data: bytes, stream: bool = False) -> bytes:
    """A ChannelData frame; `stream` pads it for TCP/TLS."""
    frame = _HEAD.pack(channel, len(data)) + data
    return frame + PADDING[len(data) & 3] if stream else frame


def unpack_channel_data(frame: bytes) -> tuple[int, bytes]:
    """(channel, data) of a frame; bytes past the length (padding) are ignored."""
    if len(frame) < 4:
        raise StunError("ChannelData shorter than its header")
    channel, length = _HEAD.unpack_from(frame)
    if not is_channel_number(channel):
        raise StunError(f"channel number 0x{channel:04x} outside 0x4000-0x7FFF")
    if length > len(frame) - 4:
        raise StunError(f"ChannelData length {length} exceeds the {len(frame) - 4} bytes received")
    return channel, frame[4 : 4 + length]
