"""Data channels across boxes: a subscriber on box B of a channel published on box A.

A's local channels are listed in the tracks bucket (kind "data", under `channel_key`). B's
`datachannels/new` for one of them makes a stand-in of it on B (a DataChannel whose session is a
RemoteSession), which B's subscriber channels take as their source, and asks A to relay. A adds a
subscriber channel whose session is a `TrunkTarget` (the box B) to its channel: the router hands
it each message, which goes to B over the trunk as a sealed datagram (trunk_port.DATA), once per
box whatever the number of subscribers there; B's router gives it to its subscribers. When A's
channel closes, B hears of it and ends its subscribers' channels, as on one box.

A subscriber with canReply on B answers the publisher on A the same way, its messages relayed to
A as replies. CALLS_API.md's one-replier rule holds per box: two boxes may each have a replier.
A message travels in pieces of at most PIECE bytes (no IP fragmentation inside the tunnel, and
messages up to the 256 KiB browsers allow); the receiving box puts them together, keeping at most
PARTIAL messages per box for at most PARTIAL_FOR seconds. Ordering and delivery are those of the
trunk (UDP datagrams between two boxes of one backbone): a lost piece loses its message.
"""
from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

from ..logs import get_logger
from ..rtc.sctp import Message
from ..sfu.channel_router import ChannelRouter
from ..sfu.datachannels import DataChannel
from ..sfu.session import CallSession
from .records import TrackRecord
from .store import TRACKS, key
from .trunk_port import TrunkPeer, TrunkPort
from .trunks import RemoteSession, Trunks

log = get_logger("cluster")

_HEADER = struct.Struct(">BHH")  # kind, session id length, channel name length
_PIECE = struct.Struct(">IHH")  # message number, piece index, piece count
PIECE = 1100  # bytes of a message per datagram: with the headers and AES-GCM, inside a VXLAN MTU
MAX_MESSAGE = 256 * 1024 + 1024  # what browsers send at most, and the names around it
PARTIAL, PARTIAL_FOR = 64, 2.0
TEXT, BINARY = 0, 1
REPLY = 2  # or'ed into the kind: a subscriber's message to the publisher


def channel_key(session_id: str, name: str) -> str:
    return key(f"{session_id}#channel#{name}")


@dataclass(frozen=True, eq=False)
class TrunkTarget:
    """Another box as the holder of a subscriber channel (its `session`)."""

    peer: TrunkPeer
    id: str = ""
    app: str = ""


def encode(session_id: str, name: str, message: Message, reply: bool = False) -> bytes:
    ids, label = session_id.encode(), name.encode()
    body = message.encode() if isinstance(message, str) else message
    kind = (TEXT if isinstance(message, str) else BINARY) | (REPLY if reply else 0)
    return _HEADER.pack(kind, len(ids), len(label)) + ids + label + body


def decode(payload: bytes) -> tuple[str, str, Message, bool]:
    """(session id, channel name, message, whether a reply); raises ValueError (UnicodeDecodeError
    is one) for a malformed payload."""
    try:
        kind, ids, label = _HEADER.unpack_from(payload)
    except struct.error as e:
        raise ValueError(f"a data datagram of {len(payload)} bytes: {e}") from None
    start = _HEADER.size
    session_id = payload[start:start + ids].decode()
    name = payload[start + ids:start + ids + label].decode()
    body = payload[start + ids + label:]
    return session_id, name, body.decode() if kind & ~REPLY == TEXT else body, bool(kind & REPLY)


