"""RFC 4571 framing, which ICE-TCP (RFC 6544 section 3) uses for STUN, DTLS and SRTP alike:
each packet is preceded by its length as a 16-bit big-endian number."""
from __future__ import annotations

_MAX = 0xFFFF


def frame(packet: bytes) -> bytes:
    if len(packet) > _MAX:
        raise ValueError(f"a {len(packet)}-byte packet does not fit RFC 4571 framing")
    return len(packet).to_bytes(2, "big") + packet


class Rfc4571Framer:
    """Feed it received chunks; it returns the whole packets they complete.

    Any byte stream is some sequence of frames, so there is nothing to reject: a stream
    that is not ICE-TCP shows as packets the port does not recognise.
    """

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        packets = []
        pos = 0
        size = len(buffer)
        while size - pos >= 2:
            end = pos + 2 + (buffer[pos] << 8 | buffer[pos + 1])
            if end > size:
                break
            packets.append(bytes(buffer[pos + 2 : end]))
            pos = end
        del buffer[:pos]
        return packets
