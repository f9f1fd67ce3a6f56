"""DTLS 1.2 for one session over pyOpenSSL memory BIOs, then DTLS-SRTP keying (RFC 5764).

Sans-I/O: the caller feeds received records (`receive`), takes the datagrams to send
(`datagrams_to_send`), and drives handshake retransmission with `get_timeout(now)` and
`handle_timeout(now)`. OpenSSL keeps its own retransmission clock, so `now` only places
its relative timeout on the caller's clock.

The certificate is aiortc's RTCCertificate, and the SSL context is aiortc's (its
ECDSA cipher list, use_srtp, peer certificate required); it is built once per
certificate (`DtlsContext`) and shared by every connection presenting it. The peer's
certificate is self-signed, so what authenticates it is its digest matching an
`a=fingerprint` of the remote SDP. The handshake may finish before that SDP arrives
(the SFU offered, the browser connects while its answer is in flight): the connection
then waits, keyed but not connected, until `set_remote_fingerprints`.
"""
from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass

from aiortc.rtcdtlstransport import (
    SRTP_AEAD_AES_128_GCM, SRTP_AES128_CM_SHA1_80, SRTP_PROFILES, X509_DIGEST_ALGORITHMS, RTCCertificate,
    RTCDtlsFingerprint, certificate_digest,
)
from OpenSSL import SSL
from pylibsrtp import Policy, Session

# What we accept, preferred first (OpenSSL picks by the server's order): GCM is both
# faster and smaller; AES128_CM_SHA1_80 is what every WebRTC stack has. aiortc's list
# holds only what this libsrtp build can do.
PROFILES = [p for p in (SRTP_AEAD_AES_128_GCM, SRTP_AES128_CM_SHA1_80) if p in SRTP_PROFILES]

# Our datagrams stay under the smallest path MTU WebRTC stacks assume (1200 bytes of UDP
# payload, as libwebrtc and aiortc's SCTP do), so a certificate flight never fragments in IP.
MTU = 1200

DTLS1_2_VERSION = 0xFEFD  # <openssl/prov_ssl.h>; pyOpenSSL does not name it
_RECORD_HEADER = 13  # content type, version, epoch, sequence number, length
# srtp_policy window for inbound packets: reordering by up to 1024 packets is not a replay.
REPLAY_WINDOW = 1024
# Application data held while the handshake waits for the remote fingerprint: the SCTP
# INIT a peer sends right after its Finished, and a few retransmissions of it.
PENDING_RECORDS = 16


class State(enum.Enum):
    HANDSHAKE = "handshake"
    UNVERIFIED = "unverified"  # handshake done, remote fingerprint not known yet
    CONNECTED = "connected"
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Connected:
    """The handshake is done and the peer's certificate matches its fingerprint; SRTP is keyed."""

    srtp_profile: str


@dataclass(frozen=True, slots=True)
class Failed:
    reason: str


@dataclass(frozen=True, slots=True)
class Closed:
    """The peer sent close_notify."""


@dataclass(frozen=True, slots=True)
class ApplicationData:
    """Decrypted application data: SCTP packets, for the data channels."""

    data: bytes


Event = Connected | Failed | Closed | ApplicationData


def fingerprint_of(certificate: RTCCertificate) -> RTCDtlsFingerprint:
    """The certificate's SHA-256 fingerprint, the one the SDP carries."""
    return next(f for f in certificate.getFingerprints() if f.algorithm == "sha-256")


def fingerprints_match(certificate, fingerprints: list[RTCDtlsFingerprint]) -> bool:
    """Whether `certificate` (a cryptography x509) matches: at least one fingerprint of an
    algorithm we know, and every such one equal (as aiortc checks)."""
    known = [f for f in fingerprints if f.algorithm.lower() in X509_DIGEST_ALGORITHMS]
    return bool(known) and all(
        f.value.upper() == certificate_digest(certificate, f.algorithm.lower()) for f in known
    )


