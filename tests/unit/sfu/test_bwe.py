"""The send-side estimator against a simulated link: a FIFO of capacity C with a tail-dropping
queue, optional random loss, and the receiver's transport-cc feedback every 100 ms, all on
simulated time. The sender sends what the estimate allows, up to what it has to offer."""
import math
import random

from aiortc.rate import TIMESTAMP_TO_MS, BandwidthUsage, InterArrival, OveruseEstimator, RateCounter
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.sfu.bwe import _GROUP_LENGTH, RING, SendSideEstimator, _AckedRate, _Groups, _Kalman
from appliance.sfu.feedback import TransportFeedback, transport_feedback, transport_feedback_packet

SIZE = 1200


class Link:
    def __init__(self, capacity=None, queue=40_000, loss=0.0, delay=0.02):
        self.capacity, self.queue, self.loss, self.delay = capacity, queue, loss, delay
        self.busy_until = 0.0
        self.rng = random.Random(5)

    def arrival(self, size, now):
        if self.loss and self.rng.random() < self.loss:
            return None
        if self.capacity is None:
            return now + self.delay
        if max(0.0, self.busy_until - now) * self.capacity / 8 + size > self.queue:
            return None
        self.busy_until = max(now, self.busy_until) + size * 8 / self.capacity
        return self.busy_until + self.delay


class Path:
    """Sender, link and receiver; the receiver's clock runs 1000 s ahead of the sender's."""

    def __init__(self, estimator):
        self.estimator = estimator
        self.now = 0.0
        self.seq = self.base = self.count = 0
        self.arrivals = {}
        self.next_feedback = 0.1
        self.pending = []  # (when the sender gets it, feedback packet)

    def run(self, link, offered, until, follow=True):
        """Estimates every 100 ms of simulated time."""
        trace = []
        while self.now < until:
            while self.pending and self.pending[0][0] <= self.now:
                at, packet = self.pending.pop(0)
                for fb in transport_feedback(packet):
                    self.estimator.feedback(fb, at)
            if self.now >= self.next_feedback:
                self._feedback(self.next_feedback)
                trace.append((self.next_feedback, self.estimator.estimate))
                self.next_feedback += 0.1
            self.estimator.sent(self.seq & 0xFFFF, SIZE, self.now)
            arrival = link.arrival(SIZE, self.now)
            if arrival is not None:
                self.arrivals[self.seq] = arrival
            self.seq += 1
            self.now += SIZE * 8 / (min(offered, self.estimator.estimate) if follow else offered)
        return trace

    def _feedback(self, at):
        arrived = [seq for seq, arrival in self.arrivals.items() if arrival <= at]
        if not arrived:
            return
        last = max(arrived)
        times = [self.arrivals.pop(seq, None) for seq in range(self.base, last + 1)]
        times = [None if t is None else t + 1000 for t in times]
        reference = math.floor(min(t for t in times if t is not None) / 0.064) * 0.064
        packet = transport_feedback_packet(1, 2, self.base & 0xFFFF, self.count & 0xFF, reference, times)
        self.pending.append((at + 0.02, packet))
        self.base, self.count = last + 1, self.count + 1


def mean(trace, start, end):
    values = [estimate for t, estimate in trace if start <= t < end]
    return sum(values) / len(values)


def test_settles_below_a_bottleneck_when_offered_more():
    path = Path(SendSideEstimator())
    trace = path.run(Link(1_000_000), 3_000_000, 40)
    assert 500_000 < min(e for t, e in trace if t > 10) and max(e for t, e in trace if t > 10) < 1_100_000
    assert 800_000 < mean(trace, 20, 40) < 1_000_000


def test_grows_toward_the_offered_rate_when_capacity_is_plentiful():
    path = Path(SendSideEstimator())
    trace = path.run(Link(), 3_000_000, 20)
    assert trace[-1][1] > 3_000_000
    assert all(later >= earlier * 0.99 for (_, earlier), (_, later) in zip(trace, trace[1:]))  # no back-off


def test_random_loss_of_20_percent_brings_it_down():
    path = Path(SendSideEstimator())
    trace = path.run(Link(loss=0.2), 2_000_000, 10)
    assert trace[-1][1] < 300_000
    assert path.estimator.loss > 0.1


