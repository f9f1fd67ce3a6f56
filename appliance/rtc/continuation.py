"""Carrying a PeerConnection's SRTP on from another box (issue 19: failover).

The keys DTLS derived are enough to protect and unprotect, but a fresh libsrtp session also has to
stand where the old one stood, or the peer drops what it sends: each SRTP stream's rollover counter
(RFC 3711 3.3.1: the index is ROC * 65536 + sequence number, and the ROC is never sent) and each
SRTCP stream's index (sent, but the peer's replay window refuses one it has passed, RFC 3711 3.4).
pylibsrtp 1.0 exposes neither srtp_set_stream_roc nor the SRTCP index, so a fresh session is walked
there: throwaway packets are protected (and, inbound, unprotected) until its counters are where the
checkpoint says, plus a margin. None of them is ever sent. A walk costs a few packets per 16384
sequence numbers for RTP, one per SRTCP index, a few microseconds each.
"""
from __future__ import annotations

import base64
import struct

from pylibsrtp import Policy, Session

from .dtls import PROFILES, SrtpKeys

STEP = 0x4000  # well under half the sequence space: libsrtp's index guess follows each step forward
_RTP = struct.Struct(">BBHII")
_PAYLOAD = bytes(4)


def encode_keys(keys: SrtpKeys) -> dict:
    return {"profile": keys.profile, "rx": base64.b64encode(keys.rx).decode(),
            "tx": base64.b64encode(keys.tx).decode()}


def decode_keys(raw: object) -> SrtpKeys:
    """Raises ValueError or TypeError for what is not a set of keys this box can use."""
    if not isinstance(raw, dict):
        raise TypeError("SRTP keys are an object")
    profile, rx, tx = raw.get("profile"), raw.get("rx"), raw.get("tx")
    if not all(isinstance(v, str) for v in (profile, rx, tx)):
        raise TypeError("SRTP keys are strings")
    keys = SrtpKeys(str(profile), base64.b64decode(str(rx), validate=True), base64.b64decode(str(tx), validate=True))
    keys.sessions()  # an unknown profile or a key of the wrong length fails here, not on the first packet
    return keys


def _indices(index: int) -> list[int]:
    """The sequence of packet indices (ROC * 65536 + seq) a fresh stream is stepped through to
    reach `index`: it starts below STEP, where a new stream takes the packet's ROC as 0."""
    first = index % STEP
    return list(range(first, index + 1, STEP))


def _packet(ssrc: int, index: int) -> bytes:
    return _RTP.pack(0x80, 0, index & 0xFFFF, 0, ssrc) + _PAYLOAD


def advance_sender(tx: Session, ssrc: int, index: int) -> None:
    """Make `tx`'s stream `ssrc` have sent up to packet index `index` (its next packet with a
    higher sequence number gets the right ROC). Nothing to do for an index below 0."""
    if index < 0:
        return
    for step in _indices(index):
        tx.protect(_packet(ssrc, step))


def advance_receiver(rx: Session, keys: SrtpKeys, ssrc: int, index: int) -> None:
    """Make `rx`'s stream `ssrc` have received up to `index`, so that it guesses the peer's ROC (a
    new stream takes the first packet's ROC as 0, wrong once the peer's stream wraps). The walk's
    packets are made authentic with the peer's own key, which we hold."""
    if index < 0:
        return
    policy = Policy(key=keys.rx, ssrc_type=Policy.SSRC_ANY_OUTBOUND, srtp_profile=_libsrtp_profile(keys))
    peer = Session(policy)
    for step in _indices(index):
        rx.unprotect(peer.protect(_packet(ssrc, step)))


def advance_rtcp(tx: Session, ssrc: int, count: int) -> None:
    """Make `tx`'s SRTCP stream `ssrc` have sent `count` packets (each protect takes the next index)."""
    report = struct.pack(">BBHI", 0x80, 201, 1, ssrc)
    for _ in range(count):
        tx.protect_rtcp(report)


def _libsrtp_profile(keys: SrtpKeys) -> int:
    return next(p.libsrtp_profile for p in PROFILES if p.openssl_profile.decode() == keys.profile)
