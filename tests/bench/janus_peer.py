"""A load peer for Janus: one PeerConnection from one UDP socket, what a full ICE agent (Janus, through
libnice) needs of its peer, then DTLS and SRTP as the box bench's load peer does (tests/bench/sfu_load.py).

Janus is a full agent, unlike the box: it sends its own connectivity checks and nominates when it
controls. So this peer is a full agent too, of one host candidate: it checks Janus's candidates (with
USE-CANDIDATE when it controls: aggressive nomination), answers Janus's checks, and when controlled waits
for Janus's nomination. It encodes nothing: RTP payloads are zeros, and received media is counted, not
decrypted. In Chrome mode it sends and answers what the box bench's Chrome-mode peer does (janus_sdp.py).
"""
from __future__ import annotations

import secrets
import socket
import struct
import time

from aiortc.rtcdtlstransport import RTCCertificate

from appliance.rtc.dtls import Connected, DtlsConnection, DtlsContext, Failed
from appliance.sfu import extensions
from appliance.sfu.transport import TransportReceiver
from appliance.stun import Attr, Class, Message, Method, StunError, short_term_key
from tests.bench import janus_sdp
from tests.bench.janus_sdp import LocalIce, RemoteDescription

CONTEXT = DtlsContext(RTCCertificate.generateCertificate())
PRFLX_PRIORITY = 110 << 24 | 0xFFFF << 8 | 255  # RFC 8445 7.1.1: what a peer-reflexive candidate would get
CHECK_INTERVAL = 0.05
CONNECT_TIMEOUT = 15.0
RECEIVE_BUFFER = 1 << 20
# As the box bench's Chrome-mode peer: feedback about every 50 ms, the mid on each SSRC's first 64 packets,
# and a publisher that reads (and drops) what came back every 64 packets.
FEEDBACK_INTERVAL = 0.05
MID_PACKETS = 64
DRAIN_EVERY = 64
_HEADER = struct.Struct(">BBHII")


