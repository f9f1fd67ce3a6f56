"""The RTCP the SFU writes and reads: keyframe requests, sender reports. It terminates RTCP per
leg rather than passing a subscriber's reports to the publisher."""
from __future__ import annotations

import struct
import time
from collections.abc import Iterator

NTP_EPOCH = 2208988800  # seconds from 1900 (NTP) to 1970 (Unix)

PT_SR, PT_RR, PT_BYE, PT_PSFB = 200, 201, 203, 206
FMT_PLI, FMT_FIR = 1, 4


def pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    """A Picture Loss Indication (RFC 4585 6.3.1): the publisher sends a keyframe."""
    return struct.pack(">BBHII", 0x80 | FMT_PLI, PT_PSFB, 2, sender_ssrc, media_ssrc)


def fir(sender_ssrc: int, media_ssrc: int, seq: int) -> bytes:
    """A Full Intra Request (RFC 5104 4.3.1) with its command sequence number: between boxes of a
    cluster, a keyframe request that must not wait (a new subscriber's)."""
    return struct.pack(">BBHIIIB3x", 0x80 | FMT_FIR, PT_PSFB, 4, sender_ssrc, 0, media_ssrc, seq & 0xFF)


def bye(ssrc: int) -> bytes:
    """An RTCP BYE (RFC 3550 6.6): the stream this SSRC carried has ended."""
    return struct.pack(">BBHI", 0x81, PT_BYE, 1, ssrc)


def sender_report(ssrc: int, rtp_timestamp: int, packets: int, octets: int, now: float | None = None) -> bytes:
    """An SR with no report blocks (RFC 3550 6.4.1), so the subscriber can map RTP time to wall
    time (lip sync) and compute round-trip times from its receiver reports."""
    now = time.time() if now is None else now
    ntp = now + NTP_EPOCH
    seconds = int(ntp)
    fraction = int((ntp - seconds) * (1 << 32)) & 0xFFFFFFFF
    return struct.pack(">BBHIIIIII", 0x80, PT_SR, 6, ssrc, seconds & 0xFFFFFFFF, fraction, rtp_timestamp,
                       packets & 0xFFFFFFFF, octets & 0xFFFFFFFF)


def ntp_middle(now: float | None = None) -> int:
    """The middle 32 bits of the NTP time (RFC 3550 4): what LSR echoes back."""
    ntp = (time.time() if now is None else now) + NTP_EPOCH
    return int(ntp * 65536) & 0xFFFFFFFF


def round_trip(lsr: int, dlsr: int, now: float | None = None) -> float | None:
    """The round trip a report block measures (RFC 3550 6.4.1): now - LSR - DLSR, in seconds;
    None when the block's numbers make no sense (clock steps, garbage)."""
    rtt = ((ntp_middle(now) - lsr - dlsr) & 0xFFFFFFFF) / 65536
    return rtt if rtt < 10.0 else None


def receiver_report(ssrc: int, blocks: list[bytes]) -> bytes:
    """An RR (RFC 3550 6.4.2) carrying up to 31 report blocks of 24 bytes each."""
    blocks = blocks[:31]
    return struct.pack(">BBHI", 0x80 | len(blocks), PT_RR, 1 + 6 * len(blocks), ssrc) + b"".join(blocks)


def _parts(packet: bytes) -> Iterator[tuple[int, int, int, int]]:
    """(first byte, packet type, start, end) of each part of a compound RTCP packet; a malformed
    part ends the walk."""
    offset, size = 0, len(packet)
    while offset + 4 <= size:
        first, pt, length = packet[offset], packet[offset + 1], packet[offset + 2] << 8 | packet[offset + 3]
        end = offset + 4 * (length + 1)
        if first >> 6 != 2 or end > size:
            return
        yield first, pt, offset, end
        offset = end


def sender_reports(packet: bytes) -> list[tuple[int, int]]:
    """(sender SSRC, middle 32 bits of the NTP time) of each SR in a compound RTCP packet."""
    out = []
    for _, pt, offset, end in _parts(packet):
        if pt == PT_SR and end >= offset + 20:
            ssrc, seconds, fraction = struct.unpack_from(">III", packet, offset + 4)
            out.append((ssrc, (seconds & 0xFFFF) << 16 | fraction >> 16))
    return out


def byes(packet: bytes) -> list[int]:
    """The SSRCs a compound RTCP packet says goodbye for (BYE, RFC 3550 6.6)."""
    out: list[int] = []
    for first, pt, offset, end in _parts(packet):
        if pt == PT_BYE:
            count = first & 0x1F
            out.extend(int.from_bytes(packet[i:i + 4], "big") for i in range(offset + 4, min(end, offset + 4 + 4 * count), 4))
    return out


def full_intra_requests(packet: bytes) -> list[int]:
    """The media SSRCs a compound RTCP packet asks keyframes of with FIR."""
    out: list[int] = []
    for first, pt, offset, end in _parts(packet):
        if pt == PT_PSFB and first & 0x1F == FMT_FIR:
            out.extend(int.from_bytes(packet[fci:fci + 4], "big") for fci in range(offset + 12, end - 7, 8))
    return out


def keyframe_requests(packet: bytes) -> list[int]:
    """The media SSRCs a compound RTCP packet asks keyframes for (PLI, FIR)."""
    out: list[int] = []
    for first, pt, offset, end in _parts(packet):
        if pt != PT_PSFB or end < offset + 12:
            continue
        fmt = first & 0x1F
        if fmt == FMT_PLI:
            out.append(int.from_bytes(packet[offset + 8:offset + 12], "big"))
        elif fmt == FMT_FIR:
            # FCI entries of 8 bytes, each starting with the SSRC of the stream asked for.
            for fci in range(offset + 12, end - 7, 8):
                out.append(int.from_bytes(packet[fci:fci + 4], "big"))
    return out
