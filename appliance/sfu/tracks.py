"""Published tracks: what a session pushes, found by (sessionId, trackName), and who pulls it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .codecs import Codec
from .extensions import AUDIO_LEVEL
from .forward import Leg
from .streams import Stream

# At most one keyframe request per stream in this many seconds (aggregated PLI).
KEYFRAME_INTERVAL = 0.3


@dataclass(eq=False)
class PublishedTrack:
    session: Any  # the publishing CallSession
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
