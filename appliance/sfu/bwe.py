"""How fast the SFU may send to one subscriber: send-side Google Congestion Control
(draft-ietf-rmcat-gcc-02) driven by the subscriber's transport-wide congestion control feedback.

The delay-based part is aiortc's (rate.py, ported from libwebrtc's receive side): the send time
recorded here plays abs-send-time's part and the feedback's arrival time the arrival's, through
InterArrival (5 ms groups), the Kalman OveruseEstimator, the OveruseDetector with its adaptive
threshold and AimdRateControl, which keeps the estimate under 1.5 times the acked bitrate. The
loss-based part (section 6) is here; the estimate is the lower of the two."""
from __future__ import annotations

from array import array

from aiortc.rate import (INTER_ARRIVAL_SHIFT, TIMESTAMP_GROUP_LENGTH_MS, TIMESTAMP_TO_MS, AimdRateControl,
                         BandwidthUsage, InterArrival, OveruseDetector, OveruseEstimator, RateCounter)

from appliance.sfu.feedback import TransportFeedback

# Sent packets remembered, by transport sequence number: feedback comes every 50-250 ms, and 4096 packets
# are 2 s at 20 Mbit/s of 1200-byte packets. Per subscriber session (about 60 KB here, 100 KB in all).
RING = 1 << 12
_SLOT = RING - 1
_NOT_REPORTED, _REPORTED_LOST, _REPORTED_RECEIVED = 0, 1, 2
_TIMESTAMP_UNITS = 1 << INTER_ARRIVAL_SHIFT  # per second, aiortc's abs-send-time << 8
_ACKED_WINDOW_MS = 1000
_REFERENCE_SPAN = (1 << 24) * 0.064  # the feedback's reference time wraps after this many seconds
_LOSS_SAMPLE = 20  # packets reported before a loss fraction means something (libwebrtc's figure)
_LOSS_DECREASE_INTERVAL = 0.3
# Acked bitrate over the estimate that counts as the path carrying more: well above what a
# shaper's burst allowance lets through for a moment (a 16 KB bucket is +40% of 300 kbit/s for
# the first 0.4 s, +13% averaged over the one-second window).
_PROBED = 1.25