class JanusPeer:
    """One PeerConnection to Janus. Made in the namespace whose address `host` is: the socket stays there."""

    def __init__(self, host: str, chrome: bool) -> None:
        self.chrome = chrome
        self.ufrag, self.pwd = secrets.token_hex(4), secrets.token_hex(12)
        self._key = short_term_key(self.pwd)
        self._tie_breaker = secrets.randbits(64)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self.sock.bind((host, 0))
        self.dtls: DtlsConnection | None = None
        # Sending, in Chrome mode: the extension ids Janus answered, the SSRCs whose m-section took
        # transport-cc (Janus takes it for video only), the transport-wide number of the last packet, and
        # how many more packets of each SSRC name its mid.
        self._transport_cc_id: int | None = None
        self._mid_id: int | None = None
        self._numbered: set[int] = set()
        self._transport_seq = 0
        self._mids: dict[int, tuple[bytes, int]] = {}
        # Receiving, in Chrome mode: Janus's transport-wide numbers, reported back.
        self._transport_in: TransportReceiver | None = None
        self._rtcp_ssrc = secrets.randbits(32)
        self._media_ssrc = 0
        self._feedback_at = 0.0

    def _ice(self) -> LocalIce:
        host, port = self.sock.getsockname()
        return LocalIce(self.ufrag, self.pwd, CONTEXT.fingerprint.value, host, port)

    # --- negotiation ---------------------------------------------------------------------------------------

    def offer(self, ssrcs: dict[str, int]) -> str:
        """A publisher's offer for audio and video under `ssrcs`."""
        return janus_sdp.offer(self._ice(), ssrcs, secrets.randbits(32) if self.chrome else None)

    def publish(self, answer: RemoteDescription, ssrcs: dict[str, int]) -> None:
        """Connect with Janus's answer to `offer` (the offerer controls ICE)."""
        if self.chrome:
            self._transport_cc_id = answer.extension_id(extensions.TRANSPORT_CC)
            self._mid_id = answer.extension_id(extensions.MID)
            for section in answer.sections:
                if extensions.TRANSPORT_CC in section.extensions:
                    self._numbered.add(ssrcs[section.kind])
                self._mids[ssrcs[section.kind]] = (section.mid.encode(), MID_PACKETS)
        self._connect(answer, controlling=True)

    def answer(self, offer: RemoteDescription) -> str:
        """A subscriber's answer to Janus's offer."""
        if self.chrome:
            ext_id = offer.extension_id(extensions.TRANSPORT_CC)
            self._transport_in = None if ext_id is None else TransportReceiver(ext_id)
        return janus_sdp.answer(self._ice(), offer, self.chrome)

    def subscribe(self, offer: RemoteDescription) -> None:
        """Connect with Janus's offer, once it has `answer` (Janus, the offerer, controls ICE)."""
        self._connect(offer, controlling=False)

    # --- ICE and DTLS ------------------------------------------------------------------------------------

    def _connect(self, remote: RemoteDescription, controlling: bool) -> None:
        """Full ICE against Janus's candidates, then the DTLS handshake; raises unless both finish in time."""
        self.dtls = dtls = DtlsConnection(CONTEXT, remote.setup == "active", [remote.fingerprint])
        remote_key = short_term_key(remote.pwd)
        checks: dict[bytes, tuple[str, int]] = {}  # transaction id -> where the check went
        valid: tuple[str, int] | None = None  # the pair our own check proved
        nominated = controlling  # controlling, we nominate with every check; controlled, Janus must
        # Janus (libnice) drops DTLS until its own check of the pair has succeeded: a ClientHello sent before
        # it has checked us is lost and OpenSSL waits a whole second to send it again.
        checked_by_janus = False
        next_check = 0.0
        started = False
        deadline = time.monotonic() + CONNECT_TIMEOUT
        while time.monotonic() < deadline:
            now = time.monotonic()
            if valid is None and now >= next_check:
                for candidate in remote.candidates:
                    check = self._check(remote.ufrag, controlling)
                    checks[check.transaction_id] = candidate
                    self.sock.sendto(check.encode(remote_key, fingerprint=True), candidate)
                next_check = now + CHECK_INTERVAL
            if not started and valid is not None and nominated and checked_by_janus:
                self.sock.connect(valid)
                dtls.start()
                started = True
            if started:
                timeout = dtls.get_timeout(now)
                if timeout is not None and now >= timeout:
                    dtls.handle_timeout(now)
                for datagram in dtls.datagrams_to_send():
                    self.sock.send(datagram)
                for event in iter(dtls.next_event, None):
                    if isinstance(event, Connected):
                        self.sock.setblocking(False)
                        return
                    if isinstance(event, Failed):
                        raise RuntimeError(f"DTLS with Janus failed: {event.reason}")
            self.sock.settimeout(CHECK_INTERVAL / 2)
            try:
                data, source = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            if data[0] < 4:
                message = self._stun(data, source)
                if message is None:
                    continue
                if message.message_class == Class.REQUEST:
                    checked_by_janus = True
                    nominated = nominated or Attr.USE_CANDIDATE in message
                elif message.message_class == Class.SUCCESS and message.transaction_id in checks:
                    if message.check_integrity(remote_key) and checks[message.transaction_id] == source:
                        valid = source
            elif 19 < data[0] < 64:
                dtls.receive(data)
        raise RuntimeError(f"no ICE and DTLS with Janus within {CONNECT_TIMEOUT} s "
                           f"(pair valid: {valid}, nominated: {nominated}, DTLS: {dtls.state.value})")

    def _check(self, remote_ufrag: str, controlling: bool) -> Message:
        role = (Attr.ICE_CONTROLLING if controlling else Attr.ICE_CONTROLLED, self._tie_breaker)
        attributes = [(Attr.USERNAME, f"{remote_ufrag}:{self.ufrag}"), (Attr.PRIORITY, PRFLX_PRIORITY), role]
        if controlling:
            attributes.append((Attr.USE_CANDIDATE, True))
        return Message(Method.BINDING, Class.REQUEST, attributes=attributes)

    def _stun(self, data: bytes, source: tuple[str, int]) -> Message | None:
        """Parse a STUN message and answer it if it is Janus's check; None if it is not a Binding at all."""
        try:
            message = Message.parse(data)
        except StunError:
            return None
        if message.method != Method.BINDING:
            return None
        if message.message_class == Class.REQUEST:
            username = message.get(Attr.USERNAME, "")
            if not username.startswith(f"{self.ufrag}:") or not message.check_integrity(self._key):
                return None
            answer = message.success((Attr.XOR_MAPPED_ADDRESS, source))
            self.sock.sendto(answer.encode(self._key, fingerprint=True), source)
        return message

    # --- media ---------------------------------------------------------------------------------------------

    def send_rtp(self, pt: int, seq: int, ts: int, ssrc: int, payload: bytes) -> None:
        """One packet; in Chrome mode with the next transport-wide number (and the mid on the SSRC's first
        packets), and now and then reading what Janus sent back."""
        if self.dtls is None or self.dtls.srtp_tx is None:
            raise RuntimeError("send_rtp before the PeerConnection is connected")
        elements = b""
        if self._transport_cc_id is not None and ssrc in self._numbered:
            self._transport_seq = number = (self._transport_seq + 1) & 0xFFFF
            elements = bytes((self._transport_cc_id << 4 | 1, number >> 8, number & 0xFF))
            if number % DRAIN_EVERY == 0:
                self.drain()
        mid, left = self._mids.get(ssrc, (b"", 0))
        if left and self._mid_id is not None:
            self._mids[ssrc] = (mid, left - 1)
            elements += bytes((self._mid_id << 4 | len(mid) - 1,)) + mid
        first = 0x90 if elements else 0x80
        self._send(self.dtls.srtp_tx.protect(_HEADER.pack(first, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
                                             + extensions.block(elements) + payload))

    def _send(self, datagram: bytes) -> None:
        try:
            self.sock.send(datagram)
        except BlockingIOError:
            pass

    def drain(self) -> int:
        """Read what arrived; how many RTP packets (RTCP and STUN are not media: Janus's checks are
        answered). In Chrome mode the transport-wide numbers are noted and feedback sent when due."""
        count = 0
        receiver = self._transport_in
        while True:
            try:
                data, source = self.sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                break
            first = data[0]
            if 127 < first < 192:
                if 191 < data[1] < 224:  # RTCP (RFC 5761)
                    continue
                count += 1
                if receiver is not None:
                    number = extensions.find(data, receiver.ext_id)
                    if number is not None and len(number) == 2:
                        receiver.arrived(number[0] << 8 | number[1], time.monotonic())
                        self._media_ssrc = int.from_bytes(data[8:12], "big")
            elif first < 4:
                self._stun(data, source)
        if receiver is not None:
            self._send_feedback(receiver)
        return count

    def _send_feedback(self, receiver: TransportReceiver) -> None:
        now = time.monotonic()
        if self.dtls is None or self.dtls.srtp_tx is None or now - self._feedback_at < FEEDBACK_INTERVAL:
            return
        self._feedback_at = now
        packet = receiver.report(self._rtcp_ssrc, self._media_ssrc)
        if packet is not None:
            self._send(self.dtls.srtp_tx.protect_rtcp(packet))

    def close(self) -> None:
        self.sock.close()
