"""The per-packet forwarding path: a publisher's RTP rewritten for each subscriber leg.

Synchronous and allocation-light (ARCHITECTURE principle 4): the publisher's handler finds the
stream by SSRC (one dict lookup) and each leg writes a new 12-byte header (its own SSRC, payload
type, sequence number and timestamp) in front of the original payload. CSRCs are dropped; header
extensions go out only as the subscriber negotiated them (extensions.py), their elements built once
per packet for every leg that shares an id mapping; a leg toward a subscriber that reports
transport-wide feedback adds its session's sequence number (transport.py).
"""
from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from . import extensions, vp8

if TYPE_CHECKING:  # what a leg points at; those modules import this one
    from .streams import Stream
    from .tracks import PublishedTrack
    from .transport import TransportSender


class Downstream(Protocol):
    """Where a leg's packets go: a subscriber's PeerConnection (a CallSession) today, a trunk to
    another box in the cascading issue. A leg reads these on each packet, so they have one owner."""

    @property
    def port_session(self) -> Any:
        """What the leg's `send` sends on: the media port's session (None until negotiated), or
        the trunk peer of another box."""

    @property
    def transport_out(self) -> TransportSender | None:
        """The transport-wide numbering and estimate, when the receiver reports transport-cc."""

    def bandwidth(self) -> float | None: ...

    def send_rtcp(self, packet: bytes) -> bool:
        """Reports and goodbyes on what the leg sends."""

_HEADER = struct.Struct(">BBHII")
_pack_header = _HEADER.pack

# Until the subscriber's receiver reports measure it: how long a retransmitted packet is not
# sent again for another NACK of it (the first copy may still be on its way).
INITIAL_RTT = 0.05
RESENT_LIMIT = 512  # retransmission times remembered per leg before old ones are dropped
DUPLICATE_LOSS = 0.02  # the subscriber's reported loss above which each retransmission goes twice


