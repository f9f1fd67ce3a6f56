"""Cascading trees per track: one copy of a track per receiving box, fanned out there.

A box whose client pulls a track published on another box makes a *remote track*: a PublishedTrack
like any other (its subscribers' legs, cache, loss tracking and reports are the SFU's own), whose
upstream is a trunk. It asks the track's root (the publisher's box, from the tracks bucket) to send
it the track's layers on SSRCs it chose. A box that already sends the track to `fanout` boxes
answers with a redirect to one of them instead, so the tree deepens rather than widening at the
root; any box that receives a track can serve it onward, since trunk legs attach to remote tracks
as they do to local ones.

Repair is per hop: each box caches what its trunk brings and answers its own subscribers' NACKs;
its losses are NACKed to its parent once; keyframe requests aggregate per stream at each box
(tracks.KEYFRAME_INTERVAL); each hop reports receiving statistics to its parent.

When a parent box dies, its children re-attach at the root (which may redirect them again) and
restart their streams, asking for a keyframe. When the root dies or the track ends, the remote
track ends: its subscribers see what they see on one box (a BYE, the pull inactive).

Sans-I/O: requests to other boxes go out through `ask` (the shell sends them and calls back with
the answer), store writes through `write`; `now` is passed in.
"""
from __future__ import annotations

import base64
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol

from ..logs import get_logger
from ..sfu import extensions, rtcp
from ..sfu.forward import Leg
from ..sfu.journal import Moved
from ..sfu.leg_feedback import from_receiver
from ..sfu.repair import Repair
from ..sfu.session import CallSession
from ..sfu.switching import LayerSwitcher
from ..sfu.tracks import IngestCounters, PublishedTrack
from .nodes import Membership
from .records import SessionRecord, TrackRecord, path_key, track_key
from .seal import Sealer
from .store import MEDIA, SESSIONS, TRACKS, Bucket
from .trunk_port import TrunkPeer, TrunkPort

log = get_logger("cluster")

# A remote track no subscriber has needed for this long is let go (its trunk torn down).
GRACE = 10.0
# An unanswered subscription is asked again after this long.
RETRY = 2.0
# A remote track whose root box left waits this long for another box to carry its session on.
ORPHANED_FOR = 10.0
# A simulcast layer no subscriber of the box has needed for this long stops crossing the trunk.
LAYER_GRACE = 10.0

Ask = Callable[[str, dict, Callable[[dict | None, float], None]], None]
Write = Callable[[Bucket, str, bytes | None], None]


class Plane(Protocol):
    """The parts of the SFU trunks act with (appliance.sfu.sfu.Sfu)."""

    sessions: dict[str, CallSession]
    repair: Repair
    switcher: LayerSwitcher
    ingest: IngestCounters
    retransmissions: bool

    def end_legs(self, track: PublishedTrack) -> None: ...


class DataHandler(Protocol):
    def data(self, peer: TrunkPeer, payload: bytes, now: float) -> None: ...


@dataclass(frozen=True)
class RemoteSession:
    """The publisher of a remote track, as the Calls API names it."""

    id: str
    app: str


class TrunkDownstream:
    """Another box as the receiver of a leg (forward.Downstream): no transport-wide feedback, no
    estimate (the backbone is provisioned), reports over the trunk."""

    __slots__ = ("port", "peer")

    def __init__(self, port: TrunkPort, peer: TrunkPeer) -> None:
        self.port = port
        self.peer = peer

    @property
    def port_session(self) -> TrunkPeer:
        return self.peer

    @property
    def transport_out(self) -> None:
        return None

    def bandwidth(self) -> float | None:
        return None

    def send_rtcp(self, packet: bytes) -> bool:
        return self.port.send_rtcp(self.peer, packet)


