"""Transport-wide congestion control at the box: the feedback it writes for publishers, the
numbering and estimate for subscribers."""
import struct

from appliance.sfu import extensions, feedback
from appliance.sfu.forward import Leg
from appliance.sfu.transport import TransportReceiver, TransportSender

from .harness import Downstream, Sent, rtp


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
    legs = [Leg(sent, ssrc, {96: 100}, "0", Downstream()) for ssrc in (1, 2)]
    for leg in legs:
        leg.subscriber.transport_out = transport
        leg.forward(rtp(10, 0, pt=96), b"payload", 10, 0, b"", 1.0)
    numbers = [struct.unpack(">H", extensions.find(p, 3))[0] for p in sent]
    assert numbers == [1, 2]
    assert all(p.endswith(b"payload") for p in sent)


def test_a_leg_on_a_bandwidth_trial_pads_with_rtx_copies():
    sent = Sent()
    transport = TransportSender(3)
    leg = Leg(sent, 1, {96: 100}, "0", Downstream())
    leg.subscriber.transport_out, leg.rtx_ssrc, leg.rtx_pts = transport, 2, {100: 101}
    leg.padding = 1.5  # three copies per two packets
    for seq in (10, 11):
        leg.forward(rtp(seq, 0, pt=96), b"payload", seq, 0, b"", 1.0)
    media = [p for p in sent if p[1] & 0x7F == 100]
    padding = [p for p in sent if p[1] & 0x7F == 101]
    assert len(media) == 2 and len(padding) == 3
    osns = {struct.unpack(">H", p[12 + 8:14 + 8])[0] for p in padding}  # after the 8-byte extension block
    assert osns <= {struct.unpack(">H", p[2:4])[0] for p in media}
    numbers = [struct.unpack(">H", extensions.find(p, 3))[0] for p in sent]
    assert sorted(numbers) == list(range(1, 6))  # every packet counts for the estimate


def test_the_feedback_names_each_lost_media_packet_once_and_never_padding():
    sent = Sent()
    transport = TransportSender(3)
    leg = Leg(sent, 1, {96: 100}, "0", Downstream())
    leg.subscriber.transport_out, leg.rtx_ssrc, leg.rtx_pts, leg.padding = transport, 2, {100: 101}, 1.0
    leg.forward(rtp(10, 0, pt=96), b"payload", 10, 0, b"", 1.0)  # number 1, its padding number 2
    out_seq = struct.unpack(">H", sent[0][2:4])[0]
    report = feedback.transport_feedback(feedback.transport_feedback_packet(9, 1, 1, 0, 1.0, [None, None]))[0]
    assert transport.lost(report) == [(leg, out_seq, False)]
    assert transport.lost(report) == []  # once
    leg.padding = 0.0
    leg.retransmit(rtp(10, 0, pt=96), out_seq, 2.0)  # number 3
    report = feedback.transport_feedback(feedback.transport_feedback_packet(9, 1, 3, 1, 2.0, [None]))[0]
    assert transport.lost(report) == [(leg, out_seq, True)]
