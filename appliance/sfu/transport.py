"""Transport-wide congestion control (draft-holmer-rmcat-transport-wide-cc-extensions-01) on both
sides of the box. Toward publishers the box is the receiver: it notes when each transport-wide
sequence number arrived and reports that every FEEDBACK_INTERVAL, so the publishing browser's own
congestion control (GCC) can raise its rate and turn on its simulcast layers. Toward subscribers it
is the sender: it numbers every packet of the session and feeds the subscriber's reports to a
send-side estimator (bwe.py), which the simulcast layer choice reads."""
from __future__ import annotations

import importlib
from array import array
from collections.abc import Callable
from types import NotImplementedType
from typing import TYPE_CHECKING

from . import feedback
from .bwe import RING, SendSideEstimator

if TYPE_CHECKING:  # forward.py imports this module's numbering
    from .forward import Leg

_SLOT = RING - 1

FEEDBACK_INTERVAL = 0.1  # libwebrtc's receivers report every 50-250 ms
MAX_REPORTED = 1000  # sequence numbers per feedback; older unreported ones are dropped


# transport_cc(ring, packet, at, end, estimator): the compiled per-packet part of a feedback (_fanout.c):
# (lost, reported, last arrival in ms, the groups' deltas with their arrival, the lost seqs the ring holds).
FedBack = tuple[int, int, float | None, list[tuple[tuple[int, int, int], int]], list[int]]
TransportCC = Callable[[object, bytes, int, int, SendSideEstimator], FedBack | NotImplementedType | None]
# transport_report(receiver, sender_ssrc, media_ssrc, max_reported): TransportReceiver.report compiled
# (_fanout.c), NotImplemented where the Python path must take it (as before tracks.py configured it).
TransportReport = Callable[["TransportReceiver", int, int, int], bytes | NotImplementedType | None]


def _compiled() -> tuple[Callable[..., object] | None, TransportCC | None, TransportReport | None]:
    """The compiled fan-out's holder of a sender's arrays (fanout.py), its feedback loop and the
    receiver's report, None without the extension."""
    try:
        extension = importlib.import_module("appliance.sfu._fanout")
    except ImportError:
        return None, None, None
    ring: Callable[..., object] = extension.Ring
    # None: a build from before them
    transport_cc: TransportCC | None = getattr(extension, "transport_cc", None)
    transport_report: TransportReport | None = getattr(extension, "transport_report", None)
    return ring, transport_cc, transport_report


_RING, _TRANSPORT_CC, _TRANSPORT_REPORT = _compiled()


class TransportReceiver:
    """A publisher's transport-wide sequence numbers and their arrival times."""

    __slots__ = ("ext_id", "arrivals", "next_seq", "highest", "count")

    def __init__(self, ext_id: int) -> None:
        self.ext_id = ext_id
        self.arrivals: dict[int, float] = {}  # unwrapped sequence number -> arrival time
        self.next_seq: int | None = None  # the first not reported yet
        self.highest = -1
        self.count = 0

    def arrived(self, seq: int, now: float) -> None:
        # Also done by the compiled receive path (_fanout.c): a change here is one
        # there (tests/unit/sfu/test_receive_compiled.py compares them).
        highest = self.highest
        if highest < 0:
            full = seq
        else:
            full = highest + ((seq - highest + 0x8000) & 0xFFFF) - 0x8000
        if self.next_seq is None:
            self.next_seq = full
        if full < self.next_seq:
            return  # reported as lost already
        self.arrivals[full] = now
        if full > highest:
            self.highest = full

    def report(self, sender_ssrc: int, media_ssrc: int) -> bytes | None:
        """The feedback for everything since the last report, or None when nothing arrived. Compiled
        where the extension is, as report_in_python."""
        if _TRANSPORT_REPORT is not None:
            done = _TRANSPORT_REPORT(self, sender_ssrc, media_ssrc, MAX_REPORTED)
            if not isinstance(done, NotImplementedType):
                return done
        return self.report_in_python(sender_ssrc, media_ssrc)

    def report_in_python(self, sender_ssrc: int, media_ssrc: int) -> bytes | None:
        # Also done by the compiled transport_report (_fanout.c): a change here is one there
        # (tests/unit/sfu/test_transport_report_compiled.py compares them).
        arrivals, next_seq = self.arrivals, self.next_seq
        if not arrivals or next_seq is None:
            return None
        start, end = max(next_seq, self.highest - MAX_REPORTED + 1), self.highest
        times = [arrivals.get(seq) for seq in range(start, end + 1)]
        reference = min(t for t in times if t is not None)
        self.next_seq = end + 1
        arrivals.clear()
        self.count = (self.count + 1) & 0xFF
        try:
            return feedback.transport_feedback_packet(sender_ssrc, media_ssrc, start, self.count, reference, times)
        except ValueError:  # arrivals seconds apart (a stalled publisher): start over next time
            return None


