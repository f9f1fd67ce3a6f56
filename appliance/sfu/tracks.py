"""Published tracks: what a session pushes, found by (sessionId, trackName), and who pulls it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .codecs import Codec
from .forward import Leg

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
    last_keyframe_request: float = float("-inf")
    last_packet: float | None = None
    closed: bool = False

    @property
    def media_ssrc(self) -> int | None:
        return self.ssrcs[0] if self.ssrcs else None
