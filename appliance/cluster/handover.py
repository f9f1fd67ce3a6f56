"""Just-in-time PeerConnections: the box a client's media reaches takes the session, whichever box
served its API requests.

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
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..logs import get_logger
from ..plumbing.buckets import TokenBucket
from ..sfu import journal
from ..sfu.errors import SfuError
from ..sfu.journal import Moved
from ..sfu.sfu import Sfu
from .trunks import Ask, Trunks

log = get_logger("cluster")

PENDING = 8
REFUSED_FOR = 5.0
PER_SOURCE = 20.0
MAX_SOURCES = 4096  # source buckets kept; past it the oldest go


@dataclass
class HandoverCounters:
    unknown_ufrag: int = 0  # checks for no session of the cluster
    asked: int = 0  # takeovers asked of another box
    taken: int = 0  # sessions this box took
    given: int = 0  # sessions this box handed over
    refused: int = 0  # takeovers the owner refused, or that failed here
    limited: int = 0  # checks dropped by the per-source limit or the held-datagram bound


Reinject = Callable[[Any, bytes, Any, float], None]
# (session id, called back with the session's sealed-and-opened state once this box owns it in the
# store, or None): the shell's compare-and-set of a session whose box is gone.
Claim = Callable[[str, Callable[[dict | None, float], None]], None]


class Handover:
    def __init__(self, me: str, sfu: Sfu, trunks: Trunks, lookup: Callable[[str], tuple[str, str] | None],
                 ask: Ask, reinject: Reinject, alive: Callable[[str], bool], claim: Claim) -> None:
        self.me = me
        self.alive = alive  # whether a box is in the cluster (membership)
        self.claim = claim
        self.sfu = sfu
        self.trunks = trunks
        self.lookup = lookup  # ufrag -> (session id, owner node), from the sessions bucket
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
        session_id, owner = found
        if owner == self.me or self.refused.get(ufrag, 0.0) > now:
            return
        held = self.pending.get(ufrag)
        if held is not None:
            if len(held) < PENDING:
                held.append((local, data, addr))
            else:
                self.counters.limited += 1
            return
        if not self._allowed(str(addr[0]), now):
            self.counters.limited += 1
            return
        self.pending[ufrag] = [(local, data, addr)]
        self.taking.add(session_id)
        self.counters.asked += 1
        if self.alive(owner):
            self.ask(owner, {"op": "handover", "session": session_id, "to": self.me},
                     lambda reply, at: self._taken(session_id, ufrag, owner, reply, at))
        else:  # its box is gone: the session's record in the store has what rebuilds it
            self.claim(session_id, lambda state, at: self._taken(
                session_id, ufrag, None, {"session": state} if state is not None else {"error": "not claimed"}, at))

    def _taken(self, session_id: str, ufrag: str, owner: str | None, reply: dict | None, now: float) -> None:
        self.taking.discard(session_id)
        self._answered(ufrag, owner, reply, now)

    def _allowed(self, source: str, now: float) -> bool:
        bucket = self.sources.get(source)
        if bucket is None:
            if len(self.sources) >= MAX_SOURCES:
                self.sources.pop(next(iter(self.sources)))
            bucket = self.sources[source] = TokenBucket(PER_SOURCE, PER_SOURCE, now)
        return bucket.take(1, now)

    def _answered(self, ufrag: str, owner: str | None, reply: dict | None, now: float) -> None:
        held = self.pending.pop(ufrag, [])
        raw = reply.get("session") if reply is not None else None
        if not isinstance(raw, dict):
            self._refuse(ufrag, now, reply.get("error") if reply is not None else "no answer")
            return
        try:
            moved = Moved.decode(raw)
        except TypeError as e:
            self._refuse(ufrag, now, f"unreadable session: {e}")
            return
        if moved.id in self.sfu.sessions:
            return
        session = self.sfu.new_session(moved.app, now, moved=moved)
        try:
            journal.replay(self.sfu, session, moved.journal, now)
        except (SfuError, TypeError, ValueError, AttributeError) as e:
            self.sfu.close_session(session)
            self._refuse(ufrag, now, f"the journal did not replay: {e}")
            return
        self.counters.taken += 1
        log.info("took over a session", session=session.id, held=len(held), from_box=owner or "the store")
        if owner is not None:
            self.ask(owner, {"op": "taken", "session": session.id}, lambda reply, at: None)
        for local, data, addr in held:
            self.reinject(local, data, addr, now)

    def _refuse(self, ufrag: str, now: float, why: object) -> None:
        self.counters.refused += 1
        self.refused[ufrag] = now + REFUSED_FOR
        for stale in [u for u, until in self.refused.items() if until <= now]:
            del self.refused[stale]
        log.info("session not taken over", ufrag=ufrag, reason=str(why))

    # --- the box that holds the session ------------------------------------------------------------

    def give(self, request: dict, now: float) -> dict:
        """Hand a session to the box its media reached, unless its PeerConnection has started here."""
        session = self.sfu.sessions.get(str(request.get("session")))
        to = request.get("to")
        if session is None or session.closed or not isinstance(to, str):
            return {"error": "no such session here"}
        port_session = session.port_session
        if session.thirdparty or session.connected_at is not None or (
                port_session is not None and (getattr(port_session, "dtls", None) is not None
                                              or getattr(port_session, "addr", None) is not None)):
            return {"error": "the session's PeerConnection started on this box"}
        if session.journal is None:
            return {"error": "the session's journal is too large to move"}
        moved = Moved.of(session)
        self.trunks.park(session, to, now)
        self.sfu.close_session(session)
        self.trunks.leaving.discard(session.id)
        self.counters.given += 1
        log.info("handed a session over", session=session.id, to=to)
        return {"session": moved.encode()}

    def taken(self, request: dict, now: float) -> dict:
        self.trunks.unpark(str(request.get("session")), now)
        return {"ok": True}