def test_recovers_after_the_bottleneck_is_lifted():
    # Without probing, GCC climbs back at 8%/s (additively at first, near the old ceiling).
    path = Path(SendSideEstimator())
    trace = path.run(Link(300_000), 2_000_000, 20)
    assert 150_000 < mean(trace, 10, 20) < 330_000
    trace = path.run(Link(), 2_000_000, 45)
    assert max(e for t, e in trace if t < 40) > 1_000_000


def test_a_sender_showing_the_path_carries_more_is_believed_within_about_a_second():
    # What padding probes or a layer tried higher do: the estimate takes the acked bitrate.
    path = Path(SendSideEstimator(300_000))
    path.run(Link(), 2_000_000, 5)
    assert path.estimator.estimate < 700_000
    trace = path.run(Link(), 1_500_000, 7, follow=False)
    assert 1_300_000 < mean(trace, 6.5, 7) < 1_700_000
    assert 1_300_000 < path.estimator.acked_bitrate < 1_600_000


def test_the_estimate_stays_between_minimum_and_maximum():
    low = Path(SendSideEstimator(minimum=100_000))
    assert min(e for t, e in low.run(Link(50_000, queue=5_000), 1_000_000, 20)) >= 100_000
    high = Path(SendSideEstimator(maximum=1_500_000))
    assert max(e for t, e in high.run(Link(), 5_000_000, 20)) == 1_500_000


def _sent(estimator, seqs, start=0.0, gap=0.001):
    for i, seq in enumerate(seqs):
        estimator.sent(seq, SIZE, start + i * gap)


def test_the_ring_follows_the_16_bit_wrap():
    estimator = SendSideEstimator()
    seqs = [(65000 + i) & 0xFFFF for i in range(1000)]  # 65000 ... 65535, 0 ... 463
    _sent(estimator, seqs)
    estimator.feedback(TransportFeedback(2, 0, 65000, 0.0, [(s, 0.05 + i * 0.001) for i, s in enumerate(seqs)]), 1.1)
    assert estimator.acked_bitrate > 0 and estimator.loss == 0.0
    lost = [(s, None if i % 2 else 0.05 + i * 0.001) for i, s in enumerate(seqs)]
    fresh = SendSideEstimator()
    _sent(fresh, seqs)
    fresh.feedback(TransportFeedback(2, 0, 65000, 0.0, lost), 1.1)
    assert fresh.loss == 0.5


def test_unknown_and_overwritten_sequence_numbers_are_ignored():
    estimator = SendSideEstimator()
    _sent(estimator, range(100))
    _sent(estimator, range(RING, RING + 10), start=1.0)  # slots of 0-9 now hold later packets
    estimator.feedback(TransportFeedback(2, 0, 0, 0.0, [(s, None) for s in range(10)]), 2.0)  # not these
    estimator.feedback(TransportFeedback(2, 1, 200, 0.0, [(s, None) for s in range(200, 300)]), 2.0)  # never sent
    assert estimator.loss == 0.0 and estimator.estimate == 1_000_000


def test_duplicate_feedback_is_harmless_and_a_late_arrival_undoes_a_loss():
    once, twice = SendSideEstimator(), SendSideEstimator()
    report = TransportFeedback(2, 0, 0, 0.0, [(s, None if s in (3, 4) else 0.05 + s * 0.001) for s in range(40)])
    for estimator in (once, twice):
        _sent(estimator, range(40))
        estimator.feedback(report, 0.2)
    twice.feedback(report, 0.2)
    assert (once.loss, once.acked_bitrate, once.estimate) == (twice.loss, twice.acked_bitrate, twice.estimate)
    assert once.loss == 2 / 40
    late = SendSideEstimator()  # 10-14 reported lost, then (reordered) received, within one loss sample
    _sent(late, range(25))
    late.feedback(TransportFeedback(2, 0, 0, 0.0, [(s, None if s >= 10 else 0.05 + s * 0.001) for s in range(15)]),
                  0.1)
    late.feedback(TransportFeedback(2, 1, 10, 0.0, [(s, 0.05 + s * 0.001) for s in range(10, 25)]), 0.2)
    assert late.loss == 0.0


