"""The media port: every session's STUN, DTLS and SRTP on one UDP port (ARCHITECTURE
principle 3), and on ICE-TCP connections when configured.

Per datagram, the first byte says what it is (RFC 7983): STUN requests go to the ICE-lite
responder, responses to the checks of sessions that control ICE toward a third party
(`checks`; their paths then work as the responder's do). The responder finds the session by USERNAME and selects the 5-tuple it came from;
DTLS and SRTP/SRTCP find their session by that 5-tuple, one dict lookup in the
receiving listener's `sessions` (a miss asks the responder whether the 5-tuple is
another validated path of a session, which then moves there). SRTP is unprotected and handed to the session's
handler in the same call; the handler (the SFU router) forwards with `send_rtp`, which
protects and sends at once: one synchronous path from recvfrom to sendto (principle 4).
Where the compiled send path is built (sendbatch.py) and a shell flushes, `send_rtp` on a UDP
socket queues instead, and `flush` protects and sends the queue with one sendmmsg: a fan-out to N
subscribers then costs one system call, not N. The shell flushes at the end of each readiness
callback and soon after whatever else queued (`flush_soon`); RTCP, STUN and DTLS go out at once.

Sans-I/O in the TURN core's way: the port never opens a socket. The shell gives it a
*sink* per local transport (a UDP socket, or an ICE-TCP connection's framer), and the
port calls `sink.sendto(data, addr)`; tests hand it recording sinks.
"""
from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pylibsrtp
from aiortc.rtcdtlstransport import RTCDtlsFingerprint

from ..plumbing.deadlines import Deadlines
from . import continuation, recvbatch, sendbatch
from .dtls import ApplicationData, Closed, Connected, DtlsConnection, DtlsContext, Failed, SrtpKeys, State
from .checks import ChecksFailed, IceControlling
from .ice import CONSENT_TIMEOUT, Address, ConsentExpired, IceLite, PathSelected


@dataclass(frozen=True, slots=True)
class PathClosed:
    """The selected path's ICE-TCP connection closed; the next valid check selects again."""

    local: Any
    addr: Address


# What a handler's `event` receives: the path moved (ICE), consent ran out, the
# connection closed, our own checks found no path; DTLS connected (SRTP flows from then
# on), failed or was closed.
Event = PathSelected | ConsentExpired | PathClosed | ChecksFailed | Connected | Failed | Closed


class SessionHandler(Protocol):
    """What the SFU gives the port for each session: where that session's input goes.

    `rtp` and `rtcp` are on the hot path: they run inside the datagram's own call, get
    the decrypted packet (compound RTCP whole) and should forward with `send_rtp` before
    returning.
    """

    def rtp(self, packet: bytes, now: float) -> None: ...

    def rtcp(self, packet: bytes, now: float) -> None: ...

    def data(self, data: bytes) -> None:
        """DTLS application data: SCTP packets for the data channels."""

    def event(self, event: Event, now: float) -> None: ...


class Listener:
    """A local transport the port receives on: a UDP socket, or one ICE-TCP connection.
    `sessions` maps a remote address to the session whose selected path it is. A `batched`
    one (a UDP socket, with the compiled send path) queues RTP in `pending` until `flush`."""

    __slots__ = ("sink", "sessions", "batched", "pending")

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.sessions: dict[Address, Session] = {}
        self.batched = False
        self.pending: list[tuple[sendbatch.Target, bytes]] = []