class RemoteTrack:
    """A track of another box that this box receives: the PublishedTrack its subscribers take, the
    parent it comes from (the root, or a box the root redirected to) and the SSRC this box chose
    for each layer. It is the track's Upstream: feedback goes to the parent over the trunk."""

    def __init__(self, record: TrackRecord, port: TrunkPort, plane: Plane, parent: TrunkPeer, now: float) -> None:
        self.record = record
        self.port = port
        self.parent = parent
        self.rtcp_ssrc = random.getrandbits(32)
        self.fir_seq = 0
        # The layers asked of the parent, and when each was last needed here.
        self.asked: set[str] = {rid for rid in record.rids} or {""}
        self.used: dict[str, float] = {rid: now for rid in self.asked}
        self.confirmed = False  # the parent accepted the subscription
        self.asked_at = now
        self.idle_since: float | None = now  # no leg takes it yet
        self.orphaned_at: float | None = None  # when its root box left, until a box carries its session on
        self.track = PublishedTrack(
            RemoteSession(record.session, record.app), self, plane, record.name, "", record.kind,
            record.codec_list(), [] if record.rids else [_new_ssrc()], extensions=dict(record.extensions),
            rids=list(record.rids), retransmissions=plane.retransmissions)
        for stream in self.track.streams:
            if stream.ssrc is None:
                stream.ssrc = _new_ssrc()
        self.attach(parent)

    @property
    def layers(self) -> dict[str, int]:
        """What to ask the parent for: each layer's RID ("" for a track of one stream) and SSRC,
        of the layers this box needs."""
        return {stream.rid or "": stream.ssrc for stream in self.track.streams
                if stream.ssrc is not None and (stream.rid or "") in self.asked}

    def needed(self, now: float) -> set[str]:
        """The layers this box's subscribers need: every layer while one of them follows its
        bandwidth (choosing needs each layer's rate), else those they receive, wait for or prefer,
        and those that stopped being needed less than LAYER_GRACE ago."""
        track = self.track
        if not track.simulcast:
            return {""}
        wanted: set[str] = set()
        for leg in track.legs:
            rid = leg.preferences.get("preferredRid")
            if rid is None:
                return {stream.rid or "" for stream in track.streams}
            wanted.add(rid)
            wanted.update(s.rid or "" for s in (leg.stream, leg.target, leg.probing) if s is not None)
        for rid in wanted:
            self.used[rid] = now
        return {rid for rid, at in self.used.items() if now - at <= LAYER_GRACE} | wanted

    def renumber(self, rids: set[str]) -> None:
        """New SSRCs for layers asked for again: the parent's new legs start a new sequence, which
        SRTP would take for replays on the SSRCs they had."""
        for stream in self.track.streams:
            if (stream.rid or "") in rids:
                if stream.ssrc is not None and self.parent.streams.get(stream.ssrc) is stream:
                    del self.parent.streams[stream.ssrc]
                stream.ssrc = _new_ssrc()
                self.parent.streams[stream.ssrc] = stream
                stream.restart()

    def attach(self, parent: TrunkPeer) -> None:
        self.parent.streams = {s: st for s, st in self.parent.streams.items() if st.track is not self.track}
        self.parent = parent
        for stream in self.track.streams:
            if stream.ssrc is not None:
                parent.streams[stream.ssrc] = stream

    def detach(self) -> None:
        for stream in self.track.streams:
            if stream.ssrc is not None and self.parent.streams.get(stream.ssrc) is stream:
                del self.parent.streams[stream.ssrc]

    def send_rtcp(self, packet: bytes) -> bool:
        return self.port.send_rtcp(self.parent, packet)

    def request_keyframe(self, media_ssrc: int, force: bool) -> None:
        """PLI, paced by each box; FIR for a new subscriber's, which no box along the tree holds back."""
        if force:
            self.fir_seq += 1
            self.send_rtcp(rtcp.fir(self.rtcp_ssrc, media_ssrc, self.fir_seq))
        else:
            self.send_rtcp(rtcp.pli(self.rtcp_ssrc, media_ssrc))


