"""The controlling side of ICE, for sessions that relay to a third-party endpoint
(CALLS_API.md 1.1, `sessions/new?thirdparty=true`).

Such an endpoint (an AI voice service, or another SFU) is usually ICE-lite like us
toward browsers: it answers checks and never sends one. So for these sessions the SFU
is the full, controlling agent (RFC 8445 6.1.1): once the peer's description is known
it checks each remote candidate from its own socket of that address family. Every check
carries USE-CANDIDATE (aggressive nomination, which RFC 8445 6.1.1 lets a full agent
use toward a lite one: the lite peer selects the first nominated pair that works), and
the first success selects its path. Checks are retransmitted from 50 ms, doubling up to
`MAX_RTO`, until `checks_timeout`; then the session has failed (`ChecksFailed`).

Once a path is selected, consent freshness (RFC 7675): a new Binding request on it every
`consent_interval` seconds, and without a response for `consent_timeout` the path is
dropped (`ConsentExpired`, the same event the responder raises).

Responses are matched by transaction id, must come from where the request went
(RFC 8445 7.2.5.2.1) and must carry MESSAGE-INTEGRITY keyed with the remote pwd; a
response that fails any of that is ignored and the transaction carries on, so a forged
answer can neither select a path nor end a check.

Sans-I/O, as the responder: `start` and `receive` take the time, `datagrams_to_send`
yields (local transport, remote address, bytes) for the caller to send.
"""
from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..plumbing.deadlines import Deadlines
from ..stun import Attr, Class, Message, Method, StunError, short_term_key
from .ice import CONSENT_TIMEOUT, Address, ConsentExpired, PathSelected, due_agents, schedule

CHECKS_TIMEOUT = 10.0
FIRST_RTO = 0.05
MAX_RTO = 1.6
# RFC 7675 5.1 asks for 5 s, randomized; one box's few relay sessions do not synchronize.
CONSENT_INTERVAL = 5.0
# A remote description may list any number of candidates: the pairs checked are capped so
# that an SDP cannot make the box spray Binding requests.
MAX_PAIRS = 16
# RFC 8445 7.1.1: PRIORITY is what a peer-reflexive candidate found by the check would
# get: type preference 110, the highest local preference, component 1.
_PRFLX_PRIORITY = 110 << 24 | 0xFFFF << 8 | 255


@dataclass(frozen=True, slots=True)
class ChecksFailed:
    """No check of `owner`'s succeeded before the checks timeout: it has no path."""

    owner: Any


Event = PathSelected | ConsentExpired | ChecksFailed


@dataclass(slots=True)
class CheckCounters:
    requests: int = 0  # Binding requests sent, retransmissions included
    malformed: int = 0
    unmatched: int = 0  # a response to no transaction of ours, or from elsewhere than its request went
    bad_integrity: int = 0
    errors: int = 0  # error responses with valid integrity


class _Transaction:
    __slots__ = ("tid", "agent", "local", "addr", "data", "sent", "due", "rto")

    def __init__(self, tid: bytes, agent: _Agent, local: Any, addr: Address, data: bytes, now: float,
                 retransmit: bool) -> None:
        self.tid = tid
        self.agent = agent
        self.local = local
        self.addr = addr
        self.data = data
        self.sent = now
        self.rto = FIRST_RTO
        # Consent checks get no retransmission (due None): the next one comes within seconds.
        self.due = now + FIRST_RTO if retransmit else None


class _Agent:
    __slots__ = ("owner", "username", "key", "tie_breaker", "give_up", "local", "addr", "consent_until",
                 "next_consent", "transactions", "due")

    def __init__(self, owner: Any, username: str, key: bytes, give_up: float) -> None:
        self.owner = owner
        self.username = username
        self.key = key
        self.tie_breaker = secrets.randbits(64)
        self.give_up = give_up
        self.local: Any = None
        self.addr: Address | None = None
        self.consent_until = 0.0
        self.next_consent = 0.0
        self.transactions: dict[bytes, _Transaction] = {}
        self.due: float | None = None  # the earliest deadline queued for this agent

    def deadline(self) -> float:
        if self.addr is None:
            return min([self.give_up, *(t.due for t in self.transactions.values() if t.due is not None)])
        return min(self.next_consent, self.consent_until)


