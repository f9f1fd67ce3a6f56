"""The trunk port: media between boxes of the cluster, one UDP socket each, SRTP per direction.

Each (sender, sender's epoch, receiver) has its own SRTP key, derived from the cluster secret, so
trunk traffic is encrypted and authenticated unless one has the secret, and a restarted box (a new
epoch) never reuses a keystream. Packets are plain RTP and RTCP (RFC 5761 demultiplexing): a track's
packets as its box received them, each layer on the SSRC the receiving box chose for it. Data
channel messages travel as datagrams of their own (first byte DATA, outside RTP's and RTCP's
range), sealed with AES-GCM under a key derived the same way.

Sans-I/O like the media port: the shell hands it a sink (`sendto`) and the datagrams it reads.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Protocol

import pylibsrtp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pylibsrtp import Policy

from .seal import derive

if TYPE_CHECKING:
    from ..sfu.forward import Leg
    from ..sfu.streams import Stream

# AES_CM_128_HMAC_SHA1_80: a 16-byte key and a 14-byte salt.
KEY_AND_SALT = 30
# The first byte of a data datagram: RFC 7983 leaves 64-79 to no protocol the media port speaks.
DATA = 64
NONCE = 12
REPLAY_WINDOW = 1024


class TrunkPeer:
    """Another box, as the trunk port sees it: its address, both SRTP directions, and the streams it
    sends this box (by the SSRC this box chose). Also the `port_session` of the legs that send it a
    track (forward.Downstream)."""

    __slots__ = ("node", "epoch", "addr", "tx", "rx", "data_tx", "data_rx", "streams", "legs", "counters")

    def __init__(self, node: str, epoch: str, addr: tuple[str, int], tx: pylibsrtp.Session,
                 rx: pylibsrtp.Session, data_tx: AESGCM, data_rx: AESGCM) -> None:
        self.node = node
        self.epoch = epoch
        self.addr = addr
        self.tx = tx
        self.rx = rx
        self.data_tx = data_tx
        self.data_rx = data_rx
        self.streams: dict[int, Stream] = {}  # what it sends this box
        self.legs: dict[int, Leg] = {}  # what this box sends it, by the SSRC the peer chose
        self.counters = TrunkCounters()


class TrunkCounters:
    __slots__ = ("packets_in", "packets_out", "octets_in", "octets_out", "rtcp_in", "rtcp_out", "errors")

    def __init__(self) -> None:
        self.packets_in = self.packets_out = self.octets_in = self.octets_out = 0
        self.rtcp_in = self.rtcp_out = self.errors = 0


class TrunkHandler(Protocol):
    def rtp(self, peer: TrunkPeer, packet: bytes, now: float) -> None:
        """A packet of one of the streams `peer` sends this box (a remote track's)."""

    def rtcp(self, peer: TrunkPeer, packet: bytes, now: float) -> None:
        """Feedback from `peer` on what this box sends it, or its reports on what it sends."""

    def data(self, peer: TrunkPeer, payload: bytes, now: float) -> None:
        """A data channel message (or its end) that `peer` relays to this box."""


def _session(key: bytes, inbound: bool) -> pylibsrtp.Session:
    policy = Policy(key=key, ssrc_type=Policy.SSRC_ANY_INBOUND if inbound else Policy.SSRC_ANY_OUTBOUND)
    if inbound:
        policy.window_size = REPLAY_WINDOW
    else:
        policy.allow_repeat_tx = True  # retransmissions send a sequence number again
    return pylibsrtp.Session(policy)


class TrunkPort:
    def __init__(self, node: str, epoch: str, secret: str) -> None:
        self.node = node
        self.epoch = epoch
        self.secret = secret
        self.handler: TrunkHandler  # set by whoever composes the port with the trunks it carries
        self.sink: Any = None  # the shell's socket: sendto(data, addr)
        self.peers: dict[str, TrunkPeer] = {}
        self._by_addr: dict[tuple[str, int], TrunkPeer] = {}
        self.unknown = 0  # datagrams from an address that is no peer's, or that fail authentication

    def _key(self, sender: str, epoch: str, receiver: str, purpose: str = "trunk", length: int = KEY_AND_SALT) -> bytes:
        return derive(self.secret, f"{purpose} {sender}/{epoch} -> {receiver}", length)

    def peer(self, node: str, epoch: str, addr: tuple[str, int]) -> TrunkPeer:
        """The peer for `node` as its current record describes it: a new epoch (a restart) or
        address makes a new one, whose streams start empty."""
        peer = self.peers.get(node)
        if peer is not None and peer.epoch == epoch and peer.addr == addr:
            return peer
        if peer is not None:
            self.forget(node)
        peer = TrunkPeer(node, epoch, addr, _session(self._key(self.node, self.epoch, node), False),
                         _session(self._key(node, epoch, self.node), True),
                         AESGCM(self._key(self.node, self.epoch, node, "trunk data", 32)),
                         AESGCM(self._key(node, epoch, self.node, "trunk data", 32)))
        self.peers[node] = peer
        self._by_addr[addr] = peer
        return peer

    def forget(self, node: str) -> TrunkPeer | None:
        peer = self.peers.pop(node, None)
        if peer is not None and self._by_addr.get(peer.addr) is peer:
            del self._by_addr[peer.addr]
        return peer

    def send_rtp(self, peer: TrunkPeer, packet: bytes) -> bool:
        """Protect and send; the signature of MediaPort.send_rtp, so that legs send on trunks too."""
        try:
            data = peer.tx.protect(packet)
            self.sink.sendto(data, peer.addr)
        except (pylibsrtp.Error, ValueError, OSError, AttributeError):
            peer.counters.errors += 1
            return False
        counters = peer.counters
        counters.packets_out += 1
        counters.octets_out += len(packet)
        return True

    def send_rtcp(self, peer: TrunkPeer, packet: bytes) -> bool:
        try:
            self.sink.sendto(peer.tx.protect_rtcp(packet), peer.addr)
        except (pylibsrtp.Error, ValueError, OSError, AttributeError):
            peer.counters.errors += 1
            return False
        peer.counters.rtcp_out += 1
        return True

    def send_data(self, peer: TrunkPeer, payload: bytes) -> bool:
        nonce = os.urandom(NONCE)
        try:
            self.sink.sendto(bytes([DATA]) + nonce + peer.data_tx.encrypt(nonce, payload, None), peer.addr)
        except (OSError, AttributeError):
            peer.counters.errors += 1
            return False
        return True

    def datagram_received(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        peer = self._by_addr.get(addr[:2])
        if peer is None or len(data) < 12:
            self.unknown += 1
            return
        if data[0] == DATA:
            try:
                payload = peer.data_rx.decrypt(data[1:1 + NONCE], data[1 + NONCE:], None)
            except InvalidTag:
                peer.counters.errors += 1
                return
            self.handler.data(peer, payload, now)
            return
        rtcp = 192 <= data[1] <= 223
        try:
            packet = peer.rx.unprotect_rtcp(data) if rtcp else peer.rx.unprotect(data)
        except pylibsrtp.Error:
            peer.counters.errors += 1
            return
        if rtcp:
            peer.counters.rtcp_in += 1
            self.handler.rtcp(peer, packet, now)
        else:
            peer.counters.packets_in += 1
            peer.counters.octets_in += len(packet)
            self.handler.rtp(peer, packet, now)
