"""Transport-wide congestion control at the box: the feedback it writes for publishers, the
numbering and estimate for subscribers, and the RTCP XR round trip for receive-only endpoints."""
import struct

from hypothesis import given, strategies as st

from appliance.sfu import extensions, feedback, rtcp
from appliance.sfu.forward import Leg
from appliance.sfu.transport import TransportReceiver, TransportSender

from .test_forward import Sent, rtp


def test_the_feedback_reports_each_number_once_with_its_arrival_or_loss():
    receiver = TransportReceiver(5)
    for seq, at in ((0xFFFE, 10.000), (0xFFFF, 10.010), (1, 10.030), (0, 10.040)):  # 0 late, across the wrap
        receiver.arrived(seq, at)
    (report,) = feedback.transport_feedback(receiver.report(1, 2))
    assert report.base_seq == 0xFFFE and report.feedback_count == 1
    times = [t for _, t in report.packets]
    assert [seq for seq, _ in report.packets] == [0xFFFE, 0xFFFF, 0, 1]
    assert [round(t - times[0], 4) for t in times] == [0.0, 0.01, 0.04, 0.03]
    assert receiver.report(1, 2) is None  # nothing new
    receiver.arrived(0xFFFD, 10.5)  # older than what was reported: not again
    receiver.arrived(4, 10.6)
    (report,) = feedback.transport_feedback(receiver.report(1, 2))
    assert report.base_seq == 2 and [t is None for _, t in report.packets] == [True, True, False]


def test_a_subscriber_leg_numbers_every_packet_of_its_session():
    sent = Sent()
    transport = TransportSender(3)
    legs = [Leg(sent, "s", ssrc, {96: 100}, "0", None) for ssrc in (1, 2)]
    for leg in legs:
        leg.transport = transport
        leg.forward(rtp(10, 0, pt=96), b"payload", 10, 0, b"", 1.0)
    numbers = [struct.unpack(">H", extensions.find(p, 3))[0] for p in sent]
    assert numbers == [1, 2]
    assert all(p.endswith(b"payload") for p in sent)


def test_a_dlrr_answers_a_reference_time_report():
    xr = struct.pack(">BBHIBBHII", 0x80, rtcp.PT_XR, 4, 0xCAFE, rtcp.BT_RRTR, 0, 2, 0x00012345, 0x67890000)
    assert rtcp.reference_times(xr) == [(0xCAFE, 0x23456789)]
    answer = rtcp.delay_since_reference(7, 0xCAFE, 0x23456789, 0.5)
    sender, kind, size, ssrc, lrr, dlrr = struct.unpack(">4xIBxHIII", answer)
    assert (sender, kind, size, ssrc, lrr, dlrr) == (7, rtcp.BT_DLRR, 3, 0xCAFE, 0x23456789, 32768)


@given(st.binary(max_size=120))
def test_reading_reference_times_never_raises(data):
    rtcp.reference_times(bytes([0x80, rtcp.PT_XR]) + data)
    rtcp.reference_times(data)
