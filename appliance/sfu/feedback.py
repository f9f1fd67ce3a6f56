"""RTCP feedback between the SFU and its peers: Generic NACK (RFC 4585 6.2.1), the report blocks of
SRs and RRs (RFC 3550 6.4) and transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01 3.1).

The readers never raise: a malformed part is skipped, and a malformed header ends the walk of a
compound packet (rtcp._parts)."""
from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from appliance.sfu.rtcp import PT_RR, PT_SR, _parts

PT_RTPFB = 205
FMT_NACK, FMT_TRANSPORT_CC = 1, 15

_FEEDBACK = struct.Struct(">BBHII")  # header, sender SSRC, media SSRC
_PID_BLP = struct.Struct(">HH")
_BLOCK = struct.Struct(">IIIIII")
_TRANSPORT_CC = struct.Struct(">IHHI")  # media SSRC, base seq, status count, reference time and count
_LARGE_DELTA = struct.Struct(">h")
_TICKS_PER_SECOND = 4000  # receive deltas are in 250 µs units
_TICKS_PER_REFERENCE = 256  # the reference time is in 64 ms units


class ReportBlock(NamedTuple):
    ssrc: int
    fraction_lost: int  # in 256ths, since the previous report
    cumulative_lost: int  # signed: duplicates can make it negative
    highest_seq: int  # the extended highest sequence number received
    jitter: int  # in RTP timestamp units
    lsr: int  # the middle 32 bits of the NTP time of the last SR received
    dlsr: int  # the time since that SR, in 1/65536 s


class TransportFeedback(NamedTuple):
    media_ssrc: int
    feedback_count: int  # 8 bits; a gap means a feedback packet was lost
    base_seq: int
    reference_time: float  # seconds on the receiver's clock, a multiple of 64 ms
    packets: list[tuple[int, float | None]]  # (transport seq, arrival in seconds on that clock or None: not received)


def _content_end(packet: bytes, first: int, offset: int, end: int) -> int:
    """Where a part's content ends: before its padding when the P bit is set (libwebrtc pads
    transport feedback so). A padding count that does not fit makes the part empty."""
    if not first & 0x20:
        return end
    padding = packet[end - 1]
    return end - padding if 0 < padding <= end - offset - 4 else offset


def nack(sender_ssrc: int, media_ssrc: int, seqs: Iterable[int]) -> bytes:
    """One Generic NACK asking for `seqs` again in as few PID/BLP entries as cover them; b"" when
    there is nothing to ask for (a NACK carries at least one entry)."""
    lost = sorted({seq & 0xFFFF for seq in seqs})
    if not lost:
        return b""
    # Start after the widest gap between neighbours on the 16-bit circle, so that a run across the
    # wrap (65535 then 0) stays in one entry; from there each entry takes its PID and the 16 after.
    start = max(range(len(lost)), key=lambda i: (lost[i] - lost[i - 1]) & 0xFFFF)
    ordered = lost[start:] + lost[:start]
    entries = []
    pid, blp = ordered[0], 0
    for seq in ordered[1:]:
        bit = (seq - pid - 1) & 0xFFFF
        if bit < 16:
            blp |= 1 << bit
        else:
            entries.append(pid << 16 | blp)
            pid, blp = seq, 0
    entries.append(pid << 16 | blp)
    return _FEEDBACK.pack(0x80 | FMT_NACK, PT_RTPFB, 2 + len(entries), sender_ssrc, media_ssrc) + struct.pack(
        f">{len(entries)}I", *entries)


def nacks(packet: bytes) -> list[tuple[int, list[int]]]:
    """(media SSRC, the sequence numbers asked for, in order) of each Generic NACK in a compound
    RTCP packet."""
    out = []
    for first, pt, offset, end in _parts(packet):
        if pt != PT_RTPFB or first & 0x1F != FMT_NACK:
            continue
        end = _content_end(packet, first, offset, end)
        if end < offset + 16:
            continue
        lost = []
        for entry in range(offset + 12, end - 3, 4):
            pid, blp = _PID_BLP.unpack_from(packet, entry)
            lost.append(pid)
            for bit in range(16):
                if blp >> bit & 1:
                    lost.append((pid + bit + 1) & 0xFFFF)
        out.append((int.from_bytes(packet[offset + 8:offset + 12], "big"), lost))
    return out


def receiver_blocks(packet: bytes) -> list[ReportBlock]:
    """The report blocks of every SR and RR in a compound RTCP packet (those that fit in it)."""
    out = []
    for first, pt, offset, end in _parts(packet):
        if pt == PT_SR:
            start = offset + 28
        elif pt == PT_RR:
            start = offset + 8
        else:
            continue
        stop = min(_content_end(packet, first, offset, end), start + 24 * (first & 0x1F))
        for block in range(start, stop - 23, 24):
            ssrc, loss, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(packet, block)
            lost = loss & 0xFFFFFF
            out.append(ReportBlock(ssrc, loss >> 24, lost - ((lost & 0x800000) << 1), highest, jitter, lsr, dlsr))
    return out


def transport_feedback(packet: bytes) -> list[TransportFeedback]:
    """Each transport-wide congestion control feedback in a compound RTCP packet."""
    out = []
    for at, end in transport_feedback_spans(packet):
        feedback = transport_feedback_at(packet, at, end)
        if feedback is not None:
            out.append(feedback)
    return out


