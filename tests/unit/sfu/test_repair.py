"""The retransmission cache, the upstream NACK bookkeeping, RTX wrapping and unwrapping, and a
leg's answers to NACKs (issue 5)."""
import struct

from hypothesis import given, settings, strategies as st

from appliance.sfu import losses as L
from appliance.sfu.cache import RetransmissionCache
from appliance.sfu.forward import Leg, payload_offset
from appliance.sfu.rtx import unwrap

from .harness import Downstream, Sent, forward, rtp


def test_the_cache_returns_what_it_holds_until_it_ages_or_is_overwritten():
    cache = RetransmissionCache(8, 1.0)
    for seq in range(10):
        cache.put(seq, b"p%d" % seq, 100.0 + seq * 0.01)
    assert cache.get(9, 100.2) == b"p9"
    assert cache.get(1, 100.2) is None  # slot reused by 9
    assert cache.get(5, 101.5) is None  # older than max_age
    assert cache.get(7, 100.5) == b"p7"


@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=200))
def test_the_cache_never_answers_with_another_packet(seqs):
    cache = RetransmissionCache(64, 10.0)
    for seq in seqs:
        cache.put(seq, seq.to_bytes(2, "big"), 0.0)
    for seq in range(0, 0x10000, 97):
        got = cache.get(seq, 0.0)
        assert got is None or got == seq.to_bytes(2, "big")


def test_a_gap_is_nacked_once_then_retried_after_a_round_trip_then_given_up():
    t = L.LossTracker()
    assert t.received(10, 0.0) == L.NEW
    assert t.received(14, 0.0) == L.NEW
    assert t.nacks(0.0) == ([11, 12, 13], 0)
    assert t.nacks(0.05) == ([], 0)  # within 1.5 round trips: no repeat
    assert t.received(12, 0.06) == L.RECOVERED
    assert t.rtt < L.INITIAL_RTT  # measured from the one NACK of 12
    assert t.nacks(t.rtt * 1.5 + 0.01) == ([11, 13], 0)
    assert L.MAX_TRIES == 3
    assert t.nacks(0.4) == ([11, 13], 0)
    assert t.nacks(0.8) == ([], 2)  # three NACKs unanswered
    assert t.missing == {} and t.nacked == 7


def test_a_packet_missing_too_long_is_given_up_without_more_nacks():
    t = L.LossTracker()
    t.received(1, 0.0)
    t.received(3, 0.0)
    t.nacks(0.0)
    assert t.nacks(L.MAX_AGE + 0.1) == ([], 1)


def test_duplicates_late_copies_and_wraps():
    t = L.LossTracker()
    t.received(0xFFFE, 0.0)
    assert t.received(0xFFFE, 0.0) == L.DUPLICATE
    assert t.received(1, 0.0) == L.NEW  # across the wrap: 0xFFFF and 0 missing
    assert sorted(t.missing) == [0, 0xFFFF]
    assert t.received(0, 0.0) == L.RECOVERED
    assert t.received(0, 0.0) == L.DUPLICATE
    assert t.received(0xFFF0, 0.0) == L.DUPLICATE  # older than anything tracked


def test_a_jump_is_not_nacked_packet_by_packet():
    t = L.LossTracker()
    t.received(1, 0.0)
    t.received(3, 0.0)
    assert t.received(3 + L.MAX_GAP + 1, 0.0) == L.JUMP
    assert t.missing == {} and t.given_up == 1 + L.MAX_GAP


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(-40, 300), st.floats(0, 0.2)), max_size=300))
def test_tracking_stays_bounded_and_consistent(steps):
    t = L.LossTracker()
    seq, now = 1000, 0.0
    for step, dt in steps:
        seq = (seq + step) & 0xFFFF
        now += dt
        t.received(seq, now)
        due, _ = t.nacks(now)
        assert len(due) == len(set(due))
        assert len(t.missing) <= L.MAX_MISSING
        assert t.highest not in t.missing


