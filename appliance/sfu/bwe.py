"""How fast the SFU may send to one subscriber: send-side Google Congestion Control
(draft-ietf-rmcat-gcc-02) driven by the subscriber's transport-wide congestion control feedback.

The delay-based part is aiortc's (rate.py, ported from libwebrtc's receive side): the send time
recorded here plays abs-send-time's part and the feedback's arrival time the arrival's, through
InterArrival (5 ms groups), the Kalman OveruseEstimator, the OveruseDetector with its adaptive
threshold and AimdRateControl, which keeps the estimate under 1.5 times the acked bitrate. The
loss-based part (section 6) is here; the estimate is the lower of the two."""
from __future__ import annotations

from array import array

from aiortc.rate import (BURST_DELTA_THRESHOLD_MS, INTER_ARRIVAL_SHIFT, MIN_FRAME_PERIOD_HISTORY_LENGTH,
                         TIMESTAMP_GROUP_LENGTH_MS, TIMESTAMP_TO_MS, AimdRateControl, BandwidthUsage, OveruseDetector,
                         OveruseEstimator)

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
_GROUP_LENGTH = (TIMESTAMP_GROUP_LENGTH_MS << INTER_ARRIVAL_SHIFT) // 1000  # in send-time units
_EMPTY_WINDOW = array("q", bytes(8 * _ACKED_WINDOW_MS))


class _Groups:
    """aiortc's InterArrival (rate.py) in one method: packets sent within 5 ms of a group's first (or
    arriving in a burst) join it; a packet that starts a new group gives the deltas between the two
    groups before it. Its state in slots rather than group objects: `add` runs for every packet
    every subscriber reports received."""

    __slots__ = ("first", "last", "arrival", "size", "previous")

    def __init__(self) -> None:
        self.first: int | None = None  # the current group's first and latest send time; None: no group yet
        self.last = self.arrival = self.size = 0
        self.previous: tuple[int, int, int] | None = None  # the group before: (last, arrival, size)

    def add(self, timestamp: int, arrival: int, size: int) -> tuple[int, int, int] | None:
        """(send time, arrival time, size) deltas of the last two complete groups, when `timestamp`
        starts a new group."""
        first, deltas = self.first, None
        if first is None:
            self.first = self.last = timestamp
        elif (timestamp - first) & 0xFFFFFFFF >= 0x80000000:
            return None  # out of order
        else:
            last = self.last
            sent_ms = round(TIMESTAMP_TO_MS * ((timestamp - last) & 0xFFFFFFFF))
            gap = arrival - self.arrival
            burst = sent_ms == 0 or (gap - sent_ms < 0 and gap <= BURST_DELTA_THRESHOLD_MS)
            if not burst and (timestamp - first) & 0xFFFFFFFF > _GROUP_LENGTH:
                previous = self.previous
                if previous is not None:
                    deltas = ((last - previous[0]) & 0xFFFFFFFF, self.arrival - previous[1], self.size - previous[2])
                self.previous = (last, self.arrival, self.size)
                self.first = self.last = timestamp
                self.size = 0
            elif (last < timestamp and timestamp - last < 0x80000000) or (
                    last > timestamp and last - timestamp > 0x80000000):
                self.last = timestamp  # later, modulo 2^32
        self.size += size
        self.arrival = arrival
        return deltas


class _Kalman(OveruseEstimator):
    """aiortc's OveruseEstimator, its shortest send-time delta of the last 60 taken with one `min`:
    its own loop of 60 `min` calls was most of an update, one per group of every subscriber."""

    def update_min_frame_period(self, ts_delta: float) -> float:
        history = self.ts_delta_hist
        if len(history) >= MIN_FRAME_PERIOD_HISTORY_LENGTH:
            del history[0]
        shortest = min(history, default=ts_delta)
        history.append(ts_delta)
        return min(shortest, ts_delta)