def test_feedback_across_the_reference_time_wrap():
    estimator = SendSideEstimator()
    span = (1 << 24) * 0.064
    top = span / 2 - 0.064
    _sent(estimator, range(200), gap=0.005)
    estimator.feedback(TransportFeedback(2, 0, 0, top, [(s, top + s * 0.005) for s in range(100)]), 0.6)
    bottom = top - span + 0.5  # the reference time wrapped to its most negative
    estimator.feedback(TransportFeedback(2, 1, 100, bottom, [(s, bottom + (s - 100) * 0.005) for s in range(100, 200)]),
                       1.1)
    assert 0 < estimator.acked_bitrate < 2_500_000


def test_a_proven_rate_lifts_the_estimate_and_never_lowers_it():
    estimator = SendSideEstimator(initial=300_000)
    estimator.carried(600_000, 10.0)
    assert estimator.estimate == 600_000
    estimator.carried(400_000, 11.0)
    assert estimator.estimate == 600_000


# Send-time steps of 0 to 10 ms (at 2^26 units per second), now and then backwards, far, or onto a
# boundary (a group's length, half the 32-bit range); arrival steps likewise (a burst's 5 ms).
send_steps = st.one_of(st.integers(0, 671_088), st.integers(-400_000, 0), st.integers(0, 0xFFFFFFFF),
                       st.sampled_from([_GROUP_LENGTH, _GROUP_LENGTH + 1, 0x7FFFFFFF, 0x80000000, 0x80000001]))
arrival_steps = st.one_of(st.integers(0, 12), st.integers(-6, 0), st.integers(0, 2000), st.sampled_from([5, 999, 1000]))


@settings(max_examples=300)
@given(st.integers(0, 0xFFFFFFFF), st.lists(st.tuples(send_steps, arrival_steps, st.integers(0, 1500)), max_size=80))
def test_the_groups_are_aiortc_s_inter_arrival(start, packets):
    """The estimator's inlined groups give what aiortc's InterArrival (which it replaced) gives,
    across the send time's 32-bit wrap, reordering and bursts."""
    theirs, ours = InterArrival(_GROUP_LENGTH, TIMESTAMP_TO_MS), _Groups()
    timestamp, arrival = start, 1000
    for send_step, arrival_step, size in packets:
        timestamp, arrival = (timestamp + send_step) & 0xFFFFFFFF, arrival + arrival_step
        deltas = theirs.compute_deltas(timestamp, arrival, size)
        expected = None if deltas is None else (deltas.timestamp, deltas.arrival_time, deltas.size)
        assert ours.add(timestamp, arrival, size) == expected


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(["add", "add", "add", "rate", "reset"]), arrival_steps,
                          st.integers(0, 1500)), max_size=120))
def test_the_acked_rate_is_aiortc_s_rate_counter(operations):
    """Likewise the acked bitrate's window against aiortc's RateCounter over one second."""
    theirs, ours = RateCounter(1000), _AckedRate()
    now = 5000
    for operation, step, size in operations:
        now += step
        if operation == "add":
            theirs.add(size, now)
            ours.add(size, now)
        elif operation == "reset":
            theirs.reset()
            ours.reset()
        assert ours.rate(now) == theirs.rate(now)
        assert (ours._count, ours._value) == (sum(ours._counts), sum(ours._values))  # the totals stay the buckets'


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(-50, 200), st.floats(0, 100), st.integers(-3000, 3000),
                          st.sampled_from(list(BandwidthUsage))), min_size=62, max_size=150))
def test_the_kalman_filter_is_aiortc_s(updates):
    """The estimator's Kalman filter (a shorter way to the same shortest send-time delta) stays
    aiortc's, over more updates than the 60 deltas it remembers."""
    theirs, ours = OveruseEstimator(), _Kalman()
    for now_ms, (arrival_delta, sent_delta, size_delta, usage) in enumerate(updates):
        theirs.update(arrival_delta, sent_delta, size_delta, usage, now_ms)
        ours.update(arrival_delta, sent_delta, size_delta, usage, now_ms)
        assert vars(ours) == vars(theirs)