class Session:
    """One PeerConnection on the port. `srtp_rx`/`srtp_tx` are set while it can carry
    media: DTLS connected (or its SRTP resumed from another box) and a selected path."""

    __slots__ = (
        "handler", "context", "server", "remote_fingerprints", "listener", "addr", "dtls", "srtp_rx", "srtp_tx",
        "dtls_at", "resumed", "rtcp_sent", "tx_target", "rx_context",
    )

    def __init__(self, handler: SessionHandler, context: DtlsContext, server: bool | None,
                 remote_fingerprints: list[RTCDtlsFingerprint] | None) -> None:
        self.handler = handler
        # The certificate whose fingerprint the session's descriptions carry: it stays the
        # session's when the box (or the cluster) moves to a new one.
        self.context = context
        self.server = server
        self.remote_fingerprints = remote_fingerprints
        self.listener: Listener | None = None
        self.addr: Address | None = None
        self.dtls: DtlsConnection | None = None
        self.srtp_rx: pylibsrtp.Session | None = None
        self.srtp_tx: pylibsrtp.Session | None = None
        # srtp_rx's srtp_t for the compiled receive path (recvbatch.py), set with srtp_rx while it has one.
        self.rx_context: int | None = None
        self.dtls_at: float | None = None
        # A PeerConnection carried on from another box: its keys and SRTP sessions, no DTLS.
        self.resumed: tuple[SrtpKeys, pylibsrtp.Session, pylibsrtp.Session] | None = None
        # SRTCP packets sent per SSRC (the first of each compound): where another box's SRTCP
        # index must start past (continuation.advance_rtcp).
        self.rtcp_sent: dict[int, int] = {}
        # Where `send_rtp` queues this session's packets, while it carries media on a batched listener.
        self.tx_target: sendbatch.Target | None = None

    @property
    def keys(self) -> SrtpKeys | None:
        """The SRTP keys media flows under, once it can."""
        if self.resumed is not None:
            return self.resumed[0]
        dtls = self.dtls
        return dtls.srtp_keys if dtls is not None and dtls.state is State.CONNECTED else None


@dataclass(slots=True)
class PortCounters:
    malformed: int = 0
    unmatched: int = 0  # DTLS or SRTP from a 5-tuple no session has selected
    resumed: int = 0  # PeerConnections carried on from another box
    srtp_errors: int = 0  # failed authentication or replay, both ways
    send_errors: int = 0


