import struct

from hypothesis import given, strategies as st

from appliance.sfu.feedback import (ReportBlock, TransportFeedback, nack, nacks, receiver_blocks, transport_feedback,
                                    transport_feedback_packet)
from appliance.sfu.rtcp import pli, receiver_report, sender_report
from appliance.sfu.stats import ReceiveStats


@given(st.binary(max_size=400))
def test_readers_never_raise(data):
    for reader in (nacks, receiver_blocks, transport_feedback):
        reader(data)
        # The same bytes behind a valid RTCP header of every type the readers look at.
        for first, pt in ((0x81, 205), (0x8F, 205), (0xAF, 205), (0x8F, 206), (0x81, 201), (0x81, 200)):
            body = data[:len(data) // 4 * 4]
            reader(struct.pack(">BBH", first, pt, len(body) // 4) + body)


@given(st.sets(st.integers(0, 0xFFFF), min_size=1, max_size=300))
def test_nack_round_trip_in_as_few_entries_as_cover_the_set(seqs):
    packet = nack(7, 9, seqs)
    ((ssrc, lost),) = nacks(packet)
    assert ssrc == 9 and sorted(lost) == sorted(seqs) and len(lost) == len(seqs)
    pids = [pid for pid, in struct.iter_unpack(">Hxx", packet[12:])]
    assert all(pid in seqs for pid in pids)
    # Each entry starts at the first packet the previous one could not cover: no fewer will do.
    assert all((b - a) & 0xFFFF > 16 for a, b in zip(pids, pids[1:]))


def test_nack_across_the_wrap_is_one_entry_in_order():
    packet = nack(1, 2, [0, 65535, 3, 65534])
    assert len(packet) == 16 and struct.unpack(">HH", packet[12:]) == (65534, 0b10011)
    assert nacks(packet) == [(2, [65534, 65535, 0, 3])]
    assert nack(1, 2, []) == b""


def test_nacks_in_a_compound_packet():
    compound = receiver_report(5, []) + nack(5, 10, [100, 117]) + pli(5, 10) + nack(5, 11, [1])
    assert nacks(compound) == [(10, [100, 117]), (11, [1])]


def test_receiver_blocks_of_sr_and_rr():
    stats = ReceiveStats(90000)
    for seq in (1, 2, 4):
        stats.update(seq, seq * 3000, seq / 30)
    block = stats.report_block(0xABCD, 1.0)
    negative = struct.pack(">IIIIII", 7, 0x40FFFFFE, 70000, 12, 0x11112222, 65536)  # cumulative -2
    sr = sender_report(1, 2, 3, 4, now=0.0)
    sr = bytes([sr[0] | 2]) + sr[1:3] + bytes([sr[3] + 12]) + sr[4:] + block + negative
    compound = sr + receiver_report(2, [block])
    assert receiver_blocks(compound) == [ReportBlock(0xABCD, 64, 1, 4, 0, 0, 0),
                                         ReportBlock(7, 0x40, -2, 70000, 12, 0x11112222, 65536),
                                         ReportBlock(0xABCD, 64, 1, 4, 0, 0, 0)]
    truncated = receiver_report(2, [block])[:-4]
    assert receiver_blocks(truncated) == []


arrivals = st.lists(st.one_of(st.none(), st.integers(-32768, 32767)), min_size=1, max_size=400)


@given(st.integers(0, 0xFFFF), st.integers(-(1 << 23), (1 << 23) - 1), st.integers(0, 255), arrivals)
def test_transport_feedback_round_trip(base_seq, reference, count, deltas):
    # Deltas in 250 µs ticks from the previous arrival, negative and large ones included.
    ticks, times = reference * 256, []
    for delta in deltas:
        if delta is None:
            times.append(None)
        else:
            ticks += delta
            times.append(ticks / 4000)
    packet = transport_feedback_packet(1, 2, base_seq, count, reference * 0.064, times)
    assert len(packet) % 4 == 0
    ((fb),) = transport_feedback(packet + pli(1, 2))
    assert fb == TransportFeedback(2, count, base_seq, reference * 0.064,
                                   [((base_seq + i) & 0xFFFF, t) for i, t in enumerate(times)])


def test_transport_feedback_chunks_from_the_draft():
    def feedback(chunks, deltas=b"", count=None):
        body = struct.pack(">IIHHI", 1, 2, 100, count, 10 << 8 | 3) + chunks + deltas
        body += bytes(-len(body) % 4)
        return struct.pack(">BBH", 0x8F, 205, len(body) // 4) + body

    # 3.1.3 example 1: a run of 221 "not received".
    (fb,) = transport_feedback(feedback(bytes([0b00000000, 0b11011101]), count=221))
    assert fb.packets == [((100 + i) & 0xFFFF, None) for i in range(221)] and fb.reference_time == 0.64
    # 3.1.4 example 1: 1-bit vector, 1 not received, 5 received, 3 not, 3 received, 2 not.
    received = [False] + [True] * 5 + [False] * 3 + [True] * 3 + [False] * 2
    (fb,) = transport_feedback(feedback(bytes([0b10011111, 0b00011100]), bytes(range(1, 9)), count=14))
    times = [t for _, t in fb.packets]
    assert [t is not None for t in times] == received
    assert [round((t - 0.64) * 4000) for t in times if t is not None] == [1, 3, 6, 10, 15, 21, 28, 36]
    # 3.1.4 example 2 holds the reserved symbol 11: the feedback is skipped.
    assert transport_feedback(feedback(bytes([0b11001101, 0b01010000]), bytes(4), count=7)) == []
    # Fewer deltas than received symbols: skipped too.
    assert transport_feedback(feedback(bytes([0b10011111, 0b00011100]), bytes(3), count=14)) == []


def test_chrome_shaped_transport_feedback_with_padding():
    # libwebrtc sets the P bit and pads with the count in the last byte. Base 1000, 5 packets:
    # received (small), received (large, -1 ms), not received, received (small), received (small).
    packet = bytes.fromhex(
        "af cd 0006"  # V=2 P=1 FMT=15, PT 205, length 6
        "fa17fa17" "12345678"  # sender SSRC, media SSRC
        "03e8 0005"  # base sequence number, status count
        "00014a" "2a"  # reference time 330 (21.12 s), feedback count 42
        "d850"  # 2-bit vector: 01 10 00 01 01 00 00
        "08" "fffc" "04" "28"  # deltas: +2 ms, -1 ms, +1 ms, +10 ms
        "01")  # padding
    (fb,) = transport_feedback(packet)
    assert (fb.media_ssrc, fb.feedback_count, fb.base_seq) == (0x12345678, 42, 1000)
    assert abs(fb.reference_time - 21.12) < 1e-9
    expected = [(1000, 21.122), (1001, 21.121), (1002, None), (1003, 21.122), (1004, 21.132)]
    assert [s for s, _ in fb.packets] == [s for s, _ in expected]
    assert all((t is None and e is None) or abs(t - e) < 1e-9 for (_, t), (_, e) in zip(fb.packets, expected))