class IceControlling:
    def __init__(self, consent_timeout: float = CONSENT_TIMEOUT, consent_interval: float = CONSENT_INTERVAL,
                 checks_timeout: float = CHECKS_TIMEOUT) -> None:
        self.consent_timeout = consent_timeout
        self.consent_interval = consent_interval
        self.checks_timeout = checks_timeout
        self.counters = CheckCounters()
        self._by_owner: dict[Any, _Agent] = {}
        self._transactions: dict[bytes, _Transaction] = {}
        self._deadlines: Deadlines[_Agent] = Deadlines()
        self._outgoing: list[tuple[Any, Address, bytes]] = []
        self._events: deque[Event] = deque()

    def start(self, owner: Any, ufrag: str, remote_ufrag: str, remote_pwd: str,
              pairs: Sequence[tuple[Any, Address]], now: float) -> None:
        """Check each (local transport, remote address) pair, in the order given (the remote
        candidates' priority), all at once: a lite peer has a candidate or two per family."""
        if owner in self._by_owner:
            raise ValueError("ICE checks for this owner have started already")
        agent = _Agent(owner, f"{remote_ufrag}:{ufrag}", short_term_key(remote_pwd), now + self.checks_timeout)
        self._by_owner[owner] = agent
        for local, addr in pairs[:MAX_PAIRS]:
            self._request(agent, local, addr, now, consent=False)
        self._schedule(agent)

    def remove(self, owner: Any) -> None:
        agent = self._by_owner.pop(owner, None)
        if agent is not None:
            self._forget_transactions(agent)

    def selected(self, owner: Any) -> tuple[Any, Address] | None:
        agent = self._by_owner.get(owner)
        return None if agent is None or agent.addr is None else (agent.local, agent.addr)

    # --- responses ---------------------------------------------------------------------------

    def receive(self, data: bytes, local: Any, addr: Address, now: float) -> None:
        """A STUN response from `addr` on `local`."""
        try:
            response = Message.parse(data)
        except StunError:
            self.counters.malformed += 1
            return
        transaction = self._transactions.get(response.transaction_id)
        if (transaction is None or response.method != Method.BINDING
                or transaction.local is not local or transaction.addr != addr):
            self.counters.unmatched += 1
            return
        agent = transaction.agent
        if not response.check_integrity(agent.key):
            self.counters.bad_integrity += 1
            return
        self._end(transaction)
        if response.message_class == Class.ERROR:
            # A lite peer answers 487 to nobody (it is always controlled); any error fails the pair.
            # A consent check's error counts as no answer: the expiry decides.
            self.counters.errors += 1
            if agent.addr is None and not agent.transactions:
                agent.give_up = now
                self._schedule(agent)
            return
        if agent.addr is None:
            self._forget_transactions(agent)
            agent.local, agent.addr = local, addr
            agent.next_consent = now + self.consent_interval
            self._events.append(PathSelected(agent.owner, local, addr))
        agent.consent_until = now + self.consent_timeout
        self._schedule(agent)

    # --- time, output and events -----------------------------------------------------------

    def get_timer(self) -> float | None:
        return self._deadlines.next()

    def handle_timer(self, now: float) -> None:
        for agent in due_agents(self._deadlines, now):
            if self._by_owner.get(agent.owner) is not agent:
                continue
            if agent.addr is None:
                self._retransmit(agent, now)
            else:
                self._consent(agent, agent.addr, now)

    def datagrams_to_send(self) -> list[tuple[Any, Address, bytes]]:
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # --- inside ------------------------------------------------------------------------------

    def _retransmit(self, agent: _Agent, now: float) -> None:
        if now >= agent.give_up:
            self.remove(agent.owner)
            self._events.append(ChecksFailed(agent.owner))
            return
        for transaction in agent.transactions.values():
            if transaction.due is not None and transaction.due <= now:
                self._outgoing.append((transaction.local, transaction.addr, transaction.data))
                self.counters.requests += 1
                transaction.rto = min(transaction.rto * 2, MAX_RTO)
                transaction.due = now + transaction.rto
        self._schedule(agent)

    def _consent(self, agent: _Agent, addr: Address, now: float) -> None:
        """Consent on the selected path (`agent.local`, `addr`)."""
        if now >= agent.consent_until:
            self.remove(agent.owner)
            self._events.append(ConsentExpired(agent.owner, agent.local, addr))
            return
        if now >= agent.next_consent:
            # Checks older than the consent timeout cannot refresh anything any more.
            for transaction in [t for t in agent.transactions.values() if t.sent < now - self.consent_timeout]:
                self._end(transaction)
            self._request(agent, agent.local, addr, now, consent=True)
            agent.next_consent = now + self.consent_interval
        self._schedule(agent)

    def _request(self, agent: _Agent, local: Any, addr: Address, now: float, consent: bool) -> None:
        attributes = [(Attr.USERNAME, agent.username), (Attr.PRIORITY, _PRFLX_PRIORITY),
                      (Attr.ICE_CONTROLLING, agent.tie_breaker)]
        if not consent:
            attributes.append((Attr.USE_CANDIDATE, True))
        request = Message(Method.BINDING, Class.REQUEST, attributes=attributes)
        data = request.encode(agent.key, fingerprint=True)
        transaction = _Transaction(request.transaction_id, agent, local, addr, data, now, retransmit=not consent)
        agent.transactions[transaction.tid] = transaction
        self._transactions[transaction.tid] = transaction
        self._outgoing.append((local, addr, transaction.data))
        self.counters.requests += 1

    def _end(self, transaction: _Transaction) -> None:
        del transaction.agent.transactions[transaction.tid]
        del self._transactions[transaction.tid]

    def _forget_transactions(self, agent: _Agent) -> None:
        for tid in agent.transactions:
            del self._transactions[tid]
        agent.transactions.clear()

    def _schedule(self, agent: _Agent) -> None:
        schedule(self._deadlines, agent, agent.deadline())
