"""The compiled transport-cc feedback (_fanout.transport_cc through TransportSender.fed_back) against
the Python path (feedback.transport_feedback_at, SendSideEstimator.feedback, TransportSender.lost):
the same estimator state, the same deltas into the Kalman filter, the same resends, for random send
histories and feedback, well-formed or not."""
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.sfu import feedback, transport
from appliance.sfu.bwe import SendSideEstimator
from appliance.sfu.transport import TransportSender

pytestmark = pytest.mark.skipif(transport._TRANSPORT_CC is None, reason="the extension is not built")

_REFERENCE_SPAN = (1 << 24) * 0.064


class Recording(SendSideEstimator):
    """The estimator, noting what goes to the Kalman filter and the detector."""

    __slots__ = ("detected",)

    def __init__(self) -> None:
        super().__init__()
        self.detected: list[tuple[tuple[int, int, int], int]] = []

    def _detect(self, deltas, arrival_ms):
        self.detected.append((deltas, arrival_ms))
        super()._detect(deltas, arrival_ms)


def sender() -> TransportSender:
    out = TransportSender(3)
    estimator = out.estimator = Recording()
    out.ring = transport._RING(out._out_seqs, out._resends, estimator._seq, estimator._sent_at, estimator._size,
                               estimator._state)
    return out


def state(out: TransportSender) -> str:
    """Everything the feedback can change, as text that tells 1 from 1.0."""
    e = out.estimator
    fields = {name: getattr(e, name) for name in SendSideEstimator.__slots__
              if name not in ("_groups", "_kalman", "_detector", "_aimd", "_acked")}
    fields["groups"] = {name: getattr(e._groups, name) for name in e._groups.__slots__}
    fields["acked"] = {name: getattr(e._acked, name) for name in e._acked.__slots__}
    fields["kalman"], fields["detector"], fields["aimd"] = vars(e._kalman), vars(e._detector), vars(e._aimd)
    fields["detected"] = e.detected
    fields["estimate"] = e.estimate
    fields["legs"] = out._legs
    return repr(fields)


def python_path(out: TransportSender, packet: bytes, now: float) -> list:
    lost = []
    for at, end in feedback.transport_feedback_spans(packet):
        report = feedback.transport_feedback_at(packet, at, end)
        if report is not None:
            out.estimator.feedback(report, now)
            lost += out.lost(report)
    return lost


def compiled_path(out: TransportSender, packet: bytes, now: float) -> list:
    lost = []
    for at, end in feedback.transport_feedback_spans(packet):
        lost += out.fed_back(packet, at, end, now)
    return lost


def mangled(packet: bytes, how: int, rng: random.Random) -> bytes:
    """A feedback broken in one of the ways a reader meets: cut short, a byte changed (a reserved
    symbol, a wrong count, a large delta where a small one was), or noise after the header."""
    if how == 0 or len(packet) <= 20:
        return packet
    if how == 1:
        return packet[:rng.randrange(8, len(packet))]
    if how == 2:
        at = rng.randrange(12, len(packet))
        return packet[:at] + bytes((rng.randrange(256),)) + packet[at + 1:]
    body = bytes(rng.randrange(256) for _ in range(len(packet) - 12))
    return packet[:12] + body


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1),
       first_seq=st.sampled_from([0, 1000, 0xFFFF - 40, 0xFFFF - 3000]),
       clock=st.sampled_from([1000.0, _REFERENCE_SPAN - 3.0, _REFERENCE_SPAN / 2 - 2.0, 0.5]),
       steps=st.integers(1, 60), steady=st.booleans())