class _AckedRate:
    """aiortc's RateCounter (rate.py) over one second, in bit/s: bytes in 1 ms buckets. Its `add`
    runs for every packet every subscriber reports received; a gap clears what fell out of the
    window at once rather than one millisecond at a time. Its buckets are arrays that the compiled
    feedback (_fanout.transport_cc) updates too."""

    __slots__ = ("_counts", "_values", "_origin_index", "_origin_ms", "_count", "_value")

    def __init__(self) -> None:
        self._counts = array("q", _EMPTY_WINDOW)
        self._values = array("q", _EMPTY_WINDOW)
        self.reset()

    def reset(self) -> None:
        self._counts[:] = self._values[:] = _EMPTY_WINDOW
        self._origin_index = 0
        self._origin_ms: int | None = None
        self._count = self._value = 0

    def add(self, value: int, now_ms: int) -> None:
        origin = self._origin_ms
        if origin is None:
            self._origin_ms = origin = now_ms
        elif origin == now_ms - _ACKED_WINDOW_MS:
            # A millisecond later than the window holds, as is usual at a packet per millisecond: the
            # oldest bucket becomes the newest, which _erase_old does in its loop.
            index = self._origin_index
            counts, values = self._counts, self._values
            self._count += 1 - counts[index]
            self._value += value - values[index]
            counts[index], values[index] = 1, value
            self._origin_index = (index + 1) % _ACKED_WINDOW_MS
            self._origin_ms = origin + 1
            return
        elif origin < now_ms - _ACKED_WINDOW_MS:
            self._erase_old(now_ms)
            origin = now_ms - _ACKED_WINDOW_MS + 1
        index = (self._origin_index + now_ms - origin) % _ACKED_WINDOW_MS
        self._counts[index] += 1
        self._values[index] += value
        self._count += 1
        self._value += value

    def rate(self, now_ms: int) -> int | None:
        if self._origin_ms is None:
            return None
        self._erase_old(now_ms)
        active = now_ms - self._origin_ms + 1
        return round(8000 * self._value / active) if self._count > 0 and active > 1 else None

    def _erase_old(self, now_ms: int) -> None:
        """Move the window's start to `now_ms`'s window, emptying the buckets it passes."""
        origin = self._origin_ms
        start = now_ms - _ACKED_WINDOW_MS + 1
        if origin is None or origin >= start:
            return
        steps, counts, values, index = start - origin, self._counts, self._values, self._origin_index
        if steps >= _ACKED_WINDOW_MS:
            counts[:] = values[:] = _EMPTY_WINDOW
            self._count = self._value = 0
        else:
            for _ in range(steps):
                self._count -= counts[index]
                self._value -= values[index]
                counts[index] = values[index] = 0
                index = (index + 1) % _ACKED_WINDOW_MS
        self._origin_index = (self._origin_index + steps) % _ACKED_WINDOW_MS
        self._origin_ms = start


class SendSideEstimator:
    """sent() per packet on the hot path (four stores into preallocated arrays); feedback() per
    transport-cc feedback, about every 50-100 ms."""

    __slots__ = ("minimum", "maximum", "loss", "acked_bitrate", "_seq", "_sent_at", "_size", "_state",
                 "_groups", "_kalman", "_detector", "_aimd", "_acked", "_last_arrival_ms", "_reference",
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
        self._groups = _Groups()
        self._kalman = _Kalman()
        self._detector = OveruseDetector()
        self._aimd = AimdRateControl()
        self._aimd.set_estimate(initial, 0)
        self._acked = _AckedRate()
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
        """Once per report, and its loop once for each packet it reports: once for every packet sent,
        so written out in one function (the delay-based part inline up to the groups' deltas)."""
        offset = self._unwrap(fb.reference_time)
        seqs, states, sizes, sent_at = self._seq, self._state, self._size, self._sent_at
        acked, groups = self._acked, self._groups
        last_arrival_ms = self._last_arrival_ms
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
            arrival_ms = (arrival + offset) * 1000
            if last_arrival_ms is not None and arrival_ms - last_arrival_ms > _ACKED_WINDOW_MS:
                acked.reset()  # after a pause, start afresh, as RateCounter was made to
            last_arrival_ms = arrival_ms
            # aiortc's estimator (libwebrtc's of its time) counts whole milliseconds.
            whole_ms = int(arrival_ms)
            size = sizes[slot]
            acked.add(size, whole_ms)
            deltas = groups.add(int(sent_at[slot] * _TIMESTAMP_UNITS) & 0xFFFFFFFF, whole_ms, size)
            if deltas is not None:
                self._detect(deltas, whole_ms)
        self._last_arrival_ms = last_arrival_ms
        self._update_delay_based(now)
        self._update_loss_based(lost, reported, now)

    def fed_back(self, lost: int, reported: int, last_arrival_ms: float | None,
                 detections: list[tuple[tuple[int, int, int], int]], now: float) -> None:
        """The rest of `feedback` after the compiled per-packet loop (_fanout.transport_cc), which
        gives its counts, the latest arrival and the groups' deltas in order."""
        self._last_arrival_ms = last_arrival_ms
        for deltas, arrival_ms in detections:
            self._detect(deltas, arrival_ms)
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

    def _detect(self, deltas: tuple[int, int, int], arrival_ms: int) -> None:
        """Two groups' deltas (send time, arrival time, size) through the Kalman filter and the
        overuse detector."""
        sent_delta_ms = deltas[0] * TIMESTAMP_TO_MS
        self._kalman.update(deltas[1], sent_delta_ms, deltas[2], self._detector.state(), arrival_ms)
        self._detector.detect(self._kalman.offset(), sent_delta_ms, self._kalman.num_of_deltas(), arrival_ms)

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
