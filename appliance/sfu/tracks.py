"""Published tracks: what a session pushes, found by (sessionId, trackName), who pulls it, and the
per-packet path of its media: from its upstream, through its streams' repair and statistics, to every
leg that forwards it.

A track's *upstream* is where its packets come from and where its feedback goes (keyframe requests,
NACKs, receiver reports): the publishing session's PeerConnection, or a trunk from another box
(appliance.cluster), which feeds the track through `receive` the same way.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from . import extensions
from .cache import RetransmissionCache
from .codecs import Codec
from .extensions import AUDIO_LEVEL
from .fanout import EXTENSION, fan_out
from .forward import Leg, payload_offset
from .losses import DUPLICATE, JUMP, LossTracker
from .stats import ReceiveStats
from .streams import PACKET_OVERHEAD, Stream
from .transport import TransportReceiver

if TYPE_CHECKING:  # they act on tracks' streams and import this module
    from .repair import Repair
    from .switching import LayerSwitcher

# At most one keyframe request per stream in this many seconds (aggregated PLI).
KEYFRAME_INTERVAL = 0.3


class Publisher(Protocol):
    """Whose track it is in the Calls API: a session of this box (a CallSession), or of another."""

    @property
    def id(self) -> str: ...

    @property
    def app(self) -> str: ...


class Upstream(Protocol):
    """Where a track's packets come from; the box's feedback on them goes back there as RTCP."""

    @property
    def rtcp_ssrc(self) -> int:
        """The SSRC the box's feedback toward it is sent from."""

    def send_rtcp(self, packet: bytes) -> bool: ...

    def request_keyframe(self, media_ssrc: int, force: bool) -> None:
        """Ask for a keyframe of `media_ssrc`; `force`: one that must not wait (a new subscriber)."""


@dataclass
class IngestCounters:
    """What the box drops of what publishers send, for /metrics."""

    unknown_ssrc: int = 0
    malformed: int = 0


class MediaPlane(Protocol):
    """The box's parts a track's packets pass through."""

    repair: Repair
    switcher: LayerSwitcher
    ingest: IngestCounters


@dataclass(eq=False)
class PublishedTrack:
    session: Publisher  # (session.id, name) finds it
    upstream: Upstream
    plane: MediaPlane
    name: str
    mid: str
    kind: str
    codecs: list[Codec]
    ssrcs: list[int]  # media SSRCs the publisher's SDP lists (none for RID simulcast)
    legs: list[Leg] = field(default_factory=list)  # every subscriber's leg, whichever stream it forwards
    extensions: dict[str, int] = field(default_factory=dict)  # the publisher's negotiated ids, by URI
    rids: list[str] = field(default_factory=list)  # simulcast layers, in the publisher's a=simulcast order
    rtx: dict[int, int] = field(default_factory=dict)  # the publisher's RTX payload type -> media payload type
    rtx_ssrcs: dict[int, int] = field(default_factory=dict)  # media SSRC -> its RTX SSRC (a=ssrc-group:FID)
    retransmissions: bool = True
    streams: list[Stream] = field(default_factory=list)
    level_id: int | None = None  # the publisher's id of the audio level extension
    reads_extensions: bool = False  # the audio level, or a leg that forwards extensions: read them per packet
    audio_level: int | None = None  # RFC 6464: the last level read, -dBov (0 loudest, 127 silence)
    closed: bool = False

    def __post_init__(self) -> None:
        clock = self.codecs[0].clock if self.codecs else 90000
        if self.rids:
            self.streams = [Stream(self, rid, None, clock, self.retransmissions) for rid in self.rids]
        else:
            ssrc = self.ssrcs[0] if self.ssrcs else None
            self.streams = [Stream(self, None, ssrc, clock, self.retransmissions)]
            self.streams[0].rtx_ssrc = self.rtx_ssrcs.get(ssrc) if ssrc is not None else None
        self.codec_names = {c.pt: c.name for c in self.codecs}
        self.vp8_pts = frozenset(pt for pt, name in self.codec_names.items() if name.lower() == "vp8")
        self.level_id = self.extensions.get(AUDIO_LEVEL)
        self.reads_extensions = self.level_id is not None

    @property
    def last_packet(self) -> float | None:
        """When the last packet of any of its streams arrived."""
        return max((s.last_packet for s in self.streams if s.last_packet is not None), default=None)

    @property
    def simulcast(self) -> bool:
        return bool(self.rids)

    def stream(self, rid: str | None) -> Stream | None:
        return next((s for s in self.streams if s.rid == rid), None)

    def receive(self, stream: Stream, packet: bytes, now: float) -> None:
        """One RTP packet of `stream` (already decrypted and demultiplexed by the upstream): repair
        and statistics, a waiting layer switch, then out on every leg that forwards the stream. The
        hot path: one call per packet, shared work done once for all legs; compiled where the
        extension is (its common case, the others through `receive_in_python`)."""
        if RECEIVE is not None:
            RECEIVE(self, stream, packet, now)
        else:
            self.receive_in_python(stream, packet, now)

    def receive_in_python(self, stream: Stream, packet: bytes, now: float) -> None:
        """What `receive` does, in Python."""
        seq = packet[2] << 8 | packet[3]
        ts = int.from_bytes(packet[4:8], "big")
        stream.last_packet = now
        stream.octets += len(packet) + PACKET_OVERHEAD
        losses, cache = stream.losses, stream.cache
        if losses is not None and cache is not None:
            state = losses.received(seq, now)
            if state == DUPLICATE:
                return
            cache.put(seq, packet, now)
            if state == JUMP:
                self.plane.repair.request_keyframe(stream, now)
            if losses.missing:
                self.plane.repair.nack_upstream(stream, now)
        stream.stats.update(seq, ts, now)
        if stream.waiting:
            self.plane.switcher.switch_at_keyframe(stream, packet, now)
        legs = stream.legs
        found = extensions.elements(packet) if self.reads_extensions else None
        if found and self.level_id in found:
            self.audio_level = found[self.level_id][0] & 0x7F
        if not legs:
            return
        offset = payload_offset(packet)
        if offset < 0:
            self.plane.ingest.malformed += 1
            return
        fan_out(legs, packet, packet[offset:], seq, ts, found, now)  # the payload cut once for every leg


# receive(track, stream, packet, now): PublishedTrack.receive; rtp(session, packet, now): CallSession.rtp
# (session.py). Compiled in _fanout.c, None without the extension or in a build from before them.
Receive = Callable[[PublishedTrack, Stream, bytes, float], None]
Rtp = Callable[[Any, bytes, float], None]


def _receive_path() -> tuple[Receive | None, Rtp | None]:
    if EXTENSION is None or not hasattr(EXTENSION, "receive"):
        return None, None
    EXTENSION.configure_receive(PublishedTrack, Stream, LossTracker, RetransmissionCache, ReceiveStats,
                                TransportReceiver)
    return EXTENSION.receive, EXTENSION.rtp


RECEIVE, RTP = _receive_path()