def pieces(number: int, payload: bytes) -> list[bytes]:
    """`payload` (an encoded message) as the datagrams' contents that carry it."""
    count = max(1, -(-len(payload) // PIECE))
    return [_PIECE.pack(number & 0xFFFFFFFF, i, count) + payload[i * PIECE:(i + 1) * PIECE] for i in range(count)]


class Reassembly:
    """One sending box's messages being put together from their pieces (sans-I/O, bounded)."""

    def __init__(self) -> None:
        self.partial: dict[int, tuple[float, list[bytes | None]]] = {}

    def piece(self, data: bytes, now: float) -> bytes | None:
        """The whole message once its last missing piece is `data`; raises ValueError for a bad piece."""
        try:
            number, index, count = _PIECE.unpack_from(data)
        except struct.error as e:
            raise ValueError(f"a piece of {len(data)} bytes: {e}") from None
        if not index < count <= -(-MAX_MESSAGE // PIECE):
            raise ValueError(f"piece {index} of {count}")
        body = data[_PIECE.size:]
        if count == 1:
            return body
        for stale in [n for n, (at, _) in self.partial.items() if now - at > PARTIAL_FOR]:
            del self.partial[stale]
        started, parts = self.partial.get(number) or (now, [None] * count)
        if len(parts) != count:
            raise ValueError(f"piece {index} of {count}, of a message of {len(parts)}")
        parts[index] = body
        if all(part is not None for part in parts):
            self.partial.pop(number, None)
            return b"".join(part for part in parts if part is not None)
        if number not in self.partial and len(self.partial) >= PARTIAL:
            self.partial.pop(next(iter(self.partial)))
        self.partial[number] = (started, parts)
        return None


class TrunkChannels:
    """The router's RemoteChannels (sfu/remote.py), and the trunk's data handler."""

    def __init__(self, me: str, router: ChannelRouter, trunks: Trunks, port: TrunkPort,
                 sessions: Mapping[str, CallSession]) -> None:
        self.me = me
        self.router = router
        self.trunks = trunks
        self.port = port
        self.sessions = sessions
        self.stand_ins: dict[str, DataChannel] = {}  # channel key -> this box's stand-in
        self.parents: dict[str, TrunkPeer] = {}  # channel key -> the box its stand-in relays
        self.targets: dict[tuple[str, str], DataChannel] = {}  # (channel key, box) -> its subscriber here
        self.reassembly: dict[str, Reassembly] = {}  # by sending box
        self.sent = 0  # messages numbered so far
        self.unknown = 0

    # --- the router's seam ------------------------------------------------------------------------

    def find_channel(self, app: str, session_id: str, name: str, now: float) -> DataChannel | None:
        channel_id = channel_key(session_id, name)
        stand_in = self.stand_ins.get(channel_id)
        if stand_in is not None and not stand_in.closed:
            return stand_in if stand_in.session.app == app else None
        record = self.trunks.records.get(channel_id)
        if record is None or record.kind != "data" or record.app != app or record.owner == self.me:
            return None
        parent = self.trunks.peer_of(record.owner)  # its datagrams are taken only from a known peer
        if parent is None:
            return None
        stand_in = DataChannel(RemoteSession(session_id, app), -1, name, "local")
        self.stand_ins[channel_id] = stand_in
        self.parents[channel_id] = parent
        message = {"op": "subscribe_channel", "from": self.me, "session": session_id, "name": name}
        self.trunks.ask(record.owner, message, lambda reply, at: self._answered(channel_id, reply))
        return stand_in

    def _answered(self, channel_id: str, reply: dict | None) -> None:
        stand_in = self.stand_ins.get(channel_id)
        if stand_in is not None and (reply is None or not reply.get("ok")):
            log.info("remote data channel refused", channel=stand_in.name, reason=(reply or {}).get("error"))
            self._end_stand_in(channel_id)

    def channel_published(self, channel: DataChannel) -> None:
        session = channel.session
        record = TrackRecord(session.app, session.id, channel.name, "data", self.me)
        self.trunks.write(TRACKS, channel_key(session.id, channel.name), record.encode())

    def channel_ended(self, channel: DataChannel) -> None:
        session = channel.session
        if isinstance(session, TrunkTarget):  # a box's subscription ended with the channel it fed
            source = channel.source
            if source is not None:
                channel_id = channel_key(source.session.id, source.name)
                self.targets.pop((channel_id, session.peer.node), None)
                self.trunks.ask(session.peer.node, {"op": "channel_closed", "session": source.session.id,
                                                     "name": source.name}, lambda reply, at: None)
        elif isinstance(session, RemoteSession):  # this box's stand-in ended
            self.stand_ins.pop(channel_key(session.id, channel.name), None)
            self.parents.pop(channel_key(session.id, channel.name), None)
        elif channel.location == "local" and isinstance(session, CallSession):
            if session.id not in self.trunks.leaving:
                self.trunks.write(TRACKS, channel_key(session.id, channel.name), None)

    def relay(self, target: DataChannel, message: Message) -> bool:
        session, source = target.session, target.source
        if isinstance(session, TrunkTarget) and source is not None:  # to subscribers on another box
            return self._send(session.peer, encode(source.session.id, source.name, message))
        parent = self.parents.get(channel_key(session.id, target.name)) if isinstance(session, RemoteSession) else None
        if parent is not None:  # a reply, to the publisher on another box
            return self._send(parent, encode(session.id, target.name, message, reply=True))
        return False

    def _send(self, peer: TrunkPeer, payload: bytes) -> bool:
        self.sent += 1
        return all([self.port.send_data(peer, piece) for piece in pieces(self.sent, payload)])

    # --- requests from other boxes ----------------------------------------------------------------

    def handle(self, request: dict) -> dict:
        op = request.get("op")
        session_id, name = str(request.get("session")), str(request.get("name"))
        if op == "subscribe_channel":
            return self._subscribe(session_id, name, str(request.get("from")))
        if op == "channel_closed":
            self._end_stand_in(channel_key(session_id, name))
            return {"ok": True}
        return {"error": f"unknown op {op!r}"}

    def _subscribe(self, session_id: str, name: str, node: str) -> dict:
        session = self.sessions.get(session_id)
        source = session.datachannels.local(name) if session is not None else None
        peer = self.trunks.peer_of(node)
        if source is None or peer is None:
            return {"error": "not_found"}
        channel_id = channel_key(session_id, name)
        if (channel_id, node) not in self.targets:
            target = DataChannel(TrunkTarget(peer), -1, name, "remote", source=source)
            source.subscribers.append(target)
            self.targets[channel_id, node] = target
        return {"ok": True}

    # --- the trunk ----------------------------------------------------------------------------------

    def data(self, peer: TrunkPeer, datagram: bytes, now: float) -> None:
        try:
            payload = self.reassembly.setdefault(peer.node, Reassembly()).piece(datagram, now)
            if payload is None:
                return
            session_id, name, message, reply = decode(payload)
        except ValueError:
            self.unknown += 1
            return
        if reply:
            session = self.sessions.get(session_id)
            source = session.datachannels.local(name) if session is not None else None
            if source is None or (channel_key(session_id, name), peer.node) not in self.targets:
                self.unknown += 1
                return
            self.router.reply(source, message)
            return
        stand_in = self.stand_ins.get(channel_key(session_id, name))
        if stand_in is None or stand_in.closed:
            self.unknown += 1
            return
        self.router.forward(stand_in, message)

    def _end_stand_in(self, channel_id: str) -> None:
        stand_in = self.stand_ins.pop(channel_id, None)
        self.parents.pop(channel_id, None)
        if stand_in is not None and not stand_in.closed:
            self.router.end(stand_in)
