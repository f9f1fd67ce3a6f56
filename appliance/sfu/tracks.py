"""Published tracks: what a session pushes, found by (sessionId, trackName), and who pulls it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .codecs import Codec
from .forward import Leg
from .stats import ReceiveStats

# At most one keyframe request per source in this many seconds (issue 4: aggregated PLI).
KEYFRAME_INTERVAL = 0.3


@dataclass(eq=False)
class PublishedTrack:
    session: Any  # the publishing CallSession
    name: str
    mid: str
    kind: str
    codecs: list[Codec]
    ssrcs: list[int]
    legs: list[Leg] = field(default_factory=list)
    stats: ReceiveStats | None = None  # of the media SSRC, for the SFU's receiver reports
    extensions: dict[str, int] = field(default_factory=dict)  # the publisher's negotiated ids, by URI
    forwards_extensions: bool = False  # some leg maps an extension: read them per packet
    last_keyframe_request: float = float("-inf")
    last_packet: float | None = None
    closed: bool = False

    def __post_init__(self) -> None:
        self.stats = ReceiveStats(self.codecs[0].clock if self.codecs else 90000)

    @property
    def media_ssrc(self) -> int | None:
        return self.ssrcs[0] if self.ssrcs else None
