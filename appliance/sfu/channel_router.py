"""The SFU's data channels: the `datachannels/*` operations, each session's SCTP association, and
the forwarding of messages from a publisher's local channel to its subscribers' remote channels.

A session's association starts once its m=application is negotiated and its DTLS is connected,
whichever comes last (`sync`), and it opens every channel the session has. Messages are relayed
as they arrive, one by one and in arrival order, so an ordered channel stays ordered end to end.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from ..rtc.port import Session as PortSession
from ..rtc.sctp import Message
from . import sdp
from .datachannels import (
    ACK_TIMEOUT, SERVER_EVENTS, SERVER_EVENTS_ID, ChannelRequest, DataChannel, batch_location, describe, item_error,
    parse_request,
)
from .errors import ItemError, SfuError
from .journal import journaled
from .remote import RemoteChannels
from .session import CallSession, Transceiver
from .tracks import Publisher

# RFC 8841 5: the SCTP port when the remote m=application has no a=sctp-port.
DEFAULT_SCTP_PORT = 5000


class Association(Protocol):
    """One session's SCTP association, as the router drives it (the shell's sctp.py runs it)."""

    def open(self, channel: DataChannel) -> None: ...

    def receive(self, data: bytes) -> bool: ...

    def close(self, channel_id: int) -> None: ...

    def state(self, channel_id: int) -> str | None: ...

    def send(self, channel_id: int, message: Message) -> bool: ...

    def stop(self) -> None: ...


# (the session's port session, the remote SCTP port, its a=max-message-size, where messages go) -> an association
Associate = Callable[[PortSession, int, int | None, Callable[[DataChannel, Message], None]], Association]


class ChannelRouter:
    """Owns the sessions' associations (made by `associate`, the shell's) and the relaying between
    channels; finds publishers in `sessions` (the SFU's)."""

    def __init__(self, associate: Associate, sessions: Mapping[str, CallSession]) -> None:
        self.associate = associate
        self.sessions = sessions
        self.associations: dict[Publisher, Association] = {}
        self.dropped = 0  # SCTP packets and messages that had nowhere to go, for /metrics
        # Channels on other boxes of the cluster, when the box is part of one (appliance.cluster).
        self.remote: RemoteChannels | None = None

    # --- the m=application section --------------------------------------------------------------

    @staticmethod
    def section(session: CallSession) -> Transceiver | None:
        """The session's m=application, if it has one that is not closed."""
        return session.application()

    def answer_section(self, session: CallSession, offered: sdp.RemoteSection) -> Transceiver:
        """What the SFU answers to an offered m=application: its own, unless the offer rejects it or
        the session has one already (BUNDLE carries one SCTP association)."""
        if offered.rejected or self.section(session) is not None:
            return Transceiver(sdp.LocalSection(offered.mid, "application", "inactive", rejected=True), "idle")
        return Transceiver(_application(offered.mid), "data")

    @staticmethod
    def offer_section(session: CallSession) -> Transceiver:
        """An m=application in an SFU offer, waiting for the client's answer."""
        return Transceiver(_application(session.next_mid()), "data", pending=True)

    # --- the association ------------------------------------------------------------------------

    def sync(self, session: CallSession) -> None:
        """After DTLS connects and after every description: start the association when the
        m=application is agreed on a connected session; stop it when the section is gone."""
        transceiver = self.section(session)
        association = self.associations.get(session)
        if transceiver is None:
            if association is not None:
                del self.associations[session]
                association.stop()
            return
        if association is not None or transceiver.pending or session.connected_at is None or session.closed:
            return
        remote = session.remote.section(transceiver.mid) if session.remote is not None else None
        if remote is None or remote.rejected or session.port_session is None:
            return
        association = self.associate(session.port_session, remote.sctp_port or DEFAULT_SCTP_PORT,
                                     remote.max_message_size, self._message)
        self.associations[session] = association
        for channel in session.datachannels:
            if not channel.ended:
                association.open(channel)

    def receive(self, session: CallSession, data: bytes) -> None:
        """An SCTP packet from the session's DTLS."""
        association = self.associations.get(session)
        if association is None or not association.receive(data):
            self.dropped += 1

    def close_session(self, session: CallSession) -> None:
        association = self.associations.pop(session, None)
        for channel in session.datachannels:
            if not channel.closed:
                self.end(channel)
        if association is not None:
            association.stop()

    # --- the API ----------------------------------------------------------------------------------

    @staticmethod
    def check_transport(session: CallSession) -> None:
        """Channels need the session's SCTP association, which rides its DTLS association: a session
        carried on from a failed box has neither here, and channels asked of it would never open."""
        if session.datachannels_lost:
            raise SfuError(409, "transport_unavailable_error",
                           "this session was carried on from another box that failed; its DTLS and SCTP "
                           "association stayed there, so it carries no data channels: open them on a new "
                           "session with a PeerConnection of its own")

    @classmethod
    def check_establish(cls, session: CallSession) -> None:
        """`server-events` is established once per session; a repeat is refused before anything else."""
        cls.check_transport(session)
        if session.datachannels.server_events:
            raise SfuError(400, "decoding_error", f"{SERVER_EVENTS} is already established on this session")

    def establish(self, session: CallSession) -> dict:
        """The reserved `server-events` channel (stream 0)."""
        channels = session.datachannels
        channels.server_events = True
        self._open(channels.add(DataChannel(session, SERVER_EVENTS_ID, SERVER_EVENTS, "remote")))
        return {"dataChannelName": SERVER_EVENTS, "id": SERVER_EVENTS_ID}

    @journaled("channels.new")
    def new(self, session: CallSession, items: list, now: float) -> list[dict]:
        """`datachannels/new`: per-item results, each with the id the client negotiates."""
        self.check_transport(session)
        batch_location(items)
        # Our DTLS role as `Sfu._set_remote` settles it; before any description, the SFU will offer
        # actpass and browsers answer active, which makes it the server.
        dtls_server = session.remote is None or session.remote.setup != "passive"
        results = []
        for item in items:
            try:
                request = parse_request(item)
            except ItemError as e:
                echo = {k: item[k] for k in ("dataChannelName", "location", "sessionId") if k in item}
                results.append(item_error(echo, e))
                continue
            try:
                results.append(request.result(self._add(session, request, dtls_server, now).id))
            except ItemError as e:
                results.append(item_error(request.result(), e))
        return results

    @journaled("channels.close")
    def close(self, session: CallSession, items: list) -> list[dict]:
        """`datachannels/close`: results matched by id; no SDP changes."""
        results = []
        for item in items:
            channel_id = item.get("id") if isinstance(item, dict) else None
            channel = session.datachannels.get(channel_id)
            if channel is None or channel.closed:
                results.append(item_error({"id": channel_id}, ItemError(
                    "close_track_error", "DataChannel doesn't exist or was already closed")))
                continue
            self.end(channel)
            results.append({"id": channel_id})
        return results

    @journaled("channels.update")
    def update(self, session: CallSession, items: list) -> list[dict]:
        """`datachannels/update`: `canReply` on remote channels, matched by id. Granting it to one
        subscriber takes it from the publisher channel's previous replier."""
        results = []
        for item in items:
            channel_id = item.get("id") if isinstance(item, dict) else None
            try:
                channel = session.datachannels.get(channel_id)
                if channel is None or channel.ended or channel.source is None:
                    raise ItemError("update_track_error", "no open remote DataChannel with this id")
                can_reply = item.get("canReply")
                if not isinstance(can_reply, bool):
                    raise ItemError("decoding_error", "canReply: expected a boolean")
                self._set_reply(channel, can_reply)
                results.append({"id": channel_id, "dataChannelName": channel.name, "location": "remote",
                                "sessionId": channel.source.session.id, "canReply": can_reply})
            except ItemError as e:
                results.append(item_error({"id": channel_id}, e))
        return results

    def describe(self, session: CallSession) -> list[dict]:
        # A session carried on from another box has no SCTP association: its channels ended there.
        return [describe(channel, "inactive" if session.datachannels_lost else self._status(channel))
                for channel in session.datachannels]

    # --- inside -----------------------------------------------------------------------------------

    def _add(self, session: CallSession, request: ChannelRequest, dtls_server: bool, now: float) -> DataChannel:
        channels = session.datachannels
        source = None
        if request.location == "local":
            if channels.local(request.name) is not None:
                raise ItemError("repeated_local_track_error",
                                f"this session already publishes a DataChannel named {request.name!r}")
        else:
            source = self._published(session, request, now)
        channel = channels.add(DataChannel(
            session, channels.allocate(dtls_server), request.name, request.location, request.ordered,
            request.max_retransmits, request.max_packet_life_time, source))
        if source is None and self.remote is not None:
            self.remote.channel_published(channel)
        if source is not None:
            source.subscribers.append(channel)
            self._set_reply(channel, request.can_reply)
            if request.wait_for_ack:
                channel.ack_deadline = now + ACK_TIMEOUT
        self._open(channel)
        return channel

    def _published(self, session: CallSession, request: ChannelRequest, now: float) -> DataChannel:
        publisher = self.sessions.get(request.session_id) if request.session_id is not None else None
        channel = None
        if publisher is not None and publisher.app == session.app and not publisher.closed:
            channel = publisher.datachannels.local(request.name)
        elif publisher is None and request.session_id is not None and self.remote is not None:
            channel = self.remote.find_channel(session.app, request.session_id, request.name, now)
        if channel is None:
            raise ItemError("not_found_track_error", "DataChannel not found on remote peer. Make sure the publisher "
                                                     "created a local DataChannel of this name")
        return channel

    @staticmethod
    def _set_reply(channel: DataChannel, can_reply: bool) -> None:
        # CALLS_API.md 4: at most one subscriber per publisher channel may reply.
        if can_reply and channel.source is not None:
            for other in channel.source.subscribers:
                other.can_reply = False
        channel.can_reply = can_reply

    def _open(self, channel: DataChannel) -> None:
        association = self.associations.get(channel.session)
        if association is not None:
            association.open(channel)

    def end(self, channel: DataChannel) -> None:
        """Close a channel: its stream is reset, and a publisher's channel ends its subscribers'."""
        channel.closed = True
        ended = [channel, *channel.subscribers]
        channel.subscribers.clear()
        if channel.source is not None and channel in channel.source.subscribers:
            channel.source.subscribers.remove(channel)
        for each in ended:
            association = self.associations.get(each.session)
            if association is not None:
                association.close(each.id)
            # The cluster hears of a channel ending here, and of subscribers on other boxes losing it.
            if self.remote is not None and (each is channel or not isinstance(each.session, CallSession)):
                self.remote.channel_ended(each)

    def sweep(self, session: CallSession, now: float) -> None:
        """End the session's waitForAck channels whose acknowledgement did not come in time."""
        for channel in list(session.datachannels):
            if channel.ack_deadline is not None and now > channel.ack_deadline and not channel.closed:
                self.end(channel)

    def _status(self, channel: DataChannel) -> str:
        association = self.associations.get(channel.session)
        state = None if association is None else association.state(channel.id)
        if channel.ended or state in ("closing", "closed"):
            return "inactive"
        return "active" if state == "open" else "initializing"

    def _message(self, channel: DataChannel, message: Message) -> None:
        """A message the client sent on `channel`: a publisher's goes to every subscriber, the
        replying subscriber's to the publisher; anything else is one-way and dropped."""
        if channel.location == "local":
            targets = [c for c in channel.subscribers if c.ack_deadline is None]
        elif channel.ack_deadline is not None:
            channel.ack_deadline = None  # the acknowledgement: consumed, and delivery starts
            return
        elif channel.can_reply and not channel.ended and channel.source is not None:
            targets = [channel.source]
        else:
            self.dropped += 1
            return
        self._deliver(targets, message)

    def forward(self, source: DataChannel, message: Message) -> None:
        """A message of a local channel published on another box (`source` its stand-in here),
        to this box's subscribers of it."""
        self._deliver([c for c in source.subscribers if c.ack_deadline is None], message)

    def reply(self, source: DataChannel, message: Message) -> None:
        """A reply to this box's publisher channel `source` from a subscriber on another box."""
        self._deliver([source], message)

    def _deliver(self, targets: list[DataChannel], message: Message) -> None:
        for target in targets:
            association = self.associations.get(target.session)
            if association is not None:
                sent = association.send(target.id, message)
            else:
                sent = self.remote is not None and self.remote.relay(target, message)
            if not sent:
                self.dropped += 1


def _application(mid: str) -> sdp.LocalSection:
    """The SFU's m=application: its SCTP association listens on the default port."""
    return sdp.LocalSection(mid, "application", "sendrecv", sctp_port=DEFAULT_SCTP_PORT)
