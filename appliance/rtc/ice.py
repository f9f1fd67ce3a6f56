"""The ICE-lite responder: RFC 8445 lite implementation, RFC 7675 consent freshness.

The media port never sends a connectivity check; it answers them. Every session has
its own local ufrag/pwd (in the SDP the SFU writes) and, once the remote description
is known, the remote ufrag. A check's USERNAME "<local ufrag>:<remote ufrag>" finds the
session, MESSAGE-INTEGRITY keyed with the local pwd proves the sender read our SDP, and
the check's 5-tuple becomes the session's *selected path*: where its DTLS and SRTP
come from and go to.

Selection follows what browsers need from a lite peer. The first valid check selects
its path at once, so that the DTLS client, which starts as soon as it has any working
pair, is not dropped while the controlling side nominates. A check with USE-CANDIDATE
selects its path even when another one is selected: that is how Chrome moves a session
after a network change (it nominates only its selected pair toward a lite peer). Other
checks are answered (the remote needs the answer to validate the pair) but move nothing.
Every path with a valid check in the last `consent_timeout` seconds is *validated*:
DTLS or authenticated SRTP arriving on one selects it (`select`), because Firefox
nominates aggressively toward lite peers (every check carries USE-CANDIDATE, Mozilla
bug 1034964) and then sends on the pair it chose, which need not be the last one
nominated; "use the pair the traffic comes from" is Mozilla's own advice to lite
servers (pion/ice#739). Valid checks on the selected path refresh consent; a selected
path without one for `consent_timeout` seconds is dropped and reported (RFC 7675: 30 s).

A session relaying to a third party (`checks.IceControlling`) is the controlling side
itself: checks from its peer are answered, as a full peer's triggered checks need, but
select nothing (its own checks do), and a peer claiming the controlling role too gets
487 (we never give the role up: RFC 8445 7.3.1.1 would compare tie-breakers).

A Binding request with neither USERNAME nor MESSAGE-INTEGRITY is plain STUN (the
health agent's probe, NAT discovery) and gets XOR-MAPPED-ADDRESS alone.

Sans-I/O: `receive()` takes the bytes, the local transport they came in on (any object
the caller chooses) and the remote address, and returns the answer to send back there.
"""
from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aiortc.rtcicetransport import RTCIceCandidate

from ..plumbing.deadlines import Deadlines
from ..stun import Attr, Class, Message, Method, StunError, short_term_key

# RFC 7675 section 5.1: consent is lost after 30 s without a response; a lite agent sees
# the remote's consent checks, so it lets a path go 30 s after the last one.
CONSENT_TIMEOUT = 30.0
# Validated paths kept per session (the oldest checked goes first): a browser has a few
# candidates per family, so a few pairs reach our one port.
MAX_PATHS = 8

Address = tuple[str, int]

# RFC 8445 5.1.2.1: type preference 126 for host candidates, component 1 (rtcp-mux).
_HOST = 126 << 24
_COMPONENT = 256 - 1
# RFC 6544 4.2: a TCP local preference is 2^13 * direction preference (passive: 4 for host
# candidates) + an order; below every UDP one, so UDP wins wherever it works.
_TCP_PASSIVE = 4 << 13


def new_credentials() -> tuple[str, str]:
    """A fresh (ufrag, pwd) with 48 and 144 random bits (RFC 8445 5.3 asks for 24 and 128),
    in ice-chars: URL-safe base64 with "-" and "_" spelled "+" and "/"."""
    def ice_chars(nbytes: int) -> str:
        return secrets.token_urlsafe(nbytes).replace("-", "+").replace("_", "/")

    return ice_chars(6), ice_chars(18)


def host_candidates(udp: Sequence[Address], tcp: Sequence[Address] = ()) -> tuple[RTCIceCandidate, ...]:
    """Our candidates for the SDP: host candidates on the media port's addresses, UDP
    before ICE-TCP passive, each list in its order of preference."""
    candidates = []
    for order, (ip, port) in enumerate(udp):
        priority = _HOST | (0xFFFF - order) << 8 | _COMPONENT
        candidates.append(RTCIceCandidate(1, f"udp{order}", ip, port, priority, "udp", "host"))
    for order, (ip, port) in enumerate(tcp):
        priority = _HOST | (_TCP_PASSIVE | (0x1FFF - order)) << 8 | _COMPONENT
        candidates.append(RTCIceCandidate(1, f"tcp{order}", ip, port, priority, "tcp", "host", tcpType="passive"))
    return tuple(candidates)


class Scheduled(Protocol):
    due: float | None  # the earliest deadline queued for it


A = TypeVar("A", bound=Scheduled)


def schedule(deadlines: Deadlines[A], agent: A, when: float) -> None:
    """Queue `when` for an agent unless it is due earlier already:
    a later deadline moves nothing, the due one re-checks and queues the next."""
    if agent.due is None or when < agent.due:
        agent.due = when
        deadlines.push(when, agent)