def split_records(data: bytes, mtu: int) -> list[bytes]:
    """Pack a run of whole DTLS records into datagrams of at most `mtu` bytes, never
    splitting a record (a memory BIO hands over a whole flight as one run)."""
    datagrams = []
    start = pos = 0
    size = len(data)
    while pos + _RECORD_HEADER <= size:
        end = pos + _RECORD_HEADER + (data[pos + 11] << 8 | data[pos + 12])
        if end - start > mtu and pos > start:
            datagrams.append(data[start:pos])
            start = pos
        pos = end
    if start < size:
        datagrams.append(data[start:])
    return datagrams


@dataclass(frozen=True, slots=True)
class SrtpKeys:
    """What DTLS-SRTP keyed (RFC 5764 4.2): the profile, and the master key and salt of each
    direction. Another box given them carries the PeerConnection on (rtc/continuation.py)."""

    profile: str  # OpenSSL's name of the profile, e.g. SRTP_AEAD_AES_128_GCM
    rx: bytes  # the peer's key and salt: what we unprotect
    tx: bytes  # ours: what we protect

    def sessions(self) -> tuple[Session, Session]:
        """Fresh (inbound, outbound) SRTP sessions under these keys."""
        profile = next((p for p in PROFILES if p.openssl_profile.decode() == self.profile), None)
        if profile is None:
            raise ValueError(f"SRTP profile {self.profile!r} is not one this box can do")
        rx = Policy(key=self.rx, ssrc_type=Policy.SSRC_ANY_INBOUND, srtp_profile=profile.libsrtp_profile)
        rx.window_size = REPLAY_WINDOW
        tx = Policy(key=self.tx, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile.libsrtp_profile)
        # Retransmissions (NACK answers) send a sequence number again.
        tx.allow_repeat_tx = True
        return Session(rx), Session(tx)


def srtp_keys(ssl: SSL.Connection, server: bool) -> SrtpKeys | None:
    """The keys the handshake exported for the negotiated profile (RFC 5764 4.2: client key,
    server key, client salt, server salt), or None when no profile was negotiated."""
    selected = ssl.get_selected_srtp_profile()
    profile = next((p for p in PROFILES if p.openssl_profile == selected), None)
    if profile is None:
        return None
    material = ssl.export_keying_material(b"EXTRACTOR-dtls_srtp", 2 * (profile.key_length + profile.salt_length))
    return SrtpKeys(profile.openssl_profile.decode(), profile.get_key_and_salt(material, 0 if server else 1),
                    profile.get_key_and_salt(material, 1 if server else 0))


class DtlsContext:
    """One certificate's SSL context, for every connection that presents it."""

    def __init__(self, certificate: RTCCertificate, mtu: int = MTU) -> None:
        self.certificate = certificate
        self.fingerprint = fingerprint_of(certificate)
        self.mtu = mtu
        context = certificate._create_ssl_context(PROFILES)
        # The MTU is ours to set: a memory BIO has none to query.
        context.set_options(SSL.OP_NO_QUERY_MTU)
        context.set_min_proto_version(DTLS1_2_VERSION)
        context.set_max_proto_version(DTLS1_2_VERSION)
        self.ssl_context = context


