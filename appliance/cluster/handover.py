"""Just-in-time PeerConnections and failover: the box a client's media reaches takes the session,
whichever box served its API requests, and carries it on when that box died or the router moved the
client's packets away from it (issue 19).

A routers hashes each flow on its own, so a client's first ICE check can reach box B while box A
holds its session. B's media port tells this module of a check whose ufrag it does not know; the
sessions bucket (watched, so the lookup costs nothing) says which session and box it is. B holds the
datagram and asks A to hand the session over. A agrees only while the PeerConnection has not started
(no selected path, no DTLS): it answers with the session's journal and seed (sfu/journal.py) and
forgets it quietly; B replays the journal into the same session, writes itself as the owner, and
feeds the held datagrams to its port, which answers them. The cluster's shared certificate makes the
fingerprint A wrote valid on B.

Bounded: only ufrags the store knows cost anything, at most PENDING datagrams are held per ufrag,
a refused session is not asked for again for REFUSED_FOR seconds, and each source address may start
at most PER_SOURCE takeovers a second (checks with forged sources cannot turn into load on A).

Tracks the moving session publishes keep their subscribers: A parks them (its own subscribers' legs
move onto a remote track of the same name, rooted at B, and boxes that received them from A are told
to re-attach at B) once B says it holds the session (`taken`).

A PeerConnection that has connected moves too. Its media (SRTP or SRTCP from a 5-tuple B does not
know) finds it by the client's address, which the session's record carries. A live A answers with
a fresh checkpoint of the session's media (sfu/continuation.py) and lets it go without a word to
the client; an A that does not answer within ASK_TIMEOUT (it died, or is cut off) is not waited
for: B rebuilds the session from what the store's watches brought it beforehand (the record's
sealed journal and the latest sealed media checkpoint) and carries it on. Nothing on that path
waits for the store, whose buckets may be electing a new leader after the same failure. Two boxes
that both took a session settle it by the sessions bucket: the one whose write lost lets it go
(`lost`). The boxes that received the session's tracks from A are told to re-attach at B.

A box that did not answer is taken for gone for LOST_FOR seconds (every box is told, over NATS core):
its other sessions are not asked of it, and each is carried on at once by the box that rendezvous
hashing picks among the others, before its client's next packet shows where the routers send it
(a receive-only client sends RTCP about once a second, and nothing while it receives nothing). That
box sends from the anycast address, which is all the client checks; it tells every box that it
carries the session (`carriers`: heard before the store says so), so the box the client's packets
reach asks it for the session rather than rebuilding it a second time.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..logs import get_logger
from ..plumbing.buckets import TokenBucket
from ..sfu import continuation, journal
from ..sfu.errors import SfuError
from ..sfu.journal import Moved
from ..sfu.session import CallSession
from ..sfu.sfu import Sfu
from .trunks import Ask, Trunks

log = get_logger("cluster")

PENDING = 8
REFUSED_FOR = 5.0
PER_SOURCE = 20.0
MAX_SOURCES = 4096  # source buckets kept; past it the oldest go
ASK_TIMEOUT = 0.2  # a live box answers a handover in milliseconds; one that does not is not waited for
LOST_FOR = 10.0  # how long a box that did not answer is taken for gone
CARRIED_FOR = 10.0  # how long word that a box carries a session on outranks the sessions bucket


@dataclass
class HandoverCounters:
    unknown_ufrag: int = 0  # checks for no session of the cluster
    asked: int = 0  # takeovers asked of another box
    taken: int = 0  # sessions this box took
    carried_on: int = 0  # of those, connected PeerConnections this box went on with (failover)
    given: int = 0  # sessions this box handed over
    lost: int = 0  # sessions another box took while this one held them
    refused: int = 0  # takeovers the owner refused, or that failed here
    limited: int = 0  # checks dropped by the per-source limit or the held-datagram bound


Reinject = Callable[[Any, bytes, Any, float], None]
# What the store's watches brought of a session, opened: {"session": journal.Moved's encoding,
# "media": its latest media checkpoint or None}, or None when there is nothing to rebuild it from.
Saved = Callable[[str], dict | None]


@dataclass
class Failover:
    """What the shell gives the handover to carry a gone box's sessions on before their clients speak."""

    tell: Callable[[dict], None]  # say something to every box (over NATS core): {"lost": node}, {"carried": ...}
    owned_by: Callable[[str], list[str]]  # the sessions the sessions bucket says a box holds
    nodes: Callable[[], list[str]]  # the boxes of the cluster, this one included
    listener_for: Callable[[Any], Any]  # the media port's UDP listener for a client address, or None