def due_agents(deadlines: Deadlines[A], now: float) -> Iterator[A]:
    """The agents due at `now`, their `due` cleared; entries an earlier deadline superseded
    (already handled) are skipped."""
    for agent in list(deadlines.due(now)):
        if agent.due is not None and agent.due <= now:
            agent.due = None
            yield agent


@dataclass(frozen=True, slots=True)
class PathSelected:
    """`owner`'s selected path is now (`local`, `addr`): its first, or a move."""

    owner: Any
    local: Any
    addr: Address


@dataclass(frozen=True, slots=True)
class ConsentExpired:
    """No valid check on `owner`'s selected path for the consent timeout; the path is dropped."""

    owner: Any
    local: Any
    addr: Address


Event = PathSelected | ConsentExpired


@dataclass(slots=True)
class IceCounters:
    malformed: int = 0
    unknown_ufrag: int = 0
    wrong_remote_ufrag: int = 0
    bad_integrity: int = 0
    role_conflicts: int = 0
    probes: int = 0


class _Agent:
    """One session's responder state."""

    __slots__ = ("owner", "ufrag", "key", "remote_ufrag", "controlling", "local", "addr", "consent_until", "due",
                 "paths")

    def __init__(self, owner: Any, ufrag: str, pwd: str, remote_ufrag: str | None, controlling: bool) -> None:
        self.owner = owner
        self.controlling = controlling
        self.ufrag = ufrag
        self.key = short_term_key(pwd)
        self.remote_ufrag = remote_ufrag
        self.local: Any = None
        self.addr: Address | None = None
        self.consent_until = 0.0
        self.due: float | None = None  # the earliest deadline queued for this agent
        self.paths: dict[tuple[Any, Address], float] = {}  # validated path -> time of its last valid check


