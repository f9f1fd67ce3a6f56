"""The RTP streams a published track arrives on: one, or one per simulcast layer (RID). Each
keeps what the box needs to repair and report it: the receiver statistics, the retransmission
cache and the losses it asks the publisher for, and the legs that currently forward it."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .cache import RetransmissionCache
from .losses import LossTracker
from .stats import ReceiveStats

if TYPE_CHECKING:  # a stream belongs to a track and feeds legs; those modules import this one
    from .forward import Leg
    from .tracks import PublishedTrack

# Bytes a packet costs on the wire beyond its RTP bytes (SRTP tag, UDP, IPv4 headers): counted in
# a layer's bitrate, since small packets pay it relatively more.
PACKET_OVERHEAD = 10 + 8 + 20


class Stream:
    __slots__ = ("track", "rid", "ssrc", "rtx_ssrc", "stats", "cache", "losses", "legs", "waiting", "octets",
                 "bitrate", "last_packet", "last_keyframe_request", "_octets_prior", "_rate_at")

    def __init__(self, track: PublishedTrack, rid: str | None, ssrc: int | None, clock_rate: int, retransmissions: bool) -> None:
        self.track = track
        self.rid = rid
        self.ssrc = ssrc  # None until the first packet names it (simulcast publishers signal RIDs, not SSRCs)
        self.rtx_ssrc: int | None = None
        self.stats = ReceiveStats(clock_rate)
        self.cache = RetransmissionCache.for_kind(track.kind) if retransmissions else None
        self.losses = LossTracker() if retransmissions else None
        self.legs: list[Leg] = []  # forwarding this stream now
        self.waiting: list[Leg] = []  # moving to this stream at its next keyframe
        self.octets = 0
        self.bitrate = 0.0  # bit/s on the wire, smoothed: what a subscriber needs to receive this layer
        self.last_packet: float | None = None
        self.last_keyframe_request = float("-inf")
        self._octets_prior = 0
        self._rate_at: float | None = None

    def restart(self) -> None:
        """The stream's source changed (a trunk re-attached elsewhere in its tree): its sequence
        numbers start over, so what the box cached and counted missing is forgotten."""
        if self.cache is not None:
            self.cache = RetransmissionCache.for_kind(self.track.kind)
        if self.losses is not None:
            self.losses = LossTracker()
        for leg in self.legs:
            leg.rebase = True

    def active(self, now: float, within: float = 1.0) -> bool:
        return self.last_packet is not None and now - self.last_packet <= within

    def measure(self, now: float) -> None:
        """Update `bitrate` from the octets since the last call (called about twice a second)."""
        if self._rate_at is not None and now > self._rate_at:
            rate = 8 * (self.octets - self._octets_prior) / (now - self._rate_at)
            # A layer's rate swings with each keyframe: smooth over a few seconds, follow rises faster.
            self.bitrate += (rate - self.bitrate) * (0.5 if rate > self.bitrate else 0.2)
        self._octets_prior, self._rate_at = self.octets, now