def transport_feedback_spans(packet: bytes) -> list[tuple[int, int]]:
    """Where the FCI (from its media SSRC to before any padding) of each transport-wide congestion
    control feedback in a compound RTCP packet lies."""
    return [(offset + 8, _content_end(packet, first, offset, end)) for first, pt, offset, end in _parts(packet)
            if pt == PT_RTPFB and first & 0x1F == FMT_TRANSPORT_CC]


def transport_feedback_at(packet: bytes, at: int, end: int) -> TransportFeedback | None:
    """The feedback whose FCI is packet[at:end] (transport_feedback_spans), None when malformed."""
    if end < at + 12:
        return None
    media_ssrc, base_seq, count, reference = _TRANSPORT_CC.unpack_from(packet, at)
    at += 12
    symbols = bytearray()
    while len(symbols) < count:
        if at + 2 > end:
            return None
        chunk = packet[at] << 8 | packet[at + 1]
        at += 2
        if not chunk & 0x8000:  # run length: one symbol, 13 bits of length
            symbols += bytes((chunk >> 13 & 3,)) * (chunk & 0x1FFF)
        elif chunk & 0x4000:  # status vector of seven 2-bit symbols
            symbols += bytes(chunk >> shift & 3 for shift in range(12, -1, -2))
        else:  # status vector of fourteen 1-bit symbols: received (with a small delta) or not
            symbols += bytes(chunk >> shift & 1 for shift in range(13, -1, -1))
    del symbols[count:]
    if 3 in symbols:  # the reserved symbol
        return None
    feedback_count = reference & 0xFF
    reference >>= 8
    reference -= (reference & 0x800000) << 1
    ticks = reference * _TICKS_PER_REFERENCE
    packets: list[tuple[int, float | None]] = []
    for i, symbol in enumerate(symbols):
        seq = (base_seq + i) & 0xFFFF
        if symbol == 0:
            packets.append((seq, None))
            continue
        if symbol == 1:
            if at >= end:
                return None
            ticks += packet[at]
            at += 1
        else:
            if at + 2 > end:
                return None
            ticks += _LARGE_DELTA.unpack_from(packet, at)[0]
            at += 2
        packets.append((seq, ticks / _TICKS_PER_SECOND))
    return TransportFeedback(media_ssrc, feedback_count, base_seq, reference * 0.064, packets)


def transport_feedback_packet(sender_ssrc: int, media_ssrc: int, base_seq: int, feedback_count: int,
                              reference_time: float, packets: Sequence[float | None]) -> bytes:
    """A transport-wide congestion control feedback. `packets` holds the arrival time in seconds
    (None: not received) of base_seq, base_seq + 1, ...; the reference time goes out rounded down
    to 64 ms (wrapping in its 24 bits), arrival times rounded to 250 µs. A gap between arrivals
    beyond ±8191.75 ms does not fit (ValueError): it takes another feedback."""
    reference = math.floor(reference_time / 0.064 + 1e-9)
    ticks = reference * _TICKS_PER_REFERENCE
    symbols = bytearray()
    deltas = bytearray()
    for arrival in packets:
        if arrival is None:
            symbols.append(0)
            continue
        arrived = round(arrival * _TICKS_PER_SECOND)
        delta, ticks = arrived - ticks, arrived
        if 0 <= delta <= 0xFF:
            symbols.append(1)
            deltas.append(delta)
        elif -0x8000 <= delta < 0x8000:
            symbols.append(2)
            deltas += _LARGE_DELTA.pack(delta)
        else:
            raise ValueError(f"a receive delta of {delta / _TICKS_PER_SECOND} s does not fit in a feedback")
    chunks = _chunks(symbols)
    body = _TRANSPORT_CC.pack(media_ssrc, base_seq & 0xFFFF, len(symbols),
                              (reference & 0xFFFFFF) << 8 | feedback_count & 0xFF)
    body += struct.pack(f">{len(chunks)}H", *chunks) + deltas
    body += bytes(-len(body) % 4)
    return struct.pack(">BBHI", 0x80 | FMT_TRANSPORT_CC, PT_RTPFB, 1 + len(body) // 4, sender_ssrc) + body


def _chunks(symbols: bytearray) -> list[int]:
    """Packet status chunks for `symbols`: a run length where a run fills at least a vector, else
    fourteen 1-bit symbols where no large delta is among them, else seven 2-bit ones. A vector's
    unused tail reads as "not received" past the status count."""
    chunks = []
    i, count = 0, len(symbols)
    while i < count:
        symbol, run = symbols[i], 1
        while i + run < count and run < 0x1FFF and symbols[i + run] == symbol:
            run += 1
        wide = 2 in symbols[i:i + 14]
        if run >= 14 or (run >= 7 and wide):
            chunks.append(symbol << 13 | run)
            i += run
        elif not wide:
            chunks.append(0x8000 | sum(s << (13 - k) for k, s in enumerate(symbols[i:i + 14])))
            i += 14
        else:
            chunks.append(0xC000 | sum(s << (12 - 2 * k) for k, s in enumerate(symbols[i:i + 7])))
            i += 7
    return chunks