class IceLite:
    def __init__(self, consent_timeout: float = CONSENT_TIMEOUT) -> None:
        self.consent_timeout = consent_timeout
        self.counters = IceCounters()
        self._by_ufrag: dict[str, _Agent] = {}
        self._by_owner: dict[Any, _Agent] = {}
        self._by_path: dict[tuple[Any, Address], _Agent] = {}
        self._deadlines: Deadlines[_Agent] = Deadlines()
        self._events: deque[Event] = deque()
        # Told of a check whose ufrag no session here has (the cluster may hold its session on
        # another box): (local ufrag, the transport, the datagram, its source, now).
        self.on_unknown: Callable[[str, Any, bytes, Address, float], None] | None = None

    # --- sessions ------------------------------------------------------------------------

    def add(self, owner: Any, ufrag: str, pwd: str, remote_ufrag: str | None = None, controlling: bool = False) -> None:
        """Answer checks for `owner` from now on. `remote_ufrag` may come later (`set_remote`):
        when the SFU made the offer, the browser starts checking before its answer arrives."""
        if ufrag in self._by_ufrag or owner in self._by_owner:
            raise ValueError(f"ICE ufrag {ufrag!r} or its owner is registered already")
        agent = _Agent(owner, ufrag, pwd, remote_ufrag, controlling)
        self._by_ufrag[ufrag] = agent
        self._by_owner[owner] = agent

    def set_remote(self, owner: Any, remote_ufrag: str) -> None:
        self._by_owner[owner].remote_ufrag = remote_ufrag

    def restart(self, owner: Any, ufrag: str, pwd: str, remote_ufrag: str) -> None:
        """An ICE restart (RFC 8445 9): checks use the new credentials from now on. The path in use
        keeps carrying media until the new checks select one or its consent runs out."""
        agent = self._by_owner[owner]
        if ufrag != agent.ufrag:
            if ufrag in self._by_ufrag:
                raise ValueError(f"ICE ufrag {ufrag!r} is registered already")
            del self._by_ufrag[agent.ufrag]
            self._by_ufrag[ufrag] = agent
            agent.ufrag = ufrag
        agent.key = short_term_key(pwd)
        agent.remote_ufrag = remote_ufrag

    def remove(self, owner: Any) -> None:
        agent = self._by_owner.pop(owner, None)
        if agent is not None:
            del self._by_ufrag[agent.ufrag]
            for path in agent.paths:
                self._drop_path(agent, path)

    def forget_path(self, owner: Any) -> None:
        """The selected path's transport is gone (an ICE-TCP connection closed): the next
        valid check selects again."""
        agent = self._by_owner.get(owner)
        if agent is not None and agent.addr is not None:
            path = (agent.local, agent.addr)
            agent.paths.pop(path, None)
            self._drop_path(agent, path)
            agent.local = agent.addr = None

    def owner_at(self, local: Any, addr: Address, now: float) -> Any:
        """The owner of a path validated in the last consent timeout, or None: who traffic
        arriving off every selected path may belong to."""
        path = (local, addr)
        agent = self._by_path.get(path)
        if agent is None or now - agent.paths[path] > self.consent_timeout:
            return None
        return agent.owner

    def select(self, owner: Any, local: Any, addr: Address) -> None:
        """Authenticated traffic came on a validated path (`owner_at`): the peer uses it, so we
        do. Its consent runs from its last check."""
        self._select(self._by_owner[owner], local, addr)

    def adopt(self, owner: Any, local: Any, addr: Address, now: float) -> None:
        """Select a path the peer validated with another box (a PeerConnection carried on here):
        the authenticated media arriving on it stands for the check, and consent runs from now."""
        agent = self._by_owner[owner]
        path = (local, addr)
        agent.paths[path] = now
        self._by_path[path] = agent
        self._select(agent, local, addr)

    def selected(self, owner: Any) -> tuple[Any, Address] | None:
        agent = self._by_owner[owner]
        return None if agent.addr is None else (agent.local, agent.addr)

    # --- checks --------------------------------------------------------------------------

    def receive(self, data: bytes, local: Any, addr: Address, now: float) -> bytes | None:
        """A STUN message from `addr` on `local`: the answer to send back, or None."""
        try:
            request = Message.parse(data)
        except StunError:
            self.counters.malformed += 1
            return None
        if request.method != Method.BINDING or request.message_class != Class.REQUEST:
            return None  # indications are keepalives; responses answer nothing we sent
        username = request.get(Attr.USERNAME)
        if username is None:
            if request.has_integrity:
                return request.error(400).encode(fingerprint=True)
            self.counters.probes += 1
            if request.unknown:
                return request.error(420, (Attr.UNKNOWN_ATTRIBUTES, request.unknown)).encode(fingerprint=True)
            return request.success((Attr.XOR_MAPPED_ADDRESS, addr)).encode(fingerprint=True)
        ufrag, colon, remote_ufrag = username.partition(":")
        agent = self._by_ufrag.get(ufrag)
        if agent is None or not colon:
            # No answer: on an anycast address, unknown ufrags are scans or another box's sessions.
            self.counters.unknown_ufrag += 1
            if colon and self.on_unknown is not None and request.has_integrity:
                self.on_unknown(ufrag, local, data, addr, now)
            return None
        if not request.has_integrity:
            return request.error(400).encode(fingerprint=True)  # RFC 8489 9.1.3
        if not request.check_integrity(agent.key):
            self.counters.bad_integrity += 1
            return request.error(401).encode(fingerprint=True)
        if agent.remote_ufrag is not None and remote_ufrag != agent.remote_ufrag:
            self.counters.wrong_remote_ufrag += 1
            return None
        sha256 = request.uses_sha256
        if request.unknown:
            answer = request.error(420, (Attr.UNKNOWN_ATTRIBUTES, request.unknown))
        elif (Attr.ICE_CONTROLLING if agent.controlling else Attr.ICE_CONTROLLED) in request:
            # Both claim the same role: 487 tells the other side to switch. A lite agent is always
            # controlled (RFC 8445 6.1.1), a relay session always controls.
            self.counters.role_conflicts += 1
            answer = request.error(487)
        else:
            if not agent.controlling:
                self._checked(agent, local, addr, Attr.USE_CANDIDATE in request, now)
            answer = request.success((Attr.XOR_MAPPED_ADDRESS, addr))
        return answer.encode(agent.key, sha256=sha256, fingerprint=True)

    def _checked(self, agent: _Agent, local: Any, addr: Address, nominated: bool, now: float) -> None:
        path = (local, addr)
        paths = agent.paths
        if path not in paths and len(paths) >= MAX_PATHS:
            oldest = min(paths, key=paths.__getitem__)
            del paths[oldest]
            self._drop_path(agent, oldest)
        paths[path] = now
        self._by_path[path] = agent
        if agent.local is local and agent.addr == addr:
            agent.consent_until = now + self.consent_timeout
        elif agent.addr is None or nominated:
            self._select(agent, local, addr)

    def _select(self, agent: _Agent, local: Any, addr: Address) -> None:
        agent.local, agent.addr = local, addr
        agent.consent_until = agent.paths[(local, addr)] + self.consent_timeout
        self._events.append(PathSelected(agent.owner, local, addr))
        self._schedule(agent)

    def _schedule(self, agent: _Agent) -> None:
        # Refreshing consent moves no deadline; only a move to a path checked earlier can
        # bring the expiry forward.
        schedule(self._deadlines, agent, agent.consent_until)

    def _drop_path(self, agent: _Agent, path: tuple[Any, Address]) -> None:
        if self._by_path.get(path) is agent:
            del self._by_path[path]

    # --- time and events -----------------------------------------------------------------

    def get_timer(self) -> float | None:
        return self._deadlines.next()

    def handle_timer(self, now: float) -> None:
        for agent in due_agents(self._deadlines, now):
            if self._by_owner.get(agent.owner) is not agent or agent.addr is None:
                continue
            if agent.consent_until > now:
                self._schedule(agent)
                continue
            self._events.append(ConsentExpired(agent.owner, agent.local, agent.addr))
            agent.local = agent.addr = None

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None
