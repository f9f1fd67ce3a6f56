"""What a receiver of legs says about them in RTCP: keyframe requests, NACKs and receiver reports,
acted on the same way whether the receiver is a subscriber's PeerConnection or another box at the
end of a trunk (repair per hop)."""
from __future__ import annotations

from collections.abc import Mapping

from . import feedback, rtcp
from .forward import Leg
from .repair import Repair


def from_receiver(packet: bytes, legs: Mapping[int, Leg], repair: Repair, now: float, trusted: bool = False) -> None:
    """Act on the parts of a compound RTCP packet about `legs` (by the SSRC each sends on). A
    `trusted` receiver (another box) asks with FIR for keyframes that must not wait: its new
    subscribers'; a client's requests are paced whatever their kind."""
    forced = set(rtcp.full_intra_requests(packet)) if trusted else set()
    for ssrc in rtcp.keyframe_requests(packet):
        leg = legs.get(ssrc)
        if leg is not None and leg.source is not None:
            stream = leg.target or leg.stream
            if stream is not None:
                repair.request_keyframe(stream, now, force=ssrc in forced)
    for ssrc, seqs in feedback.nacks(packet):
        leg = legs.get(ssrc)
        if leg is not None:
            repair.answer_nack(leg, seqs, now)
    for block in feedback.receiver_blocks(packet):
        leg = legs.get(block.ssrc)
        if leg is None:
            continue
        leg.loss = block.fraction_lost / 256
        if block.lsr:
            rtt = rtcp.round_trip(block.lsr, block.dlsr)
            if rtt is not None:
                leg.rtt = rtt
