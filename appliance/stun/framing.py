"""Splitting a TCP/TLS byte stream into STUN messages and ChannelData frames.

The first byte tells them apart: 0x00-0x3F is a STUN message (20-byte header plus
the length field), 0x40-0x7F is ChannelData (4-byte header plus the length, padded
to 4 bytes on streams as RFC 8656 12.5 requires). Anything else means the stream is
not TURN.
"""
from __future__ import annotations

from .error import StunError


class StreamFramer:
    """Feed it received chunks, then take whole frames with `next()` until it returns None.

    Frames are taken one at a time because a stream can change meaning between two
    frames: after an RFC 6062 ConnectionBind, the rest is the peer's raw bytes (`rest()`).
    """

    __slots__ = ("_buffer", "_pos")

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buffer[: self._pos]
            self._pos = 0
        self._buffer += data

    def next(self) -> bytes | None:
        """The next whole frame (a ChannelData frame without its padding), or None for now.

        Raises `StunError` when the stream holds something that is neither STUN nor
        ChannelData; the stream cannot be resynchronised after that.
        """
        buffer = self._buffer
        pos = self._pos
        if len(buffer) - pos < 4:
            return None
        first = buffer[pos]
        length = buffer[pos + 2] << 8 | buffer[pos + 3]
        if first < 0x40:
            if length & 3:
                raise StunError("STUN length that is not a multiple of 4 on a stream")
            end = total = 20 + length
        elif first < 0x80:
            end = 4 + length
            total = (end + 3) & ~3
        else:
            raise StunError(f"first byte 0x{first:02x} is neither STUN nor ChannelData")
        if len(buffer) - pos < total:
            return None
        self._pos = pos + total
        return bytes(buffer[pos : pos + end])

    def rest(self) -> bytes:
        """Everything buffered and not yet framed; the framer is empty afterwards."""
        rest = bytes(self._buffer[self._pos :])
        self._buffer.clear()
        self._pos = 0
        return rest

    @property
    def pending(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._buffer) - self._pos
