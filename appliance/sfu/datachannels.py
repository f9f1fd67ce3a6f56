"""Data channels of the Calls API (CALLS_API.md 1.3 "DataChannels", section 4), sans-I/O: the
channels a session negotiated out of band, who publishes to whom, their stream ids, and the checks
of a `datachannels/new` batch. The SCTP association carrying them is `appliance.rtc.sctp`'s; the
router joining both is `appliance.sfu.channel_router`.

A `local` channel is one the client publishes on; a `remote` channel receives everything published
on a local channel of another session (its `source`). With `canReply`, one subscriber's messages go
back to the publisher only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ItemError, SfuError

if TYPE_CHECKING:  # a session holds its channels
    from .tracks import Publisher

# The channel `datachannels/establish` opens, always on stream 0 (CALLS_API.md 1.3).
SERVER_EVENTS = "server-events"
SERVER_EVENTS_ID = 0
# CALLS_API.md 4: a waitForAck subscriber's first message must arrive within this many seconds.
ACK_TIMEOUT = 30.0
# RFC 8831 6.5: stream ids run 0..65534 (65535 is reserved).
MAX_ID = 65534
# The reliability parameters are 16-bit on the wire of DCEP (RFC 8832 5.1) and in browsers.
MAX_RELIABILITY = 65535


@dataclass(eq=False)
class DataChannel:
    # Whose SCTP association carries it: a CallSession; or, for a channel published or received on
    # another box of the cluster, a stand-in that names the session (appliance.cluster.channels).
    session: Publisher
    id: int
    name: str
    location: str  # "local" (the client publishes) or "remote" (the client receives `source`)
    ordered: bool = True
    max_retransmits: int | None = None
    max_packet_life_time: int | None = None
    source: DataChannel | None = None  # remote: the publisher's local channel
    can_reply: bool = False  # remote: the client's messages go to the publisher
    # remote with waitForAck: nothing is delivered until the client's first message (consumed), which
    # must come before this time on the SFU's clock, else the channel ends (CALLS_API.md 4).
    ack_deadline: float | None = None
    subscribers: list[DataChannel] = field(default_factory=list)  # local: the remote channels it feeds
    closed: bool = False

    @property
    def ended(self) -> bool:
        """Closed, or fed by a publisher channel that is closed."""
        return self.closed or (self.source is not None and self.source.closed)

@dataclass(frozen=True)
class ChannelRequest:
    """One checked item of a `datachannels/new` batch."""

    name: str
    location: str
    session_id: str | None = None  # remote: the publisher's session
    ordered: bool = True
    max_retransmits: int | None = None
    max_packet_life_time: int | None = None
    can_reply: bool = False
    wait_for_ack: bool = False

    def result(self, channel_id: int | None = None) -> dict[str, str | int]:
        """The item as the API echoes it: the id on success, else the caller adds the error."""
        result: dict[str, str | int] = {"dataChannelName": self.name, "location": self.location}
        if self.session_id is not None:
            result["sessionId"] = self.session_id
        if channel_id is not None:
            result["id"] = channel_id
        return result


class SessionChannels:
    """One session's channels by stream id, and whether `server-events` was established.

    Ids are never reused within a session: a closed channel stays listed as inactive, and its
    stream may still be in reset while a new channel on the same id would be negotiated.
    """

    def __init__(self) -> None:
        self.by_id: dict[int, DataChannel] = {}
        self.server_events = False

    def __iter__(self):
        return iter(self.by_id.values())

    def get(self, channel_id: Any) -> DataChannel | None:
        return self.by_id.get(channel_id) if type(channel_id) is int else None

    def local(self, name: str) -> DataChannel | None:
        """The open local channel published under `name`."""
        return next((c for c in self.by_id.values() if c.location == "local" and c.name == name and not c.closed), None)

    def allocate(self, dtls_server: bool) -> int:
        """A free stream id of our DTLS role's parity (RFC 8832 6: the DTLS client opens even ids,
        the server odd ones), so a channel the client opens in band never lands on one of ours.
        Id 0 stays for `server-events`."""
        channel_id = 1 if dtls_server else 2
        while channel_id in self.by_id:
            channel_id += 2
        if channel_id > MAX_ID:
            raise ItemError("invalid_params", "this session has used up its data channel ids")
        return channel_id

    def add(self, channel: DataChannel) -> DataChannel:
        self.by_id[channel.id] = channel
        return channel


def batch_location(items: list) -> str:
    """The one location of a `datachannels/new` batch: all items local, or all remote."""
    locations = {item.get("location") if isinstance(item, dict) else None for item in items}
    location = locations.pop() if len(locations) == 1 else None
    if not items or location not in ("local", "remote"):
        raise SfuError(400, "invalid_params",
                       "dataChannels: expected at least one item, all with location \"local\" or all \"remote\"")
    return location


def parse_request(item: dict) -> ChannelRequest:
    """Check one item of a batch whose location `batch_location` settled."""
    name = item.get("dataChannelName")
    if not isinstance(name, str) or not name:
        raise ItemError("invalid_params", "dataChannelName: expected a non-empty string")
    location = item["location"]
    session_id = item.get("sessionId")
    if location == "remote" and not isinstance(session_id, str):
        raise ItemError("invalid_params", "a remote data channel needs the publisher's sessionId")
    ordered = item.get("ordered", True)
    can_reply = item.get("canReply", False)
    if not isinstance(ordered, bool) or not isinstance(can_reply, bool):
        raise ItemError("decoding_error", "ordered and canReply: expected booleans")
    if location == "local" and (can_reply or item.get("waitForAck")):
        raise ItemError("invalid_params", "canReply and waitForAck apply to remote data channels only")
    wait_for_ack = item.get("waitForAck", False)
    if not isinstance(wait_for_ack, bool):
        raise ItemError("decoding_error", "waitForAck: expected a boolean")
    max_retransmits = _reliability(item, "maxRetransmits")
    max_packet_life_time = _reliability(item, "maxPacketLifeTime")
    if max_retransmits is not None and max_packet_life_time is not None:
        raise ItemError("invalid_params", "maxRetransmits and maxPacketLifeTime exclude each other")
    return ChannelRequest(name, location, session_id if location == "remote" else None, ordered,
                          max_retransmits, max_packet_life_time, can_reply, wait_for_ack)


def _reliability(item: dict, key: str) -> int | None:
    value = item.get(key)
    if value is None:
        return None
    if type(value) is not int or not 0 <= value <= MAX_RELIABILITY:
        raise ItemError("invalid_params", f"{key}: expected an integer from 0 to {MAX_RELIABILITY}")
    return value


def item_error(result: dict, error: ItemError) -> dict:
    return {**result, "errorCode": error.code, "errorDescription": error.description}


def describe(channel: DataChannel, status: str) -> dict:
    """A channel as GET sessions/{id} lists it."""
    out = {"location": channel.location, "dataChannelName": channel.name, "id": channel.id, "status": status}
    if channel.source is not None:
        out["sessionId"] = channel.source.session.id
    return out