class Leg:
    """One subscriber's copy of a track: its SSRC, payload types and a continuous sequence."""

    __slots__ = (
        "send", "ssrc", "pt_map", "seq_delta", "ts_delta", "rebase", "last_seq", "last_ts",
        "base_seq", "packets", "octets", "mid", "subscriber", "source", "stream", "target", "ext_map", "ext_key",
        "rtx_ssrc", "rtx_pts", "rtx_seq", "resent", "rtt", "retransmitted", "preferences",
        "probing", "probe_until", "next_probe", "probe_wait", "loss",
        "padding", "pad_credit", "probe_pads", "probe_started",
        "pid_delta", "tl0_delta", "sent_packet", "moved_from", "pictures", "out_index", "rtx_index",
    )

    def __init__(self, send: Callable[[Any, bytes], bool], ssrc: int, pt_map: dict[int, int], mid: str,
                 subscriber: Downstream) -> None:
        self.send = send  # MediaPort.send_rtp, or TrunkPort.send_rtp
        self.ssrc = ssrc
        self.pt_map = pt_map
        self.mid = mid
        self.subscriber = subscriber
        self.source: PublishedTrack | None = None
        self.stream: Stream | None = None  # the track's stream (simulcast layer) this leg forwards now
        self.target: Stream | None = None  # the stream it moves to at that stream's next keyframe
        # Sequence and timestamp start at random values (RFC 3550 5.1) and stay continuous for
        # the subscriber when the leg moves to another source: `rebase` recomputes the deltas.
        self.last_seq = random.getrandbits(16)
        self.last_ts = random.getrandbits(32)
        self.seq_delta = 0
        self.ts_delta = 0
        self.base_seq = 0  # the source's sequence number the current deltas started at
        self.rebase = True
        # VP8 picture ids and TL0PICIDX stay continuous the same way (vp8.py says why). Nothing is read
        # per packet for it until the leg moves: then the numbers of the latest packet sent (read once,
        # at the move) and those of the new source's first packet give the deltas, and only a leg whose
        # deltas are not zero reads and rewrites its packets' numbers from then on.
        self.pid_delta = self.tl0_delta = 0
        self.sent_packet = b""  # the latest packet sent, as it came
        self.moved_from: vp8.Picture | None = None  # at a move: the numbers the previous source sent last
        self.pictures = False  # this leg reads VP8 numbers: a move waits for them, or they are rewritten
        self.packets = 0
        self.octets = 0
        # Retransmissions (RFC 4588) when the subscriber negotiated them: media pt -> rtx pt.
        self.rtx_ssrc: int | None = None
        self.rtx_pts: dict[int, int] = {}
        self.rtx_seq = random.getrandbits(16)
        # The SRTP packet index (ROC * 65536 + seq) of the latest packet sent on the leg's SSRC and on
        # its RTX SSRC, as the subscriber counts them: kept by `count_indices` (each checkpoint, not per
        # packet), so that another box can carry on protecting where this one stopped (continuation.py).
        self.out_index = ((self.last_seq + 1) & 0xFFFF) - 1
        self.rtx_index = ((self.rtx_seq + 1) & 0xFFFF) - 1
        self.resent: dict[int, float] = {}
        self.rtt = INITIAL_RTT
        self.loss = 0.0  # fraction lost, from the subscriber's receiver reports
        self.retransmitted = 0
        self.preferences: dict[str, Any] = {}  # simulcast: preferredRid, priorityOrdering, ridNotAvailable
        # Simulcast by bandwidth: the layer on trial above the estimate, until when, and the next try.
        self.probing: Stream | None = None
        self.probe_pads = False
        self.probe_started = self.probe_until = self.next_probe = self.probe_wait = 0.0
        # A bandwidth trial: RTX copies of forwarded packets, `padding` per packet on average.
        self.padding = 0.0
        self.pad_credit = 0.0
        self.set_extensions({})

    def count_indices(self) -> None:
        """Bring `out_index` and `rtx_index` up to the numbers sent since the last call (fewer than
        32768 packets ago: calls come every few seconds)."""
        self.out_index += (self.last_seq - self.out_index) & 0xFFFF
        self.rtx_index += (self.rtx_seq - self.rtx_index) & 0xFFFF

    def set_extensions(self, mapping: dict[int, int]) -> None:
        """Publisher id -> this subscriber's id of the header extensions it receives."""
        self.ext_map = mapping
        self.ext_key = tuple(sorted(mapping.items()))  # legs with equal keys share one block per packet

    def forward(self, packet: bytes, payload: bytes, seq: int, ts: int, elements: bytes = b"", now: float = 0.0) -> None:
        """Send one packet of the leg's stream."""
        pt = self.pt_map.get(packet[1] & 0x7F)
        if pt is None:
            return
        if self.rebase:
            # One sequence step and a small timestamp step past the last packet sent.
            self.seq_delta = (self.last_seq + 1 - seq) & 0xFFFF
            self.ts_delta = (self.last_ts + 3000 - ts) & 0xFFFFFFFF
            self.base_seq = seq
            self.rebase = False
            self._moved()
        else:
            behind = (seq - self.base_seq) & 0xFFFF
            if behind >= 0x8000:
                return  # from before this source started on the leg: its numbers are taken
            if behind > 0x4000:
                self.base_seq = (seq - 0x2000) & 0xFFFF  # keep the window's start in reach of wrap
        out_seq = (seq + self.seq_delta) & 0xFFFF
        out_ts = (ts + self.ts_delta) & 0xFFFFFFFF
        latest = (out_seq - self.last_seq) & 0xFFFF < 0x8000  # a late (recovered) packet leaves them
        if latest:
            self.last_seq, self.last_ts, self.sent_packet = out_seq, out_ts, packet
        if self.pictures:
            payload = self._pictures(packet, payload)
        subscriber = self.subscriber
        port_session = subscriber.port_session
        if port_session is None:  # not negotiated yet: nothing can reach the subscriber
            return
        self.packets += 1
        self.octets += len(payload)
        transport = subscriber.transport_out
        if transport is None and not elements:  # the common case, in one expression
            self.send(port_session, _pack_header(0x80 | (packet[0] & 0x20), (packet[1] & 0x80) | pt, out_seq,
                                                      out_ts, self.ssrc) + payload)
            return
        first, marker = 0x80 | (packet[0] & 0x20), packet[1] & 0x80
        self._send(first, marker | pt, out_seq, out_ts, self.ssrc, elements, payload, now, self, out_seq, False)
        if self.padding:
            self._pad(first, marker, pt, out_seq, out_ts, elements, payload, now)

    def _picture(self, packet: bytes) -> vp8.Picture | None:
        """The VP8 numbers `packet` carries, None when it carries none (or is not VP8)."""
        source = self.source
        if source is None or packet[1] & 0x7F not in source.vp8_pts:
            return None
        offset = payload_offset(packet)
        return vp8.read(packet[offset:]) if offset >= 0 else None

    def _moved(self) -> None:
        """The leg moves to another source: the numbers it sent last, as the subscriber saw them."""
        sent = self._picture(self.sent_packet) if self.sent_packet else None
        if sent is not None:
            sent = sent._replace(pid=(sent.pid + self.pid_delta) & sent.pid_mask, tl0=(sent.tl0 + self.tl0_delta) & 0xFF)
        self.moved_from = sent
        # Nothing to continue (the first source, or not VP8) and nothing to rewrite: no reading at all.
        self.pictures = sent is not None or bool(self.pid_delta or self.tl0_delta)

    def _pictures(self, packet: bytes, payload: bytes) -> bytes:
        """After a move: the first packet with VP8 numbers sets the deltas that continue those sent
        last; then `payload` with its numbers moved by them."""
        picture = self._picture(packet)
        if picture is None:
            return payload
        sent = self.moved_from
        if sent is not None:
            self.moved_from = None
            if sent.pid_at and picture.pid_at:
                self.pid_delta = (sent.pid + 1 - picture.pid) & 0x7FFF
            if sent.tl0_at and picture.tl0_at:
                self.tl0_delta = (sent.tl0 + 1 - picture.tl0) & 0xFF
        self.pictures = bool(self.pid_delta or self.tl0_delta)
        return self._renumbered(payload, picture) if self.pictures else payload

    def _renumbered(self, payload: bytes, picture: vp8.Picture) -> bytes:
        return vp8.write(payload, picture, (picture.pid + self.pid_delta) & picture.pid_mask,
                         (picture.tl0 + self.tl0_delta) & 0xFF)

    def _send(self, first: int, second: int, seq: int, ts: int, ssrc: int, elements: bytes, body: bytes,
              now: float, resend_leg: Leg | None, out_seq: int, resend: bool) -> None:
        """Send one packet with these extension elements, plus the session's transport-wide
        number when it reports transport-cc, noting what to resend if that number is lost:
        `resend_leg`'s `out_seq` (a retransmission when `resend`), or nothing (None: padding)."""
        subscriber = self.subscriber
        transport = subscriber.transport_out
        if transport is not None:
            elements += transport.next()
        port_session = subscriber.port_session
        if port_session is None:
            return
        data = (_pack_header(first | (0x10 if elements else 0), second, seq, ts, ssrc) + extensions.block(elements)
                + body)
        self.send(port_session, data)
        if transport is not None:
            transport.estimator.sent(transport.seq, len(data), now)
            transport.carried(resend_leg, out_seq, resend)

    def _pad(self, first: int, marker: int, pt: int, out_seq: int, out_ts: int, elements: bytes, payload: bytes,
             now: float) -> None:
        """Bandwidth-trial padding: RTX copies of the packet just sent (the subscriber drops them
        as duplicates), numbered for transport-wide feedback like any packet."""
        rtx_pt, rtx_ssrc = self.rtx_pts.get(pt), self.rtx_ssrc
        if rtx_pt is None or rtx_ssrc is None or self.subscriber.transport_out is None:
            return
        self.pad_credit += self.padding
        while self.pad_credit >= 1.0:
            self.pad_credit -= 1.0
            self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
            self._send(first, marker | rtx_pt, self.rtx_seq, out_ts, rtx_ssrc, elements,
                       out_seq.to_bytes(2, "big") + payload, now, None, 0, False)

    def source_seq(self, out_seq: int) -> int | None:
        """The sequence number, in the current stream, of what this leg sent as `out_seq`; None
        for a number it has not sent from that stream."""
        if self.rebase or self.stream is None:
            return None
        seq = (out_seq - self.seq_delta) & 0xFFFF
        if (seq - self.base_seq) & 0xFFFF >= 0x8000 or (self.last_seq - out_seq) & 0xFFFF >= 0x8000:
            return None
        return seq

    def retransmit(self, packet: bytes, out_seq: int, now: float) -> bool:
        """Send `packet` (the stream's original) again as `out_seq`: on the RTX stream when the
        subscriber negotiated one, else as it was. Not twice within a round trip: a NACK sent
        before the first copy arrived asks for nothing new. On a link that loses more than
        DUPLICATE_LOSS, two copies: a lost retransmission costs the subscriber a NACK timeout
        (libwebrtc waits 100 ms when it has no round-trip time), a visible freeze."""
        resent = self.resent
        last = resent.get(out_seq)
        if last is not None and now - last < self.rtt:
            return False
        if len(resent) >= RESENT_LIMIT:
            for seq in [s for s, at in resent.items() if now - at > 1.0] or list(resent)[:RESENT_LIMIT // 2]:
                del resent[seq]
        resent[out_seq] = now
        pt = self.pt_map.get(packet[1] & 0x7F)
        offset = payload_offset(packet)
        if pt is None or offset < 0:
            return False
        body = packet[offset:]
        if self.pid_delta or self.tl0_delta:
            picture = self._picture(packet)
            if picture is not None:
                body = self._renumbered(body, picture)
        ts = (int.from_bytes(packet[4:8], "big") + self.ts_delta) & 0xFFFFFFFF
        forwarded = b""
        if self.ext_map:
            found = extensions.elements(packet)
            forwarded = extensions.body(found, self.ext_map) if found else b""
        first, marker = 0x80 | (packet[0] & 0x20), packet[1] & 0x80
        rtx_ssrc = self.rtx_ssrc
        rtx_pt = self.rtx_pts.get(pt) if rtx_ssrc is not None else None
        for _ in range(2 if self.loss > DUPLICATE_LOSS else 1):
            self.retransmitted += 1
            if rtx_pt is not None and rtx_ssrc is not None:
                self.rtx_seq = (self.rtx_seq + 1) & 0xFFFF
                self._send(first, marker | rtx_pt, self.rtx_seq, ts, rtx_ssrc, forwarded,
                           out_seq.to_bytes(2, "big") + body, now, self, out_seq, True)
            else:
                self._send(first, marker | pt, out_seq, ts, self.ssrc, forwarded, body, now, self, out_seq, True)
        return True


def payload_offset(packet: bytes) -> int:
    """Where the payload starts: after the fixed header, the CSRCs and any header extension.
    -1 for a packet too short for what its header announces."""
    offset = 12 + 4 * (packet[0] & 0x0F)
    if packet[0] & 0x10:
        if len(packet) < offset + 4:
            return -1
        offset += 4 + 4 * (packet[offset + 2] << 8 | packet[offset + 3])
    return offset if offset <= len(packet) else -1