class DtlsConnection:
    """One DTLS association. A client sends its ClientHello on `start()`; a server waits
    for one. After `Connected`, `srtp_rx`/`srtp_tx` protect and unprotect media."""

    def __init__(self, context: DtlsContext, server: bool, remote_fingerprints: list[RTCDtlsFingerprint] | None) -> None:
        self.server = server
        self.remote_fingerprints = remote_fingerprints
        self.state = State.HANDSHAKE
        self.srtp_profile: str | None = None
        self.srtp_rx: Session | None = None
        self.srtp_tx: Session | None = None
        self._mtu = context.mtu
        self._ssl = SSL.Connection(context.ssl_context, None)
        self._ssl.set_ciphertext_mtu(context.mtu)
        if server:
            self._ssl.set_accept_state()
        else:
            self._ssl.set_connect_state()
        self.srtp_keys: SrtpKeys | None = None
        self._out: list[bytes] = []
        self._pending: list[bytes] = []
        self._events: deque[Event] = deque()

    # --- input ---------------------------------------------------------------------------

    def start(self) -> None:
        if not self.server:
            self._handshake()

    def receive(self, data: bytes) -> None:
        """One received datagram of DTLS records."""
        if self.state in (State.FAILED, State.CLOSED):
            return
        self._ssl.bio_write(data)
        if self.state is State.HANDSHAKE:
            self._handshake()
        if self.state in (State.UNVERIFIED, State.CONNECTED):
            self._read()
        self._flush()

    def set_remote_fingerprints(self, fingerprints: list[RTCDtlsFingerprint]) -> None:
        self.remote_fingerprints = fingerprints
        if self.state is State.UNVERIFIED and self.srtp_keys is not None:
            self._verify(fingerprints, self.srtp_keys)

    def handle_timeout(self, now: float) -> None:
        if self.state is not State.HANDSHAKE:
            return
        try:
            self._ssl.DTLSv1_handle_timeout()
        except SSL.Error as e:  # OpenSSL gives up after too many retransmissions
            self._fail(f"handshake timed out ({e})")
        self._flush()

    # --- output --------------------------------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Send application data; False unless connected."""
        if self.state is not State.CONNECTED:
            return False
        try:
            self._ssl.send(data)
        except SSL.Error:
            return False
        self._flush()
        return True

    def close(self) -> None:
        """Send close_notify (when there is a connection to close) and stop."""
        if self.state in (State.UNVERIFIED, State.CONNECTED):
            try:
                self._ssl.shutdown()
            except SSL.Error:
                pass
            self._flush()
        self.state = State.CLOSED

    def datagrams_to_send(self) -> list[bytes]:
        out, self._out = self._out, []
        return out

    def get_timeout(self, now: float) -> float | None:
        """When `handle_timeout` is next due on the caller's clock, or None."""
        if self.state is not State.HANDSHAKE:
            return None
        delay = self._ssl.DTLSv1_get_timeout()
        return None if delay is None else now + delay

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    # --- inside --------------------------------------------------------------------------

    def _handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return
        except SSL.Error as e:
            self._fail(f"handshake failed ({e})")
            return
        self._flush()
        self.srtp_keys = keys = srtp_keys(self._ssl, self.server)
        if keys is None:
            self._fail("no SRTP profile negotiated")
            return
        self.state = State.UNVERIFIED
        if self.remote_fingerprints is not None:
            self._verify(self.remote_fingerprints, keys)

    def _verify(self, fingerprints: list[RTCDtlsFingerprint], keys: SrtpKeys) -> None:
        certificate = self._ssl.get_peer_certificate(as_cryptography=True)
        if certificate is None or not fingerprints_match(certificate, fingerprints):
            self._fail("the peer's certificate does not match the SDP fingerprint")
            return
        self.srtp_rx, self.srtp_tx = keys.sessions()
        self.srtp_profile = keys.profile
        self.state = State.CONNECTED
        self._events.append(Connected(self.srtp_profile))
        self._events.extend(ApplicationData(data) for data in self._pending)
        self._pending.clear()

    def _read(self) -> None:
        while True:
            try:
                data = self._ssl.recv(65536)
            except SSL.WantReadError:
                return
            except SSL.ZeroReturnError:
                self.state = State.CLOSED
                self._events.append(Closed())
                return
            except SSL.Error as e:  # a fatal alert from the peer
                self._fail(f"connection failed ({e})")
                return
            if self.state is State.CONNECTED:
                self._events.append(ApplicationData(data))
            elif len(self._pending) < PENDING_RECORDS:
                self._pending.append(data)

    def _fail(self, reason: str) -> None:
        self.state = State.FAILED
        self._flush()  # the alert OpenSSL queued, if any
        self._events.append(Failed(reason))

    def _flush(self) -> None:
        chunks = []
        while True:
            try:
                chunk = self._ssl.bio_read(65536)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        if chunks:
            self._out += split_records(b"".join(chunks), self._mtu)
