"""The SFU's seam toward the rest of a cluster (appliance.cluster implements it): tracks published on
other boxes, found by (sessionId, trackName) and received over a trunk; what this box publishes and
which sessions it holds, told so that other boxes can find them; the legs it sends other boxes.
A box with no cluster part leaves `Sfu.remote` None: an island."""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from ..rtc.sctp import Message

if TYPE_CHECKING:
    from .datachannels import DataChannel
    from .forward import Leg
    from .session import CallSession
    from .tracks import PublishedTrack


class Remote(Protocol):
    def find(self, app: str, session_id: str, name: str, now: float) -> PublishedTrack | None:
        """A track of `app` published on another box, ready to take legs (its trunk is asked for
        if this box does not receive it yet), or None when no box of the cluster publishes it."""

    def published(self, track: PublishedTrack) -> None: ...

    def ended(self, track: PublishedTrack) -> None: ...

    def opened(self, session: CallSession) -> None: ...

    def closed(self, session: CallSession) -> None: ...

    def changed(self, session: CallSession) -> None:
        """A Calls operation changed the session: what rebuilds it elsewhere is new."""

    def tracks(self) -> Iterable[PublishedTrack]:
        """The remote tracks this box receives (their streams are reported on and measured)."""

    def legs(self) -> Iterable[Leg]:
        """The legs this box sends other boxes."""

    def adapt(self, now: float) -> None:
        """After the SFU chose its legs' layers: receive the layers they need."""

    def sweep(self, now: float) -> None:
        """Let go of trunks no subscriber needs any more."""


class RemoteChannels(Protocol):
    """Data channels across boxes: a local channel published on another box, received here through
    a stand-in (the source of this box's subscribers' channels), and the channels of other boxes
    that receive this box's local channels (subscribers whose session is a stand-in too)."""

    def find_channel(self, app: str, session_id: str, name: str, now: float) -> DataChannel | None:
        """The stand-in for a local channel `name` of a session on another box, or None."""

    def channel_published(self, channel: DataChannel) -> None: ...

    def channel_ended(self, channel: DataChannel) -> None:
        """A local channel closed, or a subscriber channel whose session is another box's."""

    def relay(self, target: DataChannel, message: Message) -> bool:
        """Send `message` to `target`, a channel whose session is on another box."""
