"""Which protocol a packet on a shared port carries, by its first byte (RFC 7983).

One media port carries STUN, DTLS, TURN ChannelData and SRTP/SRTCP; the ranges of
the first byte do not overlap, so one table lookup tells them apart.
"""
from __future__ import annotations

from enum import IntEnum


class Kind(IntEnum):
    UNKNOWN = 0
    STUN = 1  # 0-3
    ZRTP = 2  # 16-19
    DTLS = 3  # 20-63
    CHANNEL_DATA = 4  # 64-79
    RTP = 5  # 128-191, RTP and RTCP


def _table() -> tuple[Kind, ...]:
    kinds = [Kind.UNKNOWN] * 256
    for first, last, kind in ((0, 3, Kind.STUN), (16, 19, Kind.ZRTP), (20, 63, Kind.DTLS),
                              (64, 79, Kind.CHANNEL_DATA), (128, 191, Kind.RTP)):
        kinds[first : last + 1] = [kind] * (last - first + 1)
    return tuple(kinds)


KIND_BY_FIRST_BYTE = _table()


def classify(packet: bytes) -> Kind:
    """The kind of `packet`; an empty packet is UNKNOWN."""
    return KIND_BY_FIRST_BYTE[packet[0]] if packet else Kind.UNKNOWN