class SendSideEstimator:
    """sent() per packet on the hot path (four stores into preallocated arrays); feedback() per
    transport-cc feedback, about every 50-100 ms."""

    __slots__ = ("minimum", "maximum", "loss", "acked_bitrate", "_seq", "_sent_at", "_size", "_state",
                 "_inter_arrival", "_kalman", "_detector", "_aimd", "_acked", "_last_arrival_ms", "_reference",
                 "_wraps", "_delay_based", "_loss_based", "_lost", "_reported", "_loss_at", "_decreased_at",
                 "congested_at")  # when delay or loss last said the path is full

    def __init__(self, initial: int = 1_000_000, minimum: int = 30_000, maximum: int = 20_000_000) -> None:
        self.minimum, self.maximum = minimum, maximum
        self.loss = 0.0  # fraction of the packets last sampled that were reported lost
        self.acked_bitrate = 0  # bit/s the subscriber received over the last second
        self._seq = array("i", [-1]) * RING  # the transport sequence number each slot holds
        self._sent_at = array("d", bytes(8 * RING))
        self._size = array("I", bytes(4 * RING))
        self._state = bytearray(RING)
        self._inter_arrival = InterArrival((TIMESTAMP_GROUP_LENGTH_MS << INTER_ARRIVAL_SHIFT) // 1000,
                                           TIMESTAMP_TO_MS)
        self._kalman = OveruseEstimator()
        self._detector = OveruseDetector()
        self._aimd = AimdRateControl()
        self._aimd.set_estimate(initial, 0)
        self._acked = RateCounter(_ACKED_WINDOW_MS)
        self._last_arrival_ms: float | None = None
        self._reference: float | None = None
        self._wraps = 0.0
        self._delay_based: int = initial
        self._loss_based: float = initial
        self._lost = self._reported = 0
        self._loss_at: float | None = None
        self._decreased_at = self.congested_at = float("-inf")

    @property
    def estimate(self) -> int:
        return int(min(self._delay_based, self._loss_based))

    def carried(self, bitrate: float, now: float) -> None:
        """The path carried `bitrate` without congestion (a layer tried above the estimate):
        start from there, as libwebrtc takes a probe's result."""
        if bitrate > self.estimate:
            bitrate = min(self.maximum, int(bitrate))
            self._delay_based = self._loss_based = bitrate
            self._aimd.set_estimate(bitrate, int(now * 1000))

    def sent(self, transport_seq: int, size: int, now: float) -> None:
        slot = transport_seq & _SLOT
        self._seq[slot] = transport_seq
        self._sent_at[slot] = now
        self._size[slot] = size
        self._state[slot] = _NOT_REPORTED

    def holds(self, transport_seq: int) -> bool:
        """Whether `transport_seq` is still remembered as sent."""
        return self._seq[transport_seq & _SLOT] == transport_seq

    def feedback(self, fb: TransportFeedback, now: float) -> None:
        offset = self._unwrap(fb.reference_time)
        seqs, states = self._seq, self._state
        lost = reported = 0
        for seq, arrival in fb.packets:
            slot = seq & _SLOT
            if seqs[slot] != seq:  # not sent on this leg, or too long ago
                continue
            state = states[slot]
            if arrival is None:
                if state == _NOT_REPORTED:
                    states[slot] = _REPORTED_LOST
                    lost += 1
                    reported += 1
                continue
            if state == _REPORTED_RECEIVED:  # a repeated report
                continue
            if state == _REPORTED_LOST:  # arrived late: it was counted lost
                lost -= 1
            else:
                reported += 1
            states[slot] = _REPORTED_RECEIVED
            self._received(slot, (arrival + offset) * 1000)
        self._update_delay_based(now)
        self._update_loss_based(lost, reported, now)

    def _unwrap(self, reference: float) -> float:
        """What to add to this feedback's arrival times to keep the receiver's clock going forward
        across the wrap of the 24-bit reference time."""
        if self._reference is not None:
            jump = reference - self._reference
            if jump < -_REFERENCE_SPAN / 2:
                self._wraps += _REFERENCE_SPAN
            elif jump > _REFERENCE_SPAN / 2:  # a late feedback from before the last wrap
                return self._wraps - _REFERENCE_SPAN
        self._reference = reference
        return self._wraps

    def _received(self, slot: int, arrival_ms: float) -> None:
        size = self._size[slot]
        if self._last_arrival_ms is not None and arrival_ms - self._last_arrival_ms > _ACKED_WINDOW_MS:
            # RateCounter empties its window one millisecond at a time: after a pause, start afresh.
            self._acked.reset()
        self._last_arrival_ms = arrival_ms
        self._acked.add(size, int(arrival_ms))
        timestamp = int(self._sent_at[slot] * _TIMESTAMP_UNITS) & 0xFFFFFFFF
        # aiortc's estimator (libwebrtc's of its time) counts whole milliseconds.
        arrival = int(arrival_ms)
        deltas = self._inter_arrival.compute_deltas(timestamp, arrival, size)
        if deltas is not None:
            sent_delta_ms = deltas.timestamp * TIMESTAMP_TO_MS
            self._kalman.update(deltas.arrival_time, sent_delta_ms, deltas.size, self._detector.state(), arrival)
            self._detector.detect(self._kalman.offset(), sent_delta_ms, self._kalman.num_of_deltas(), arrival)

    def _update_delay_based(self, now: float) -> None:
        if self._last_arrival_ms is None:
            return
        acked = self._acked.rate(int(self._last_arrival_ms))
        if acked is None:
            return
        usage = self._detector.state()
        if not self.acked_bitrate or usage == BandwidthUsage.OVERUSING:
            self.congested_at = now  # the acked bitrate counts only once a whole window follows this
        self.acked_bitrate = acked
        bitrate = self._aimd.update(usage, acked, int(now * 1000))
        if bitrate is None:
            return
        if acked > _PROBED * bitrate and now - self.congested_at > _ACKED_WINDOW_MS / 1000:
            # The path carried more than the estimate for a whole window with neither queueing nor
            # loss (padding probes, a layer tried higher): take that, as libwebrtc takes a probe's
            # result, rather than climbing to it at 8%/s.
            bitrate = self._loss_based = acked
        clamped = max(self.minimum, min(self.maximum, bitrate))
        if clamped != self._aimd.current_bitrate:
            self._aimd.set_estimate(clamped, int(now * 1000))
        self._delay_based = clamped

    def _update_loss_based(self, lost: int, reported: int, now: float) -> None:
        self._lost += lost
        self._reported += reported
        if self._reported >= _LOSS_SAMPLE:
            self.loss = max(0, self._lost) / self._reported
            self._lost = self._reported = 0
            if self.loss >= 0.02:
                self.congested_at = now
            if self.loss > 0.1:
                if now - self._decreased_at >= _LOSS_DECREASE_INTERVAL:
                    self._loss_based *= 1 - 0.5 * self.loss
                    self._decreased_at = now
            elif self.loss < 0.02 and self._loss_at is not None:
                self._loss_based *= 1.08 ** min(now - self._loss_at, 1.0)
            self._loss_at = now
        # Loss alone never lets the estimate past what the delay says the path carries.
        self._loss_based = max(self.minimum, min(self._loss_based, self._delay_based))
