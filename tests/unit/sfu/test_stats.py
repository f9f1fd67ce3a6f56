import struct

from hypothesis import given, strategies as st

from appliance.sfu.rtcp import receiver_report, sender_report, sender_reports
from appliance.sfu.stats import ReceiveStats


def block(stats, now=10.0):
    ssrc, loss, extended, jitter, lsr, dlsr = struct.unpack(">IIIIII", stats.report_block(7, now))
    return {"fraction": loss >> 24, "lost": loss & 0xFFFFFF, "extended": extended, "jitter": jitter, "lsr": lsr,
            "dlsr": dlsr}


def test_loss_and_the_extended_sequence_across_a_wrap():
    stats = ReceiveStats(90000)
    for i, seq in enumerate([65530, 65531, 65533, 65535, 0, 1, 3]):  # 65532, 65534 and 2 lost
        stats.update(seq, 3000 * i, i / 30)
    first = block(stats)
    assert first["extended"] == 0x10000 + 3 and first["lost"] == 3
    assert first["fraction"] == (3 << 8) // 10
    assert block(stats)["fraction"] == 0  # nothing new lost since the last report


def test_reordering_does_not_move_the_highest_sequence_back():
    stats = ReceiveStats(48000)
    for i, seq in enumerate([10, 12, 11]):
        stats.update(seq, 960 * i, i * 0.02)
    assert block(stats)["extended"] == 12 and block(stats)["lost"] == 0


def test_jitter_is_zero_for_packets_on_time_and_grows_with_delay_variation():
    steady = ReceiveStats(90000)
    for i in range(50):
        steady.update(i, 3000 * i, 1 + i / 30)
    assert block(steady)["jitter"] <= 1
    shaky = ReceiveStats(90000)
    for i in range(50):
        shaky.update(i, 3000 * i, 1 + i / 30 + (0.02 if i % 2 else 0))
    assert block(shaky)["jitter"] > 500


def test_lsr_and_dlsr_come_from_the_last_sender_report():
    (ssrc, middle), = sender_reports(sender_report(9, 1, 2, 3, now=1_700_000_000.5))
    stats = ReceiveStats(90000)
    stats.update(1, 1, 5.0)
    stats.sr_ntp_middle, stats.sr_at = middle, 5.0
    assert ssrc == 9 and block(stats, now=5.5)["lsr"] == middle and block(stats, now=5.5)["dlsr"] == 32768


def test_receiver_report_layout():
    stats = ReceiveStats(90000)
    stats.update(1, 1, 1.0)
    packet = receiver_report(5, [stats.report_block(7, 1.0)])
    assert packet[0] == 0x81 and packet[1] == 201 and len(packet) == 4 * (struct.unpack(">H", packet[2:4])[0] + 1)


@given(st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.floats(0, 1e6)), max_size=50))
def test_any_arrival_order_gives_a_well_formed_block(packets):
    stats = ReceiveStats(90000)
    for seq, ts, now in packets:
        stats.update(seq, ts, now)
    assert len(stats.report_block(1, 1e6)) == 24