class Handover:
    def __init__(self, me: str, sfu: Sfu, trunks: Trunks, lookup: Callable[[str], tuple[str, str] | None],
                 by_path: Callable[[Any], tuple[str, str] | None], ask: Ask, reinject: Reinject,
                 alive: Callable[[str], bool], saved: Saved, failover: Failover | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        self.me = me
        self.failover = failover
        self.lost_boxes: dict[str, float] = {}  # node -> until when it is taken for gone
        # session -> (generation, the box carrying it on, until): heard over NATS core before the store says so
        self.carriers: dict[str, tuple[int, str, float]] = {}
        self.alive = alive  # whether a box is in the cluster (membership)
        self.saved = saved
        self.wall = wall
        self.sfu = sfu
        self.trunks = trunks
        self.lookup = lookup  # ufrag -> (session id, owner node), from the sessions bucket
        self.by_path = by_path  # the client's address -> (session id, owner node), from the same
        self.ask = ask
        self.reinject = reinject  # the media port's datagram_received
        self.pending: dict[str, list[tuple[Any, bytes, Any]]] = {}
        self.taking: set[str] = set()  # the sessions asked for and not here yet
        self.refused: dict[str, float] = {}
        self.sources: dict[str, TokenBucket] = {}
        self.counters = HandoverCounters()

    # --- the box the media reached ----------------------------------------------------------------

    def stranger(self, ufrag: str, local: Any, data: bytes, addr: Any, now: float) -> None:
        """A check for a ufrag no session of this box has (the port's IceLite.on_unknown)."""
        found = self.lookup(ufrag)
        if found is None:
            self.counters.unknown_ufrag += 1
            return
        self._arrived(*found, local, data, addr, now)

    def stray(self, local: Any, data: bytes, addr: Any, now: float) -> None:
        """SRTP or SRTCP from a 5-tuple no session of this box has (the port's on_stray): the media
        of a PeerConnection that connected on another box."""
        found = self.by_path(addr)
        if found is not None:
            self._arrived(*found, local, data, addr, now)

    def _arrived(self, session_id: str, owner: str, local: Any, data: bytes, addr: Any, now: float) -> None:
        carrier = self.carriers.get(session_id)
        if carrier is not None and carrier[2] > now:
            owner = carrier[1]
        if owner == self.me or self.refused.get(session_id, 0.0) > now or session_id in self.sfu.sessions:
            return
        held = self.pending.get(session_id)
        if held is not None:
            if len(held) < PENDING:
                held.append((local, data, addr))
            else:
                self.counters.limited += 1
            return
        if not self._allowed(str(addr[0]), now):
            self.counters.limited += 1
            return
        self.pending[session_id] = [(local, data, addr)]
        self.taking.add(session_id)
        self.counters.asked += 1
        if self.alive(owner) and self.lost_boxes.get(owner, 0.0) <= now:
            self.ask(owner, {"op": "handover", "session": session_id, "to": self.me},
                     lambda reply, at: self._taken(session_id, owner, reply, at))
        else:
            self._taken(session_id, owner, None, now)

    def _taken(self, session_id: str, owner: str, reply: dict | None, now: float) -> None:
        self.taking.discard(session_id)
        if reply is None:  # its box is gone or cut off: what the watches brought rebuilds it
            self._answered(session_id, None, self.saved(session_id) or {"error": "nothing saved to rebuild it"}, now)
            self.box_lost(owner, now, tell=True)
        else:
            self._answered(session_id, owner, reply, now)

    # --- a box that is gone -------------------------------------------------------------------------

    def box_lost(self, node: str, now: float, tell: bool = False) -> None:
        """`node` did not answer (or left): carry on at once the sessions of it that rendezvous hashing
        gives this box; `tell` every box first, when this box is the one that found out."""
        failover = self.failover
        if failover is None or node == self.me or self.lost_boxes.get(node, 0.0) > now:
            return
        self.lost_boxes[node] = now + LOST_FOR
        if tell:
            failover.tell({"lost": node})
        others = [n for n in failover.nodes() if n != node]
        for session_id in failover.owned_by(node):
            carrier = self.carriers.get(session_id)
            if session_id in self.sfu.sessions or session_id in self.taking or (carrier is not None and carrier[2] > now):
                continue  # here already, on its way, or another box said it carries it on
            if _pick(session_id, others) != self.me:
                continue
            saved = self.saved(session_id)
            media = saved.get("media") if saved is not None else None
            path = media.get("path") if isinstance(media, dict) else None
            if not isinstance(path, list) or len(path) != 2:
                continue  # not connected: it waits for its client's check, as any session does
            addr = (str(path[0]), int(path[1]))
            local = failover.listener_for(addr)
            if local is not None and saved is not None:
                self._rebuild(session_id, None, saved, local, addr, now)

    def carried(self, session_id: str, node: str, generation: int, now: float) -> None:
        """Word from `node` that it carries `session_id` on now, as its `generation`: of two holders the
        later generation keeps it, at once (the sessions bucket may be electing a leader)."""
        self.carriers = {s: c for s, c in self.carriers.items() if c[2] > now}
        if node == self.me:
            return
        known = self.carriers.get(session_id)
        if known is None or (generation, node) > known[:2]:
            self.carriers[session_id] = (generation, node, now + CARRIED_FOR)
        session = self.sfu.sessions.get(session_id)
        if session is not None and (generation, node) > (session.generation, self.me):
            self.lost(session_id, node, now)

    def _allowed(self, source: str, now: float) -> bool:
        bucket = self.sources.get(source)
        if bucket is None:
            if len(self.sources) >= MAX_SOURCES:
                self.sources.pop(next(iter(self.sources)))
            bucket = self.sources[source] = TokenBucket(PER_SOURCE, PER_SOURCE, now)
        return bucket.take(1, now)

    def _answered(self, session_id: str, owner: str | None, reply: dict, now: float) -> None:
        held = self.pending.pop(session_id, [])
        if not held:
            self._refuse(session_id, now, "nothing held")
            return
        local, _, addr = held[0]
        if session_id not in self.sfu.sessions and not self._rebuild(session_id, owner, reply, local, addr, now,
                                                                    reached=True):
            return
        for local, data, addr in held:
            self.reinject(local, data, addr, now)

    def _rebuild(self, session_id: str, owner: str | None, reply: dict, local: Any, addr: Any, now: float,
                 reached: bool = False) -> bool:
        """Make the session here from `reply` (the owner's answer, or what the store's watches
        brought) and carry its PeerConnection on when it has media, from `addr` on `local`.
        `reached`: the client's packets came here. Such a box outranks one that carried the session on
        unasked (`box_lost`): the client's packets go where the routers send them, not where hashing
        guessed they would."""
        raw = reply.get("session")
        if not isinstance(raw, dict):
            self._refuse(session_id, now, reply.get("error", "no session in the answer"))
            return False
        try:
            moved = Moved.decode(raw)
        except TypeError as e:
            self._refuse(session_id, now, f"unreadable session: {e}")
            return False
        if moved.id in self.sfu.sessions:
            return False
        session = self.sfu.new_session(moved.app, now, moved=moved)
        if reached and owner is None:
            session.generation += 1
        media = reply.get("media")
        try:
            journal.replay(self.sfu, session, moved.journal, now)
            if isinstance(media, dict):
                continuation.restore(self.sfu, session, media, local, addr, self.wall(), now)
        except (SfuError, TypeError, ValueError, AttributeError, KeyError) as e:
            self._forget(session)  # the session may live on elsewhere
            self._refuse(session_id, now, f"the session did not rebuild: {e!r}")
            return False
        self.counters.taken += 1
        self.counters.carried_on += isinstance(media, dict)
        self.trunks.carried_on(session, now, tell=owner is None)
        carrier = self.carriers.get(session_id)
        if carrier is not None and carrier[2] > now and carrier[:2] > (session.generation, self.me):
            self.lost(session_id, carrier[1], now)  # a later holder spoke while this box rebuilt it
            return True
        if owner is None and isinstance(media, dict) and self.failover is not None:
            self.failover.tell({"carried": session.id, "by": self.me, "generation": session.generation})
        log.info("took over a session", session=session.id, from_box=owner or "the store",
                 carried_on=isinstance(media, dict))
        if owner is not None:
            self.ask(owner, {"op": "taken", "session": session.id}, lambda reply, at: None)
        return True

    def _refuse(self, session_id: str, now: float, why: object) -> None:
        self.counters.refused += 1
        self.refused[session_id] = now + REFUSED_FOR
        for stale in [u for u, until in self.refused.items() if until <= now]:
            del self.refused[stale]
        log.info("session not taken over", session=session_id, reason=str(why))

    # --- the box that holds the session ------------------------------------------------------------

    def give(self, request: dict, now: float) -> dict:
        """Hand a session to the box its media reached: one whose PeerConnection has not started here,
        or has connected (with its media's checkpoint, to carry it on); not one in its handshake."""
        session = self.sfu.sessions.get(str(request.get("session")))
        to = request.get("to")
        if session is None or session.closed or not isinstance(to, str):
            return {"error": "no such session here"}
        if session.thirdparty:
            return {"error": "a third-party session stays with the box that controls its ICE"}
        if session.journal is None:
            return {"error": "the session's journal is too large to move"}
        media = None
        if session.connected_at is not None:
            media = continuation.capture(self.sfu.port, session, self.wall())
            if media is None:
                return {"error": "the session's media cannot move (ICE-TCP)"}
        elif session.port_session is not None and session.port_session.dtls is not None:
            return {"error": "the session's DTLS handshake is under way on this box"}
        moved = Moved.of(session)
        self._let_go(session, to, now)
        self.counters.given += 1
        log.info("handed a session over", session=session.id, to=to, connected=media is not None)
        return {"session": moved.encode(), "media": media}

    def lost(self, session_id: str, owner: str, now: float) -> None:
        """Another box wrote itself as the owner of a session this box holds: it carries the
        PeerConnection on (the client's packets reach it), so this box lets go without a word."""
        session = self.sfu.sessions.get(session_id)
        if session is None or session.closed or owner == self.me or session_id in self.trunks.leaving:
            return
        self._let_go(session, owner, now)
        self.counters.lost += 1
        log.info("another box carries a session on; let go", session=session_id, owner=owner)
        self.trunks.unpark(session_id, now)

    def _let_go(self, session: CallSession, to: str, now: float) -> None:
        self.trunks.park(session, to, now)
        self._forget(session)

    def _forget(self, session: CallSession) -> None:
        """Close the session here without a word to the client or the store."""
        self.trunks.leaving.add(session.id)
        self.sfu.close_session(session, quietly=True)
        self.trunks.leaving.discard(session.id)

    def taken(self, request: dict, now: float) -> dict:
        self.trunks.unpark(str(request.get("session")), now)
        return {"ok": True}


def _pick(session_id: str, nodes: list[str]) -> str | None:
    """The box rendezvous hashing gives a session among `nodes`: every box that knows the same boxes
    picks the same one, and a box's going moves only its own sessions."""
    return max(nodes, key=lambda node: hashlib.blake2b(f"{session_id} {node}".encode(), digest_size=8).digest(),
               default=None)
