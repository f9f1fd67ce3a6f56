"""What the SFU knows of each stream it receives, for the receiver reports it sends the publisher
(RFC 3550 6.4.2 and appendix A.3, A.8): loss, extended highest sequence number and jitter."""
from __future__ import annotations

import struct


class ReceiveStats:
    """Updated once per received packet (a few integer operations), read once per report."""

    __slots__ = ("clock_rate", "max_seq", "cycles", "base_seq", "received", "expected_prior", "received_prior",
                 "jitter", "transit", "sr_ntp_middle", "sr_at")

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.max_seq = self.base_seq = -1
        self.cycles = self.received = self.expected_prior = self.received_prior = 0
        self.jitter = 0.0
        self.transit: int | None = None
        self.sr_ntp_middle = 0  # the middle 32 bits of the last SR's NTP time (LSR)
        self.sr_at: float | None = None  # when that SR arrived, on the SFU's clock

    def update(self, seq: int, ts: int, now: float) -> None:
        # Once per packet: attributes read once; the next sequence number needs no wrap arithmetic.
        # The compiled receive path (_fanout.c) does the same: a change here is one
        # there (tests/unit/sfu/test_receive_compiled.py compares them).
        max_seq = self.max_seq
        if self.received == 0:
            self.base_seq = self.max_seq = seq
        elif seq == max_seq + 1:  # the next one, without a wrap
            self.max_seq = seq
        elif (seq - max_seq) & 0xFFFF < 0x8000:  # newer, possibly after a gap or a wrap
            if seq < max_seq:
                self.cycles += 0x10000
            self.max_seq = seq
        self.received += 1
        transit = int(now * self.clock_rate) - ts
        last = self.transit
        if last is not None:
            # The difference of two transits, with the RTP timestamp's wrap taken out.
            d = transit - last
            if not -0x80000000 <= d < 0x80000000:
                d = (d + 0x80000000) % 0x100000000 - 0x80000000
            self.jitter += ((d if d >= 0 else -d) - self.jitter) / 16
        self.transit = transit

    def report_block(self, ssrc: int, now: float) -> bytes:
        extended = self.cycles + self.max_seq
        expected = extended - self.base_seq + 1
        lost = max(-0x800000, min(0x7FFFFF, expected - self.received))
        expected_interval = expected - self.expected_prior
        lost_interval = expected_interval - (self.received - self.received_prior)
        self.expected_prior, self.received_prior = expected, self.received
        fraction = (lost_interval << 8) // expected_interval if expected_interval > 0 and lost_interval > 0 else 0
        dlsr = int((now - self.sr_at) * 65536) if self.sr_at is not None else 0
        return struct.pack(">IIIIII", ssrc, (min(fraction, 255) << 24) | (lost & 0xFFFFFF), extended & 0xFFFFFFFF,
                           int(self.jitter) & 0xFFFFFFFF, self.sr_ntp_middle, dlsr & 0xFFFFFFFF)
