"""What another box needs to carry a connected session's media on (issue 19: failover), beyond the
session itself (its journal rebuilds that: journal.py): a checkpoint of its SRTP keys and streams.

`capture` takes one, a few times a minute at most per session (the cluster writes it sealed to its
store); `restore` applies it to the same session rebuilt elsewhere. Between a checkpoint and the
failure the old box went on sending, so the numbers the subscriber sees jump forward by what it can
have sent meanwhile (the catch-up is deterministic: a bound on the packet rate times the time since
the checkpoint, plus a margin) rather than being written per packet:
- each leg's sequence number and SRTP index by up to SEQ_RATE packets a second, its timestamp by the
  time passed, no more (a receiver schedules playout by the timestamps: one ahead of the clock is a
  picture held back); the leg then steps once more, as on any move to another source; receivers take
  a forward jump as loss and ask for a keyframe, which the box asks for too;
- the transport-wide sequence number by TRANSPORT_RATE a second;
- each leg's SRTCP index by RTCP_RATE a second. Feedback to publishers goes out under a new SSRC of
  the session's (its SRTCP starts afresh), so only the legs' sender reports need the walk.
What the session receives needs no jump: the publisher's SSRCs (simulcast layers are named by RID
only in their first packets, so the bindings are carried) and each stream's highest index, from
which the box's SRTP follows the publisher's rollover counter.
"""
from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from ..rtc import continuation
from ..rtc.port import Listener, MediaPort
from .forward import Leg

if TYPE_CHECKING:
    from .session import CallSession
    from .sfu import Sfu

SEQ_RATE = 1000  # packets per second a leg can send (a 1080p layer sends about 400)
TRANSPORT_RATE = 4000  # packets per second a session can be sent
RTCP_RATE = 10  # SRTCP packets per second a leg's SSRC can send (sender reports: about one)
MARGIN = 1.0  # seconds added to the time since the checkpoint: clocks of two boxes differ that little
MAX_JUMP = 0x6000  # below half the sequence space, or receivers would take the jump for a step back


def capture(port: MediaPort, session: CallSession, wall: float) -> dict[str, Any] | None:
    """The session's checkpoint now (`wall`: time.time()), or None when it carries no media (not
    connected), or its PeerConnection cannot move: over ICE-TCP (the connection stays with the box),
    or toward a third party (the box controls ICE there; the other end sends no checks to find it)."""
    port_session = session.port_session
    if port_session is None or session.connected_at is None or session.thirdparty:
        return None
    keys = port_session.keys
    if keys is None or not port.udp(port_session.listener):
        return None
    legs = {}
    for ssrc, leg in session.legs.items():
        leg.count_indices()
        legs[str(ssrc)] = [leg.last_seq, leg.last_ts, leg.out_index, leg.rtx_index, _clock(leg)]
    inbound = {}
    bindings = []
    for track in session.tracks.values():
        for stream in track.streams:
            if stream.ssrc is None:
                continue
            bindings.append([track.name, stream.rid, stream.ssrc, stream.rtx_ssrc])
            if stream.stats.received:
                inbound[str(stream.ssrc)] = stream.stats.cycles + stream.stats.max_seq
    senders = {ssrc for leg in session.legs.values() for ssrc in (leg.ssrc, leg.rtx_ssrc) if ssrc is not None}
    return {
        "at": wall,
        "path": list(port_session.addr) if port_session.addr is not None else None,  # the client's address
        "keys": continuation.encode_keys(keys),
        "legs": legs,
        "inbound": inbound,
        "bindings": bindings,
        "transport": session.transport_out.seq if session.transport_out is not None else None,
        "rtcp": {str(ssrc): count for ssrc, count in port_session.rtcp_sent.items() if ssrc in senders},
        "rtcp_ssrcs": sorted(set(port_session.rtcp_sent) - senders | {session.rtcp_ssrc}),
    }


def restore(sfu: Sfu, session: CallSession, state: dict[str, Any], listener: Listener, addr: tuple[str, int],
            wall: float, now: float) -> None:
    """Carry `session` (rebuilt from its journal) on from checkpoint `state`, its media arriving on
    `listener` from `addr`. Raises ValueError, TypeError or KeyError for a checkpoint it cannot use,
    having changed nothing the session's end does not undo."""
    port_session = session.port_session
    if port_session is None:
        raise ValueError("the session has no PeerConnection to carry on")
    keys = continuation.decode_keys(state["keys"])
    passed = max(0.0, wall - float(state["at"]))
    elapsed = passed + MARGIN
    jump = min(MAX_JUMP, int(elapsed * SEQ_RATE))
    for name, rid, ssrc, rtx_ssrc in state["bindings"]:
        track = session.tracks.get(name)
        stream = None if track is None else track.stream(rid) if rid is not None else track.streams[0]
        if stream is None:
            continue
        stream.ssrc = int(ssrc)
        session.by_ssrc[stream.ssrc] = stream
        if rtx_ssrc is not None:
            stream.rtx_ssrc = int(rtx_ssrc)
            session.rtx_by_ssrc[stream.rtx_ssrc] = stream
    outbound: dict[int, int] = {}
    for ssrc_text, (last_seq, last_ts, out_index, rtx_index, clock) in state["legs"].items():
        leg = session.legs.get(int(ssrc_text))
        if leg is None:
            continue
        _jump_leg(leg, int(last_seq), int(last_ts), int(out_index), int(rtx_index), int(passed * int(clock)), jump)
        outbound[leg.ssrc] = leg.out_index
        if leg.rtx_ssrc is not None:
            outbound[leg.rtx_ssrc] = leg.rtx_index
    transport = session.transport_out
    if transport is not None and state["transport"] is not None:
        transport.seq = (int(state["transport"]) + min(MAX_JUMP, int(elapsed * TRANSPORT_RATE))) & 0xFFFF
    used = {int(ssrc) for ssrc in state["rtcp_ssrcs"]} | set(session.legs)
    session.rtcp_ssrc = _fresh_ssrc(used)
    rtcp_sent = {int(ssrc): int(count) + int(elapsed * RTCP_RATE) for ssrc, count in state["rtcp"].items()}
    inbound = {int(ssrc): int(index) for ssrc, index in state["inbound"].items()}
    sfu.port.resume(port_session, listener, addr, keys, inbound, outbound, rtcp_sent, now)
    for leg in session.legs.values():
        sfu.switcher.await_keyframe(leg, now)
    for track in session.tracks.values():
        if track.kind == "video":
            for stream in track.streams:
                if stream.ssrc is not None:
                    sfu.repair.request_keyframe(stream, now, force=True)


def _jump_leg(leg: Leg, last_seq: int, last_ts: int, out_index: int, rtx_index: int, ticks: int, jump: int) -> None:
    leg.last_seq = (last_seq + jump) & 0xFFFF
    leg.out_index = out_index + jump
    leg.last_ts = (last_ts + ticks) & 0xFFFFFFFF
    leg.rtx_seq = (rtx_index + jump) & 0xFFFF
    leg.rtx_index = rtx_index + jump
    leg.rebase = True


def _clock(leg: Leg) -> int:
    source = leg.source
    return source.codecs[0].clock if source is not None and source.codecs else 90000


def _fresh_ssrc(used: set[int]) -> int:
    while True:
        ssrc = secrets.randbits(32)
        if ssrc and ssrc not in used:
            return ssrc