def _unlist(leg: Leg) -> None:
    """The trunk peer a leg sends to no longer finds it by its SSRC (for feedback)."""
    peer = leg.subscriber.port_session
    if isinstance(peer, TrunkPeer) and peer.legs.get(leg.ssrc) is leg:
        del peer.legs[leg.ssrc]


def _new_ssrc() -> int:
    return random.getrandbits(32) or 1


class Trunks:
    """The cluster's side of the SFU (sfu.remote.Remote) and the trunk port's handler."""

    def __init__(self, me: str, port: TrunkPort, plane: Plane, membership: Membership, fanout: int,
                 ask: Ask, write: Write, sealer: Sealer | None = None) -> None:
        self.me = me
        self.sealer = sealer  # the store's: session records carry sealed state and tags, not ufrags and addresses
        self.port = port
        self.plane = plane
        self.membership = membership
        self.fanout = fanout
        self.ask = ask
        self.write = write
        self.records: dict[str, TrackRecord] = {}  # the tracks bucket, as the watch keeps it
        self.remote: dict[str, RemoteTrack] = {}  # by track key
        # Who receives each track this box sends onward: node -> its legs (one per layer).
        self.children: dict[PublishedTrack, dict[str, list[Leg]]] = {}
        self._redirects = 0
        self.unknown_ssrc = 0
        # Sessions being handed to another box (handover.py): that box writes their records now.
        self.leaving: set[str] = set()
        # Where data channel messages from other boxes go (channels.py).
        self.channels: DataHandler | None = None
        # Per session handed over: its tracks' ids, their new root, and the boxes that received them.
        self.parked: dict[str, list[tuple[str, str, list[str]]]] = {}

    # --- the SFU's seam ---------------------------------------------------------------------------

    def find(self, app: str, session_id: str, name: str, now: float) -> PublishedTrack | None:
        track_id = track_key(session_id, name)
        remote = self.remote.get(track_id)
        if remote is not None and not remote.track.closed:
            return remote.track if remote.record.app == app else None
        record = self.records.get(track_id)
        if record is None or record.app != app or record.owner == self.me:
            return None
        parent = self.peer_of(record.owner)
        departed = self.membership.departed.get(record.owner) if parent is None else None
        if departed is not None:
            # Its root box left and no word of a new one came yet (a session taken over from that box
            # pulls it): pulled as an orphan, which re-attaches where its session is carried on.
            parent = self.port.peer(record.owner, departed.epoch, departed.trunk)
        if parent is None:
            return None
        remote = self.remote[track_id] = RemoteTrack(record, self.port, self.plane, parent, now)
        log.info("pulling a remote track", session=session_id, track=name, root=record.owner)
        if departed is not None:
            remote.orphaned_at = now
        else:
            self._subscribe(track_id, remote, now)
        return remote.track

    def published(self, track: PublishedTrack) -> None:
        self.write(TRACKS, track_key(track.session.id, track.name), TrackRecord.of(track, self.me).encode())

    def ended(self, track: PublishedTrack) -> None:
        if track.session.id not in self.leaving:
            self.write(TRACKS, track_key(track.session.id, track.name), None)
        self._drop_children(track)

    def opened(self, session: CallSession) -> None:
        self.changed(session)

    def changed(self, session: CallSession) -> None:
        """The session's record: its owner, its ufrag, and (sealed) what rebuilds it elsewhere."""
        state = None
        sealer = self.sealer
        if session.journal is not None and sealer is not None:
            state = base64.b64encode(sealer.seal(json.dumps(Moved.of(session).encode()).encode(),
                                               f"{SESSIONS.name}/{session.id}")).decode()
        port_session = session.port_session
        # The client's address finds the session when its media reaches another box (failover); a
        # third party's does not move (continuation.capture).
        addr = port_session.addr if port_session is not None and not session.thirdparty else None
        ufrag, path = session.ufrag, path_key(addr) if addr is not None else ""
        if sealer is not None:
            ufrag, path = sealer.tag(ufrag, "ufrag"), sealer.tag(path, "path") if path else ""
        record = SessionRecord(session.app, self.me, ufrag, state, path, session.generation)
        self.write(SESSIONS, session.id, record.encode())

    def closed(self, session: CallSession) -> None:
        if session.id not in self.leaving:
            self.write(SESSIONS, session.id, None)
            if session.connected_at is not None:
                self.write(MEDIA, session.id, None)

    def tracks(self) -> Iterator[PublishedTrack]:
        return (remote.track for remote in self.remote.values())

    def legs(self) -> Iterator[Leg]:
        return (leg for legs in self.children.values() for each in legs.values() for leg in each)

    def adapt(self, now: float) -> None:
        """With the SFU's layer choice (twice a second): ask the parents for the layers this box's
        subscribers need now, and let go of those they have not needed for LAYER_GRACE."""
        for track_id, remote in self.remote.items():
            if not remote.track.simulcast or remote.track.closed:
                continue
            needed = remote.needed(now)
            if needed and needed != remote.asked:
                remote.renumber(needed - remote.asked)
                remote.asked = needed
                self._subscribe(track_id, remote, now)

    def sweep(self, now: float) -> None:
        for track_id, remote in list(self.remote.items()):
            if remote.orphaned_at is not None and now - remote.orphaned_at > ORPHANED_FOR:
                log.info("no box carried a gone root's session on; remote track ended", track=remote.record.name)
                self._close(track_id, tell_parent=False)
                continue
            if remote.track.legs:
                remote.idle_since = None
            elif remote.idle_since is None:
                remote.idle_since = now
            elif now - remote.idle_since > GRACE:
                log.info("remote track no longer pulled; trunk released", track=remote.record.name)
                self._close(track_id, tell_parent=True)
                continue
            if remote.orphaned_at is None and not remote.confirmed and now - remote.asked_at > RETRY:
                self._subscribe(track_id, remote, now)

    # --- the store's watches ----------------------------------------------------------------------

    def track_record(self, track_id: str, data: bytes | None, now: float) -> None:
        """A change in the tracks bucket: a deletion ends the remote track (the publisher left); a
        new root (another box carries the publisher on) is where the remote track re-attaches."""
        if data is None:
            self.records.pop(track_id, None)
            if track_id in self.remote:
                self._close(track_id, tell_parent=False)
            return
        try:
            record = self.records[track_id] = TrackRecord.decode(data)
        except (ValueError, TypeError) as e:
            log.warning("unreadable track record", key=track_id, reason=str(e))
            return
        remote = self.remote.get(track_id)
        if remote is not None and record.owner not in (remote.record.owner, self.me):
            self._rooted_at(track_id, remote, record.owner, now)

    def node_gone(self, node: str, now: float) -> None:
        """A box left the cluster: what it sent this box re-attaches at the root (or ends, when it
        was the root), and what this box sent it stops."""
        peer = self.port.forget(node)
        for track_id, remote in list(self.remote.items()):
            if remote.parent.node != node:
                continue
            root = remote.record.owner
            if root == node:  # another box may carry the publisher's PeerConnection on (handover.py)
                remote.orphaned_at = now
                continue
            new_parent = self.peer_of(root)
            if new_parent is None:
                self._close(track_id, tell_parent=False)
                continue
            log.info("parent box gone; re-attaching at the root", track=remote.record.name, parent=node, root=root)
            self._reattach(track_id, remote, new_parent, now)
        if peer is not None:
            for track, legs in self.children.items():
                for leg in legs.pop(node, []):
                    self.plane.switcher.detach(leg)

    # --- requests from other boxes ----------------------------------------------------------------

    def handle(self, request: dict, now: float) -> dict:
        op = request.get("op")
        if op == "subscribe":
            return self._serve_subscribe(request, now)
        if op == "moved":
            return self._moved(request, now)
        if op == "unsubscribe":
            track = self._track(str(request.get("session")), str(request.get("name")))
            if track is not None:
                for leg in self.children.get(track, {}).pop(str(request.get("from")), []):
                    self._end_leg(leg)
            return {"ok": True}
        return {"error": f"unknown op {op!r}"}

    def _serve_subscribe(self, request: dict, now: float) -> dict:
        node = request.get("from")
        layers = request.get("layers")
        track = self._track(str(request.get("session")), str(request.get("name")))
        if track is None or track.closed:
            return {"error": "not_found"}
        if not isinstance(node, str) or node == self.me or not isinstance(layers, dict):
            return {"error": "bad request"}
        peer = self.peer_of(node)
        if peer is None:
            return {"error": f"node {node} is not a member of the cluster"}
        children = self.children.setdefault(track, {})
        if node not in children and len(children) >= self.fanout:
            # Only to a box still in the cluster (a dead child may not have been forgotten yet).
            ranked = sorted(child for child in children if self.membership.alive(child)) or sorted(children)
            self._redirects += 1
            return {"redirect": ranked[self._redirects % len(ranked)]}
        # The layers asked for now: those already sent go on as they are (their numbering unbroken),
        # the others start, and those no longer asked for end.
        kept = {leg.ssrc: leg for leg in children.pop(node, [])}
        wanted = {ssrc for rid, ssrc in layers.items() if isinstance(ssrc, int) and isinstance(rid, str)}
        for ssrc, leg in list(kept.items()):
            if ssrc not in wanted:
                self._end_leg(kept.pop(ssrc))
        legs = list(kept.values())
        pt_map = {codec.pt: codec.pt for codec in track.codecs}
        forwarded = {uri: i for uri, i in track.extensions.items() if uri in extensions.FORWARDED[track.kind]}
        for rid, ssrc in layers.items():
            if ssrc in kept or not isinstance(ssrc, int) or not isinstance(rid, str) or (
                    rid and track.stream(rid) is None):
                continue
            leg = Leg(self.port.send_rtp, ssrc, pt_map, "", TrunkDownstream(self.port, peer))
            leg.source = track
            leg.set_extensions(extensions.id_map(track.extensions, forwarded))
            if rid:
                leg.preferences = {"preferredRid": rid, "ridNotAvailable": "none"}
            peer.legs[ssrc] = leg
            self.plane.switcher.attach(leg, now)
            legs.append(leg)
        track.reads_extensions = track.reads_extensions or bool(forwarded)
        children[node] = legs
        return {"ok": True}

    # --- a session handed to another box (handover.py) ---------------------------------------------

    def park(self, session: CallSession, to: str, now: float) -> None:
        """`session` moves to box `to`, with its tracks: this box's subscribers of them move onto
        remote tracks rooted at `to` (asked for once `to` holds them: `unpark`), and the boxes this
        box sent them to will be told to re-attach there. Nothing of it is written to the store:
        `to` writes the session and its tracks as theirs."""
        self.leaving.add(session.id)
        parked = []
        for track in list(session.tracks.values()):
            track_id = track_key(session.id, track.name)
            children = sorted(self.children.pop(track, {}).items())
            for _, legs in children:
                for leg in legs:
                    self._end_leg(leg)
            local = [leg for leg in track.legs if not isinstance(leg.subscriber, TrunkDownstream)]
            parent = self.peer_of(to)
            # Rooted at `to` from now on, whatever the store says yet (its write may wait for a leader): a
            # session this box rebuilds later pulls it from there.
            record = self.records[track_id] = TrackRecord.of(track, to)
            if local and parent is not None:
                remote = self.remote[track_id] = RemoteTrack(record, self.port, self.plane, parent, now)
                for leg in local:
                    self.plane.switcher.detach(leg)
                    leg.source = remote.track
                    self.plane.switcher.attach(leg, now)
                for each in self.plane.sessions.values():
                    for transceiver in each.transceivers:
                        if transceiver.source is track:
                            transceiver.source = remote.track
            parked.append((track_id, track.name, [node for node, _ in children]))
        self.parked[session.id] = parked

    def unpark(self, session_id: str, now: float) -> None:
        """The box a session moved to holds it now: subscribe to its tracks there, and tell the boxes
        that received them from here to do the same."""
        for track_id, name, children in self.parked.pop(session_id, []):
            remote = self.remote.get(track_id)
            if remote is not None:
                self._subscribe(track_id, remote, now)
                root = remote.record.owner
            else:
                root = self.records[track_id].owner if track_id in self.records else ""
            for node in children:
                self.ask(node, {"op": "moved", "session": session_id, "name": name, "root": root},
                         lambda reply, at: None)

    def carried_on(self, session: CallSession, now: float, tell: bool) -> None:
        """This box took `session` over: tracks of it that it received from another box are its own
        now (their subscribers here move onto them), and, when `tell` (its old box is gone, so nobody
        else will), every other box re-attaches what it receives of them here."""
        for track in session.tracks.values():
            track_id = track_key(session.id, track.name)
            remote = self.remote.pop(track_id, None)
            if remote is not None:
                self._adopt(remote, track, now)
            if tell:
                for node in self.membership.nodes:
                    if node != self.me:
                        self.ask(node, {"op": "moved", "session": session.id, "name": track.name, "root": self.me},
                                 lambda reply, at: None)

    def _adopt(self, remote: RemoteTrack, track: PublishedTrack, now: float) -> None:
        remote.track.closed = True
        remote.detach()
        children = self.children.pop(remote.track, None)
        if children:
            self.children[track] = children
        for leg in list(remote.track.legs):
            self.plane.switcher.detach(leg)
            leg.source = track
            self.plane.switcher.attach(leg, now)
            self.plane.switcher.await_keyframe(leg, now)
        for each in self.plane.sessions.values():
            for transceiver in each.transceivers:
                if transceiver.source is remote.track:
                    transceiver.source = track

    def _moved(self, request: dict, now: float) -> dict:
        """A track has a new root (its session moved): what this box receives of it re-attaches
        there, and what it pulls of it later goes there (the store's record may come later)."""
        track_id = track_key(str(request.get("session")), str(request.get("name")))
        root = str(request.get("root"))
        record = self.records.get(track_id)
        if record is not None and root != self.me:
            self.records[track_id] = replace(record, owner=root)
        remote = self.remote.get(track_id)
        if remote is None:
            return {"error": "not received here"}
        return {"ok": True} if self._rooted_at(track_id, remote, root, now) else {"error": "unknown root"}

    def _rooted_at(self, track_id: str, remote: RemoteTrack, root: str, now: float) -> bool:
        parent = self.peer_of(root) if root != self.me else None
        if parent is None:
            return False
        log.info("a remote track's root moved; re-attaching there", track=remote.record.name, root=root)
        remote.record = replace(remote.record, owner=root)
        remote.orphaned_at = None
        self._reattach(track_id, remote, parent, now)
        return True

    # --- the trunk port's handler: the hot path first ---------------------------------------------

    def rtp(self, peer: TrunkPeer, packet: bytes, now: float) -> None:
        stream = peer.streams.get(int.from_bytes(packet[8:12], "big"))
        if stream is None:
            self.unknown_ssrc += 1
            return
        stream.track.receive(stream, packet, now)

    def rtcp(self, peer: TrunkPeer, packet: bytes, now: float) -> None:
        for ssrc, ntp_middle in rtcp.sender_reports(packet):
            stream = peer.streams.get(ssrc)
            if stream is not None:
                stream.stats.sr_ntp_middle, stream.stats.sr_at = ntp_middle, now
        for ssrc in rtcp.byes(packet):
            stream = peer.streams.get(ssrc)
            if stream is not None:
                self._close(track_key(stream.track.session.id, stream.track.name), tell_parent=False)
        from_receiver(packet, peer.legs, self.plane.repair, now, trusted=True)

    def data(self, peer: TrunkPeer, payload: bytes, now: float) -> None:
        if self.channels is not None:
            self.channels.data(peer, payload, now)

    # --- helpers ------------------------------------------------------------------------------------

    def peer_of(self, node: str) -> TrunkPeer | None:
        record = self.membership.get(node)
        if record is None:
            return None
        return self.port.peer(node, record.epoch, record.trunk)

    def _track(self, session_id: str, name: str) -> PublishedTrack | None:
        """A track this box can send onward: its own, or one it receives."""
        session = self.plane.sessions.get(session_id)
        if session is not None:
            return session.tracks.get(name)
        remote = self.remote.get(track_key(session_id, name))
        return remote.track if remote is not None and not remote.track.closed else None

    def _subscribe(self, track_id: str, remote: RemoteTrack, now: float) -> None:
        remote.asked_at = now
        remote.confirmed = False
        parent = remote.parent
        message = {"op": "subscribe", "from": self.me, "session": remote.record.session, "name": remote.record.name,
                   "layers": remote.layers}

        def answered(reply: dict | None, at: float) -> None:
            if self.remote.get(track_id) is not remote or remote.parent is not parent:
                return  # closed or re-attached since
            if reply is None:
                return  # asked again on the next sweep
            if reply.get("ok"):
                remote.confirmed = True
                return
            target = reply.get("redirect")
            if isinstance(target, str):
                peer = self.peer_of(target) if target != self.me else None
                if peer is not None:
                    remote.attach(peer)
                    self._subscribe(track_id, remote, at)
                else:  # sent to a box this one does not know (any more): ask again on the next sweep
                    log.info("redirected to an unknown box; asking again", track=remote.record.name, to=target)
                return
            log.info("remote track refused", track=remote.record.name, parent=parent.node, reason=reply.get("error"))
            self._close(track_id, tell_parent=False)

        self.ask(parent.node, message, answered)

    def _reattach(self, track_id: str, remote: RemoteTrack, parent: TrunkPeer, now: float) -> None:
        remote.attach(parent)
        for stream in remote.track.streams:
            stream.restart()
        for leg in remote.track.legs:
            self.plane.switcher.await_keyframe(leg, now)
        self._subscribe(track_id, remote, now)

    def _close(self, track_id: str, tell_parent: bool) -> None:
        remote = self.remote.pop(track_id, None)
        if remote is None:
            return
        track = remote.track
        track.closed = True
        self._drop_children(track)
        self.plane.end_legs(track)
        remote.detach()
        if tell_parent and self.membership.alive(remote.parent.node):
            message = {"op": "unsubscribe", "from": self.me, "session": remote.record.session,
                       "name": remote.record.name}
            self.ask(remote.parent.node, message, lambda reply, at: None)

    def _drop_children(self, track: PublishedTrack) -> None:
        """Forget who receives `track` from this box (its legs end with the track)."""
        for legs in self.children.pop(track, {}).values():
            for leg in legs:
                _unlist(leg)

    def _end_leg(self, leg: Leg) -> None:
        self.plane.switcher.detach(leg)
        _unlist(leg)

    def describe(self) -> dict[str, Any]:
        """For status and /healthz: what this box receives and sends over trunks."""
        return {
            "receiving": [{"session": r.record.session, "track": r.record.name, "from": r.parent.node,
                           "legs": len(r.track.legs)} for r in self.remote.values()],
            "sending": [{"session": t.session.id, "track": t.name, "to": sorted(c)} for t, c in self.children.items()
                        if c],
        }