def test_the_compiled_feedback_leaves_what_the_python_path_does(seed, first_seq, clock, steps, steady):
    """`steady`: a packet a millisecond, reported so, for over a second (the acked rate's window
    moving a bucket at a time); else gaps, bursts and reports of all kinds."""
    rng = random.Random(seed)
    compiled, python = sender(), sender()
    compiled.seq = python.seq = first_seq
    now = 50.0 + rng.random() * 100
    receiver = clock
    sent: list[tuple[int, float]] = []  # (seq, when)
    taken = 0
    for _ in range(steps):
        if rng.random() < 0.6 or not sent:
            for _ in range(rng.randrange(50, 150) if steady else rng.randrange(1, 80)):
                now += 0.001 if steady else rng.choice((0.0, 0.0005, 0.001, 0.003, 0.02, rng.random() * 0.01))
                size = rng.choice((1200, 100, 1, 0, 2**32 - 1, rng.randrange(1500)))
                leg = rng.choice((None, "a", "b"))
                out_seq, resend = rng.randrange(0x10000), rng.random() < 0.2
                for out in (compiled, python):
                    out.next()
                    out.carried(leg, out_seq, resend)
                    out.estimator.sent(out.seq, size, now)
                sent.append((compiled.seq, now))
            continue
        # A report of a run of numbers: recent, or older (late, repeated), or not sent at all.
        start = rng.randrange(max(0, len(sent) - 200), len(sent))
        base = (sent[start][0] - rng.choice((0, 0, 0, 5, 5000))) & 0xFFFF
        if not steady:
            receiver += rng.choice((0.05, 0.1, 0.25, 3.0, -0.2, rng.random()))
        arrival = receiver
        times: list[float | None] = []
        for _ in range(len(sent) - start if steady else rng.randrange(0, 120)):
            if rng.random() < (0.02 if steady else 0.2):
                times.append(None)
                continue
            arrival += 0.001 if steady else rng.choice(
                (0.0, 0.00025, 0.001, 0.005, 0.02, -0.003, 0.07, 1.2, rng.random() * 0.01))
            times.append(arrival)
        if steady:
            receiver = arrival
        reference = min((t for t in times if t is not None), default=receiver)
        try:
            packet = feedback.transport_feedback_packet(1, 2, base, rng.randrange(256), reference, times)
        except ValueError:
            continue
        if not steady:
            packet = mangled(packet, rng.choice((0, 0, 0, 1, 2, 3)), rng)
        if rng.random() < 0.1:
            packet += packet  # two in one compound packet
        at = now + 0.05
        resends = compiled_path(compiled, packet, at)
        assert resends == python_path(python, packet, at)
        assert state(compiled) == state(python)
        taken += 1
    assert state(compiled) == state(python)


def test_the_compiled_path_is_the_one_taken_and_reaches_the_detector(monkeypatch):
    """A long clean run: the deltas reach the detector through the compiled call, and a packet
    reported lost comes back for a resend."""
    calls = []
    compiled_cc = transport._TRANSPORT_CC

    def counting(*args):
        calls.append(args[2])
        return compiled_cc(*args)

    monkeypatch.setattr(transport, "_TRANSPORT_CC", counting)
    out = sender()
    now = 10.0
    for report in range(20):
        base = (out.seq + 1) & 0xFFFF
        times = []
        for i in range(50):
            out.next()
            out.carried("leg", i, False)
            out.estimator.sent(out.seq, 1200, now)
            times.append(None if i == 7 else 100 + now + 0.03)
            now += 0.002
        packet = feedback.transport_feedback_packet(1, 2, base, report, min(t for t in times if t), times)
        assert compiled_path(out, packet, now) == [("leg", 7, False)]
    assert len(calls) == 20
    assert len(out.estimator.detected) > 20
    assert out.estimator.acked_bitrate > 0


def test_a_malformed_feedback_touches_nothing():
    out, reference = sender(), sender()
    for o in (out, reference):
        o.next()
        o.carried("leg", 1, False)
        o.estimator.sent(o.seq, 1200, 1.0)
    packet = feedback.transport_feedback_packet(1, 2, 1, 0, 5.0, [None])
    cut = packet[:-4] + struct.pack(">I", 0)[:0]
    body = bytearray(packet)
    body[20:22] = b"\x60\x01"  # a run of the reserved symbol
    for bad in (bytes(body), cut[:16]):
        assert compiled_path(out, bad, 2.0) == []
        assert state(out) == state(reference)


def test_send_times_beyond_the_compiled_integers_take_the_python_path():
    out, reference = sender(), sender()
    for o in (out, reference):
        for i in range(3):
            o.next()
            o.carried("leg", i, False)
            o.estimator.sent(o.seq, 1200, 2e11 + i * 0.003)  # times 2^26: past 2^63
    packet = feedback.transport_feedback_packet(1, 2, 1, 0, 5.0, [5.0, None, 5.01])
    assert compiled_path(out, packet, 2.0) == python_path(reference, packet, 2.0) == [("leg", 1, False)]
    assert state(out) == state(reference)