class MediaPort:
    def __init__(self, context: DtlsContext, consent_timeout: float = CONSENT_TIMEOUT) -> None:
        self.context = context  # what new sessions present
        # Every certificate a session may still present, by its SHA-256 fingerprint's value.
        self.contexts: dict[str, DtlsContext] = {context.fingerprint.value: context}
        self.ice = IceLite(consent_timeout)
        self.checks = IceControlling(consent_timeout)
        # The UDP sockets, each with whether it is IPv6: a check goes out on those of its
        # candidate's family.
        self._udp: list[tuple[Listener, bool]] = []
        self.counters = PortCounters()
        # The shell's alarm clock: called with each new deadline (consent, DTLS retransmission),
        # which may be earlier than the one it waits for. Deadlines come from datagrams, timers
        # and the SFU's own calls alike, so the port tells rather than being polled.
        self.wake: Callable[[float], None] | None = None
        self._dtls_deadlines: Deadlines[Session] = Deadlines()
        # Told of SRTP or SRTCP from a 5-tuple no session here has: the cluster may hold the
        # PeerConnection on another box, or a box that died did (listener, datagram, source, now).
        self.on_stray: Callable[[Listener, bytes, Address, float], None] | None = None
        # The shell's, when it flushes: called as `send_rtp` queues the first packet since the last
        # `flush`, which the shell then calls before the event loop waits again. UDP sockets added
        # while it is set batch their RTP, if the compiled send path is here.
        self.flush_soon: Callable[[], None] | None = None
        self._sendbatch = sendbatch.EXTENSION
        # The compiled receive path, read by the shell (whether to read batches) and `read_datagrams`.
        self.recvbatch = recvbatch.EXTENSION
        self._queued: list[Listener] = []  # the listeners whose `pending` is not empty

    # --- what the SFU layer calls ----------------------------------------------------------

    def add_session(self, handler: SessionHandler, ufrag: str, pwd: str, *, remote_ufrag: str | None = None,
                    remote_fingerprints: list[RTCDtlsFingerprint] | None = None,
                    server: bool | None = None, controlling: bool = False,
                    certificate: str | None = None) -> Session:
        """Register a session by its local ICE credentials (those in the SDP we send).

        `server` is our DTLS role from the SDP's a=setup (passive: True, active: False);
        None until the answer to our own actpass offer says, and a ClientHello arriving
        first makes us the server. The remote ufrag and fingerprints may come later too,
        with `set_remote`. A `controlling` session finds its path with `connect`. `certificate`
        (a fingerprint's value) names the certificate to present, the current one by default.
        """
        session = Session(handler, self.contexts.get(certificate or "", self.context), server, remote_fingerprints)
        self.ice.add(session, ufrag, pwd, remote_ufrag, controlling)
        return session

    def use_certificates(self, current: DtlsContext, others: list[DtlsContext]) -> None:
        """Present `current` to new sessions; sessions that began with one of `others` keep it."""
        self.context = current
        self.contexts = {context.fingerprint.value: context for context in (current, *others)}

    def connect(self, session: Session, ufrag: str, remote_ufrag: str, remote_pwd: str,
                candidates: list[Address], now: float) -> None:
        """Control ICE toward the remote (a third-party, ICE-lite endpoint): check each of its
        UDP candidates, best first, from our sockets of that address family."""
        pairs = [(listener, addr) for addr in candidates for listener, ipv6 in self._udp if ipv6 == (":" in addr[0])]
        self.checks.start(session, ufrag, remote_ufrag, remote_pwd, pairs, now)
        self._ice_events(now)

    def set_remote(self, session: Session, ufrag: str, fingerprints: list[RTCDtlsFingerprint], server: bool,
                   now: float) -> None:
        """The remote description arrived: its ufrag, fingerprints and our DTLS role."""
        self.ice.set_remote(session, ufrag)
        session.remote_fingerprints = fingerprints
        dtls = session.dtls
        if dtls is None:
            session.server = server
            if not server and session.addr is not None:
                self._start_dtls(session, server, now)
        else:
            dtls.set_remote_fingerprints(fingerprints)
            self._dtls_output(session, dtls, now)

    def restart_ice(self, session: Session, ufrag: str, pwd: str, remote_ufrag: str) -> None:
        """New ICE credentials for the session (an ICE restart); DTLS and SRTP go on as they were."""
        self.ice.restart(session, ufrag, pwd, remote_ufrag)

    def resume(self, session: Session, listener: Listener, addr: Address, keys: SrtpKeys,
               inbound: dict[int, int], outbound: dict[int, int], rtcp_sent: dict[int, int], now: float) -> None:
        """Carry on, with no handshake, a PeerConnection another box held: its SRTP under `keys`,
        each stream's counters where that box left them (packet indices `inbound` and `outbound`,
        SRTCP packets sent `rtcp_sent`, all by SSRC), on the path `addr` its media now reaches
        here by. The handler hears `Connected` as it would after DTLS."""
        rx, tx = keys.sessions()
        for ssrc, index in outbound.items():
            continuation.advance_sender(tx, ssrc, index)
        for ssrc, index in inbound.items():
            continuation.advance_receiver(rx, keys, ssrc, index)
        for ssrc, count in rtcp_sent.items():
            continuation.advance_rtcp(tx, ssrc, count)
        session.resumed = (keys, rx, tx)
        session.rtcp_sent = dict(rtcp_sent)
        self.counters.resumed += 1
        self.ice.adopt(session, listener, addr, now)
        self._ice_events(now)
        session.handler.event(Connected(keys.profile), now)

    def remove_session(self, session: Session, quietly: bool = False) -> None:
        """Forget the session, telling the peer with a DTLS close_notify, unless `quietly` (it
        goes on on another box)."""
        if session.dtls is not None and not quietly:
            session.dtls.close()
            for datagram in session.dtls.datagrams_to_send():
                self._send(session, datagram)
        self.ice.remove(session)
        self.checks.remove(session)
        self._unselect(session)

    def send_rtp(self, session: Session, packet: bytes) -> bool:
        """Protect and send one RTP packet now, or queue it for `flush` on a batched listener;
        False when the session cannot carry media yet (or any more), or the packet is refused
        (a queued packet refused later is only counted).

        Once per packet per subscriber, so written out rather than sharing `send_rtcp`'s
        steps through `_send`: the extra call measured 0.15 us of 5.0 (bench_media_port). The SFU's
        compiled fan-out (appliance/sfu/_fanout.c) queues as this does, on sessions with a
        `tx_target`: a change here is one there (tests/unit/sfu/test_fanout.py compares them).
        """
        srtp, listener = session.srtp_tx, session.listener
        if srtp is None or listener is None:  # srtp_tx is set only while a path is selected
            return False
        target = session.tx_target
        if target is not None:
            pending = listener.pending
            if not pending:
                self._queue(listener)
            pending.append((target, packet))
            return True
        try:
            data = srtp.protect(packet)
        except (pylibsrtp.Error, ValueError):
            self.counters.srtp_errors += 1
            return False
        try:
            listener.sink.sendto(data, session.addr)
        except OSError:
            self.counters.send_errors += 1
            return False
        return True

    def flush(self) -> None:
        """Protect and send what `send_rtp` queued, one sendmmsg per socket and up to 64 packets."""
        queued, extension = self._queued, self._sendbatch
        if not queued or extension is None:
            return
        self._queued = []
        protect_and_send, protect = extension
        counters = self.counters
        for listener in queued:
            items, listener.pending = listener.pending, []
            fd = listener.sink.fileno()
            if fd < 0:  # closed by the shell since
                counters.send_errors += len(items)
                continue
            _, srtp_errors, send_errors = protect_and_send(fd, protect, items)
            counters.srtp_errors += srtp_errors
            counters.send_errors += send_errors

    def send_rtcp(self, session: Session, packet: bytes) -> bool:
        """Protect and send one (compound) RTCP packet now, as `send_rtp`."""
        srtp = session.srtp_tx
        if srtp is None:
            return False
        try:
            data = srtp.protect_rtcp(packet)
        except (pylibsrtp.Error, ValueError):
            self.counters.srtp_errors += 1
            return False
        ssrc = int.from_bytes(packet[4:8], "big")
        sent = session.rtcp_sent
        sent[ssrc] = sent.get(ssrc, 0) + 1
        return self._send(session, data)

    def send_data(self, session: Session, data: bytes, now: float) -> bool:
        """DTLS application data (SCTP); False unless DTLS is connected."""
        dtls = session.dtls
        if dtls is None or not dtls.send(data):
            return False
        self._dtls_output(session, dtls, now)
        return True

    # --- what the shell calls ----------------------------------------------------------------

    def add_udp(self, listener: Listener, address: Address) -> None:
        """A UDP socket bound to `address`: one the port's own checks can go out on, and that
        batches RTP when the compiled send path is here and the shell flushes."""
        self._udp.append((listener, ":" in address[0]))
        listener.batched = (self._sendbatch is not None and self.flush_soon is not None
                            and isinstance(listener.sink, socket.socket))

    def udp(self, listener: Listener | None) -> bool:
        """Whether `listener` is one of the UDP sockets (not an ICE-TCP connection)."""
        return any(listener is udp for udp, _ in self._udp)

    def udp_listener(self, addr: Address) -> Listener | None:
        """The UDP socket that sends to `addr`'s address family (the first, when there are several)."""
        return next((udp for udp, ipv6 in self._udp if ipv6 == (":" in addr[0])), None)

    def datagram_received(self, listener: Listener, data: bytes, addr: Address, now: float) -> None:
        if len(data) < 12:  # shorter than any RTP header, DTLS record or STUN header
            self.counters.malformed += 1
            return
        first = data[0]
        if 127 < first < 192:
            session = listener.sessions.get(addr)
            if session is None:
                self._srtp_off_path(listener, data, addr, now)
                return
            srtp = session.srtp_rx
            if srtp is None:
                self.counters.unmatched += 1
                return
            # RFC 5761 4: RTCP packet types 192-223 sit where RTP's marker bit and payload types 64-95 would.
            rtcp = 191 < data[1] < 224
            try:
                packet = srtp.unprotect_rtcp(data) if rtcp else srtp.unprotect(data)
            except (pylibsrtp.Error, ValueError):
                self.counters.srtp_errors += 1
                return
            if rtcp:
                session.handler.rtcp(packet, now)
            else:
                session.handler.rtp(packet, now)
        elif first < 4:
            if first & 1:  # the class's high bit (RFC 8489 5): a response, to one of our checks
                self.checks.receive(data, listener, addr, now)
                self._ice_events(now)
                return
            answer = self.ice.receive(data, listener, addr, now)
            if answer is not None:
                try:
                    listener.sink.sendto(answer, addr)
                except OSError:
                    self.counters.send_errors += 1
            self._ice_events(now)
        elif 19 < first < 64:
            session = listener.sessions.get(addr)
            if session is None:
                # DTLS on a validated path the session has not selected: during the handshake the
                # peer chose that pair. Later only authenticated SRTP moves a session (a forged
                # source address must not), so anything else there is dropped.
                session = self.ice.owner_at(listener, addr, now)
                if session is None or (session.dtls is not None and session.dtls.state is not State.HANDSHAKE):
                    self.counters.unmatched += 1
                    return
                self.ice.select(session, listener, addr)
                self._ice_events(now)
            if session.resumed is not None:
                # The DTLS association stayed on the box that ended: its records cannot be read here.
                self.counters.unmatched += 1
                return
            dtls = session.dtls
            if dtls is None:
                # A ClientHello before the answer to our actpass offer: the peer is the client.
                session.server = True
                dtls = self._start_dtls(session, True, now)
            dtls.receive(data)
            self._dtls_output(session, dtls, now)
        else:
            self.counters.malformed += 1

    def read_datagrams(self, listener: Listener, fd: int, limit: int, now: float) -> None:
        """Read up to `limit` datagrams waiting on `listener`'s UDP socket `fd` and handle each as
        `datagram_received` does, in one call of the compiled receive path (the shell calls this where
        `recvbatch` is built): SRTP and SRTCP on a selected path are unprotected where they were read
        and go to the session's handler; everything else goes through `datagram_received`."""
        extension = self.recvbatch
        assert extension is not None, "the shell reads batches only where the extension is built"
        extension.receive(fd, limit, listener.sessions, extension.rtp, extension.rtcp, self.datagram_received,
                          listener, self.counters, now)

    def listener_closed(self, listener: Listener, now: float) -> None:
        """An ICE-TCP connection is gone: its sessions lose their selected path."""
        for addr, session in list(listener.sessions.items()):
            self.ice.forget_path(session)
            self._unselect(session)
            session.handler.event(PathClosed(listener, addr), now)

    def get_timer(self) -> float | None:
        timers = [t for t in (self.ice.get_timer(), self.checks.get_timer(), self._dtls_deadlines.next())
                  if t is not None]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        self.ice.handle_timer(now)
        self.checks.handle_timer(now)
        self._ice_events(now)
        for session in list(self._dtls_deadlines.due(now)):
            dtls = session.dtls
            if dtls is None or session.dtls_at is None or session.dtls_at > now:
                continue  # superseded by an earlier deadline that has been handled
            session.dtls_at = None
            dtls.handle_timeout(now)
            self._dtls_output(session, dtls, now)

    # --- inside ------------------------------------------------------------------------------

    def _srtp_off_path(self, listener: Listener, data: bytes, addr: Address, now: float) -> None:
        """SRTP from a 5-tuple no session has selected: if it is a validated path of a connected
        session and the packet authenticates with that session's keys, the peer has moved its
        media there (see `ice`), and so does the session; else it is dropped."""
        session = self.ice.owner_at(listener, addr, now)
        if session is None:
            self.counters.unmatched += 1
            if self.on_stray is not None:
                self.on_stray(listener, data, addr, now)
            return
        dtls = session.dtls
        if session.resumed is not None:
            srtp_rx = session.resumed[1]
        elif dtls is not None and dtls.state is State.CONNECTED and dtls.srtp_rx is not None:
            srtp_rx = dtls.srtp_rx
        else:
            self.counters.unmatched += 1
            return
        rtcp = 191 < data[1] < 224
        try:
            packet = srtp_rx.unprotect_rtcp(data) if rtcp else srtp_rx.unprotect(data)
        except (pylibsrtp.Error, ValueError):
            self.counters.unmatched += 1
            return
        self.ice.select(session, listener, addr)
        self._ice_events(now)
        if rtcp:
            session.handler.rtcp(packet, now)
        else:
            session.handler.rtp(packet, now)

    def _ice_events(self, now: float) -> None:
        """Carry out what the responder and the checks decided, after anything that may have
        changed it: their checks sent, their timers armed, their events applied."""
        for local, addr, data in self.checks.datagrams_to_send():
            try:
                local.sink.sendto(data, addr)
            except OSError:
                self.counters.send_errors += 1
        for when in (self.ice.get_timer(), self.checks.get_timer()):
            if when is not None and self.wake is not None:
                self.wake(when)
        while (event := self.ice.next_event() or self.checks.next_event()) is not None:
            session = event.owner
            if isinstance(event, PathSelected):
                self._unselect(session)
                session.listener, session.addr = event.local, event.addr
                event.local.sessions[event.addr] = session
                if session.dtls is None and session.resumed is None:
                    if session.server is False:
                        self._start_dtls(session, False, now)
                else:
                    self._media_ready(session)
            else:
                self._unselect(session)
            session.handler.event(event, now)

    def _unselect(self, session: Session) -> None:
        listener, addr = session.listener, session.addr
        if listener is not None and addr is not None and listener.sessions.get(addr) is session:
            del listener.sessions[addr]
        session.listener = session.addr = None
        session.srtp_rx = session.srtp_tx = None
        session.rx_context = None
        session.tx_target = None

    def _media_ready(self, session: Session) -> None:
        dtls, resumed = session.dtls, session.resumed
        if session.addr is None:
            session.srtp_rx = session.srtp_tx = None
        elif resumed is not None:
            session.srtp_rx, session.srtp_tx = resumed[1], resumed[2]
        elif dtls is not None and dtls.state is State.CONNECTED:
            session.srtp_rx, session.srtp_tx = dtls.srtp_rx, dtls.srtp_tx
        else:
            session.srtp_rx = session.srtp_tx = None
        srtp_rx = session.srtp_rx
        session.rx_context = (sendbatch.srtp_address(srtp_rx) if srtp_rx is not None and self.recvbatch is not None
                              else None)
        listener, srtp, addr = session.listener, session.srtp_tx, session.addr
        session.tx_target = (sendbatch.target(srtp, listener.sink.family, addr)
                             if listener is not None and listener.batched and srtp is not None and addr is not None
                             else None)

    def _queue(self, listener: Listener) -> None:
        queued = self._queued
        queued.append(listener)
        if len(queued) == 1 and self.flush_soon is not None:
            self.flush_soon()

    def _start_dtls(self, session: Session, server: bool, now: float) -> DtlsConnection:
        session.dtls = dtls = DtlsConnection(session.context, server, session.remote_fingerprints)
        dtls.start()
        self._dtls_output(session, dtls, now)
        return dtls

    def _dtls_output(self, session: Session, dtls: DtlsConnection, now: float) -> None:
        for datagram in dtls.datagrams_to_send():
            self._send(session, datagram)
        while (event := dtls.next_event()) is not None:
            if isinstance(event, ApplicationData):
                session.handler.data(event.data)
                continue
            self._media_ready(session)
            session.handler.event(event, now)
        when = dtls.get_timeout(now)
        if when is not None and (session.dtls_at is None or when < session.dtls_at):
            session.dtls_at = when
            self._dtls_deadlines.push(when, session)
            if self.wake is not None:
                self.wake(when)

    def _send(self, session: Session, data: bytes) -> bool:
        listener = session.listener
        if listener is None:
            return False
        try:
            listener.sink.sendto(data, session.addr)
        except OSError:
            self.counters.send_errors += 1
            return False
        return True