def test_rtx_unwrap_restores_the_original_packet():
    original = rtp(500, 9000, ssrc=0x1111, pt=96, marker=True, payload=b"frame", extension=b"\x10\xaa\x00\x00")
    offset = payload_offset(original)
    wrapped = bytearray(original[:offset] + (500).to_bytes(2, "big") + original[offset:])
    wrapped[1] = 0x80 | 97
    wrapped[2:4] = (77).to_bytes(2, "big")
    wrapped[8:12] = (0x2222).to_bytes(4, "big")
    assert unwrap(bytes(wrapped), 96, 0x1111) == original


def test_rtx_unwrap_drops_padding_only_probes():
    probe = rtp(1, 1, ssrc=2, pt=97, payload=b"\x00" * 7 + b"\x08")
    probe = bytes([probe[0] | 0x20]) + probe[1:]
    assert unwrap(probe, 96, 1) is None


@given(st.binary(min_size=12, max_size=80))
def test_rtx_unwrap_never_raises(data):
    data = bytes([0x80 | data[0] & 0x3F]) + data[1:]
    out = unwrap(data, 96, 1)
    assert out is None or len(out) >= 12


def _leg(rtx=False):
    sent = Sent()
    leg = Leg(sent, 0xAAAA, {96: 100}, "0", Downstream())
    leg.stream = object()
    if rtx:
        leg.rtx_ssrc, leg.rtx_pts = 0xBBBB, {100: 101}
    return leg, sent


def test_a_leg_resends_as_rtx_with_the_sequence_number_it_sent():
    leg, sent = _leg(rtx=True)
    packets = [rtp(1000 + i, 90 * i, pt=96, payload=b"x%d" % i) for i in range(3)]
    for p in packets:
        forward(leg, p)
    out_seq = struct.unpack(">H", sent[1][2:4])[0]
    assert leg.source_seq(out_seq) == 1001
    assert leg.retransmit(packets[1], out_seq, 1.0)
    first, second, rtx_seq, ts, ssrc = struct.unpack(">BBHII", sent[-1][:12])
    assert (second & 0x7F, ssrc) == (101, 0xBBBB)
    assert sent[-1][12:14] == out_seq.to_bytes(2, "big") and sent[-1][14:] == b"x1"
    assert ts == struct.unpack(">I", sent[1][4:8])[0]
    assert not leg.retransmit(packets[1], out_seq, 1.0 + leg.rtt / 2)  # the first copy is on its way
    assert leg.retransmit(packets[1], out_seq, 1.0 + leg.rtt * 2)


def test_without_rtx_a_leg_resends_the_packet_as_it_was():
    leg, sent = _leg()
    p = rtp(7, 700, pt=96, payload=b"frame")
    forward(leg, p)
    assert leg.retransmit(p, struct.unpack(">H", sent[0][2:4])[0], 1.0)
    assert sent[-1] == sent[0]


def test_nacks_for_numbers_not_sent_from_this_stream_map_to_nothing():
    leg, sent = _leg()
    for i in range(5):
        forward(leg, rtp(200 + i, i, pt=96))
    last = struct.unpack(">H", sent[-1][2:4])[0]
    assert leg.source_seq((last + 1) & 0xFFFF) is None  # not sent yet
    assert leg.source_seq((last - 5) & 0xFFFF) is None  # before this stream started on the leg
    leg.rebase = True  # a layer switch: the old numbers belong to another stream
    assert leg.source_seq(last) is None


def test_after_a_switch_late_packets_of_the_new_stream_are_not_forwarded():
    leg, sent = _leg()
    forward(leg, rtp(10, 0, pt=96))
    leg.rebase = True
    forward(leg, rtp(5000, 0, pt=96))
    forward(leg, rtp(4999, 0, pt=96))  # older than where the new stream started
    forward(leg, rtp(5001, 0, pt=96))
    seqs = [struct.unpack(">H", p[2:4])[0] for p in sent]
    assert len(seqs) == 3 and seqs == [seqs[0], (seqs[0] + 1) & 0xFFFF, (seqs[0] + 2) & 0xFFFF]
