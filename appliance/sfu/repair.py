"""Repairing what a network breaks: keyframe requests toward publishers, subscribers' NACKs
answered from the retransmission cache, and the box's own NACKs upstream."""
from __future__ import annotations

from dataclasses import dataclass

from . import feedback as rtcp_feedback
from .forward import Leg
from .streams import Stream
from .tracks import KEYFRAME_INTERVAL


@dataclass
class RepairCounters:
    """Retransmissions and keyframe requests, for /metrics."""

    nacked_by_subscribers: int = 0  # sequence numbers subscribers asked for
    retransmitted: int = 0  # answered from the cache
    resent_unasked: int = 0  # resent because transport-wide feedback showed it lost and no NACK came
    not_cached: int = 0  # asked for but not in the cache (never received, or too old)
    nacked_upstream: int = 0  # sequence numbers the box asked its publishers for
    given_up: int = 0  # lost packets no retransmission recovered in time


class Repair:
    """The only writer of its counters. Asks a stream's upstream for keyframes and retransmissions
    (RTCP through the track's Upstream), answers a leg's NACKs through the leg."""

    def __init__(self) -> None:
        self.counters = RepairCounters()

    def request_keyframe(self, stream: Stream, now: float, force: bool = False) -> None:
        """Ask the publisher for a keyframe on `stream`, at most once per KEYFRAME_INTERVAL
        unless `force` (a new subscriber cannot wait)."""
        track = stream.track
        if track.kind != "video" or stream.ssrc is None:
            return
        if not force and now - stream.last_keyframe_request < KEYFRAME_INTERVAL:
            return
        stream.last_keyframe_request = now
        track.upstream.request_keyframe(stream.ssrc, force)

    def keyframe_for(self, leg: Leg, now: float) -> None:
        """A keyframe at once for what the leg forwards or waits for (a new subscriber, a new layer)."""
        stream = leg.target or leg.stream
        if stream is not None:
            self.request_keyframe(stream, now, force=True)

    def answer_nack(self, leg: Leg, seqs: list[int], now: float) -> None:
        """A subscriber's NACK: resend from the cache what the box has. What it never received
        is already asked of the publisher (`nack_upstream`) and reaches every leg when it comes."""
        counters = self.counters
        counters.nacked_by_subscribers += len(seqs)
        stream = leg.stream
        cache = stream.cache if stream is not None else None
        for out_seq in seqs:
            seq = leg.source_seq(out_seq)
            packet = cache.get(seq, now) if cache is not None and seq is not None else None
            if packet is None:
                counters.not_cached += 1
            elif leg.retransmit(packet, out_seq, now):
                counters.retransmitted += 1

    def resend_lost(self, leg: Leg, out_seq: int, was_resend: bool, now: float) -> None:
        """Transport-wide feedback says the subscriber lost this packet. A NACK for it normally
        came first (it is sent on the gap, the feedback every 50-100 ms) and was answered; if
        none came, or the copy sent for it was lost too, resend without waiting for the
        subscriber's next NACK."""
        if (not was_resend and out_seq in leg.resent) or leg.stream is None or leg.stream.cache is None:
            return
        seq = leg.source_seq(out_seq)
        packet = leg.stream.cache.get(seq, now) if seq is not None else None
        if packet is not None and leg.retransmit(packet, out_seq, now):
            self.counters.resent_unasked += 1

    def nack_upstream(self, stream: Stream, now: float) -> None:
        """NACK the publisher for the stream's new gaps and due retries; a loss given up on costs
        a keyframe instead (video)."""
        if stream.losses is None:
            return
        seqs, given_up = stream.losses.nacks(now)
        upstream = stream.track.upstream
        if seqs and stream.ssrc is not None:
            self.counters.nacked_upstream += len(seqs)
            upstream.send_rtcp(rtcp_feedback.nack(upstream.rtcp_ssrc, stream.ssrc, seqs))
        if given_up:
            self.counters.given_up += given_up
            self.request_keyframe(stream, now)
