"""The receive path's per-packet shortcuts (issue 17) against the plain forms they stand for: the
transport-wide number read at once in Chrome's layout, and the receive statistics' fast branches."""
from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.sfu import extensions
from appliance.sfu.stats import ReceiveStats


def two_bytes_by_walking(packet: bytes, ext_id: int) -> int:
    value = extensions.find(packet, ext_id)
    return value[0] << 8 | value[1] if value is not None and len(value) == 2 else -1


HEADER = struct.pack("!BBHII", 0x90, 96, 1, 2, 3)  # no padding, an extension, no CSRCs: Chrome's


def chrome_like(block: bytes) -> bytes:
    return HEADER + extensions.ONE_BYTE_PROFILE + struct.pack("!H", (len(block) + 3) // 4) + block + bytes(
        -len(block) % 4)


def element(ext_id: int, value: int) -> bytes:
    return bytes((ext_id << 4 | 1, value >> 8, value & 0xFF))


LEADS = st.one_of(st.just(b""), st.builds(element, st.integers(1, 15), st.integers(0, 0xFFFF)))
# Any bytes; blocks led (or not) by a two-byte element, cut anywhere; and blocks whose length word
# says anything (0: an empty block, whatever follows it).
PACKETS = st.one_of(
    st.binary(min_size=12, max_size=40),
    st.builds(lambda lead, rest, cut: chrome_like(lead + rest)[:cut], LEADS, st.binary(max_size=12),
              st.integers(12, 40)),
    st.builds(lambda words, lead, rest: HEADER + extensions.ONE_BYTE_PROFILE + struct.pack("!H", words) + lead + rest,
              st.integers(0, 3), LEADS, st.binary(max_size=12)))


@settings(max_examples=500)
@given(st.integers(1, 15), PACKETS)
def test_find_two_is_find_of_a_two_byte_element(ext_id, packet):
    assert extensions.find_two(packet, ext_id) == two_bytes_by_walking(packet, ext_id)


def test_find_two_reads_chromes_transport_wide_number_and_one_further_in():
    packet = chrome_like(element(3, 0x1234) + bytes((1 << 4, 0xAB)))
    assert extensions.find_two(packet, 3) == 0x1234
    behind_mid = chrome_like(element(1, 0x6162) + element(3, 0x5678))
    assert extensions.find_two(behind_mid, 3) == 0x5678
    assert extensions.find_two(packet, 4) == -1


class PlainStats:
    """ReceiveStats.update as RFC 3550 A.3 and A.8 write it, before its shortcuts."""

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.max_seq = self.base_seq = -1
        self.cycles = self.received = 0
        self.jitter = 0.0
        self.transit: int | None = None

    def update(self, seq: int, ts: int, now: float) -> None:
        if self.received == 0:
            self.base_seq = self.max_seq = seq
        elif (seq - self.max_seq) & 0xFFFF < 0x8000:
            if seq < self.max_seq:
                self.cycles += 0x10000
            self.max_seq = seq
        self.received += 1
        transit = int(now * self.clock_rate) - ts
        if self.transit is not None:
            d = (transit - self.transit + 0x80000000) % 0x100000000 - 0x80000000
            self.jitter += (abs(d) - self.jitter) / 16
        self.transit = transit


@settings(max_examples=300)
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF),
       st.lists(st.tuples(st.integers(-3, 40), st.integers(-100_000, 3_000_000_000), st.floats(0, 0.5)), max_size=60))
def test_receive_stats_count_as_rfc_3550_does(first_seq, first_ts, steps):
    """Sequence numbers that step on, repeat, go back and wrap; timestamps that step and wrap."""
    stats, plain = ReceiveStats(90000), PlainStats(90000)
    seq, ts, now = first_seq, first_ts, 1000.0
    for seq_step, ts_step, wait in [(1, 0, 0.0), *steps]:
        seq, ts, now = (seq + seq_step) & 0xFFFF, (ts + ts_step) & 0xFFFFFFFF, now + wait
        stats.update(seq, ts, now)
        plain.update(seq, ts, now)
        assert (stats.max_seq, stats.base_seq, stats.cycles, stats.received, stats.transit) == (
            plain.max_seq, plain.base_seq, plain.cycles, plain.received, plain.transit)
        assert stats.jitter == plain.jitter


def test_a_packet_cut_inside_its_extension_header_has_no_elements():
    # 14 and 15 bytes: the profile is there, the block's length is not. Raising here would end the
    # shell's whole read of the socket.
    for packet in (HEADER + b"\xbe\xde", HEADER + b"\xbe\xde\x00"):
        assert extensions.find(packet, 1) is None
        assert extensions.elements(packet) is None
        assert extensions.find_two(packet, 1) == -1