class TransportSender:
    """A subscriber session's transport-wide numbering and bandwidth estimate, and what each
    number carried: the feedback says which media packets were lost, so the box resends one
    whose NACK never came (a receive-only Chrome retries a NACK only after 100 ms)."""

    __slots__ = ("element", "seq", "estimator", "_legs", "_out_seqs", "_resends", "ring")

    def __init__(self, ext_id: int) -> None:
        self.element = ext_id << 4 | 1  # the one-byte header of a two-byte element
        self.seq = 0
        self.estimator = SendSideEstimator()  # which numbers its ring still holds is ours too
        self._legs: list[Leg | None] = [None] * RING
        self._out_seqs = array("H", bytes(2 * RING))
        self._resends = bytearray(RING)
        # What the compiled fan-out writes `carried`'s and the estimator's `sent`'s records through.
        estimator = self.estimator
        self.ring = (None if _RING is None else
                     _RING(self._out_seqs, self._resends, estimator._seq, estimator._sent_at, estimator._size,
                           estimator._state))

    def next(self) -> bytes:
        """The extension element for the next packet sent."""
        self.seq = seq = (self.seq + 1) & 0xFFFF
        return bytes((self.element, seq >> 8, seq & 0xFF))

    def carried(self, leg: Leg | None, out_seq: int, resend: bool) -> None:
        """The packet just numbered was `leg`'s `out_seq` (a retransmission when `resend`);
        None for padding."""
        slot = self.seq & _SLOT
        self._legs[slot] = leg
        self._out_seqs[slot] = out_seq
        self._resends[slot] = resend

    def fed_back(self, packet: bytes, at: int, end: int, now: float) -> list[tuple[Leg, int, bool]]:
        """The transport-cc feedback in packet[at:end] (feedback.transport_feedback_spans) through the
        estimator; what `lost` gives for it. Compiled where the extension is, as the Python path."""
        ring = self.ring
        if ring is not None and _TRANSPORT_CC is not None:
            done = _TRANSPORT_CC(ring, packet, at, end, self.estimator)
            if done is None:  # malformed
                return []
            if isinstance(done, tuple):  # else values only Python's integers hold: the Python path
                lost, reported, last_arrival_ms, detections, lost_seqs = done
                self.estimator.fed_back(lost, reported, last_arrival_ms, detections, now)
                return self._unnoted(lost_seqs)
        report = feedback.transport_feedback_at(packet, at, end)
        if report is None:
            return []
        self.estimator.feedback(report, now)
        return self.lost(report)

    def _unnoted(self, seqs: list[int]) -> list[tuple[Leg, int, bool]]:
        """(leg, out_seq, was a retransmission) of each of `seqs` (reported lost, still held by the
        estimator) whose packet is noted, each once."""
        out = []
        legs = self._legs
        for seq in seqs:
            slot = seq & _SLOT
            leg = legs[slot]
            if leg is not None:
                out.append((leg, self._out_seqs[slot], bool(self._resends[slot])))
                legs[slot] = None
        return out

    def lost(self, report: feedback.TransportFeedback) -> list[tuple[Leg, int, bool]]:
        """(leg, out_seq, was a retransmission) of each noted packet the report says was lost,
        each once."""
        holds = self.estimator.holds
        return self._unnoted([seq for seq, arrival in report.packets if arrival is None and holds(seq)])
