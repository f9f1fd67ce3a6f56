"""The RTCP the SFU sends on its own: sender and receiver reports, and transport-wide congestion
control (feedback to publishers, numbering toward subscribers)."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from ..rtc.port import Session as PortSession
from . import extensions, rtcp, sdp
from .forward import Leg
from .session import CallSession
from .tracks import PublishedTrack, Upstream
from .transport import TransportSender


class RtcpSender(Protocol):
    """Where RTCP toward subscribers goes out (the media port): protected and sent on a session's path."""

    def send_rtcp(self, session: PortSession, packet: bytes) -> bool: ...


class Reports:
    """Sends through `rtcp_out` what the sessions and legs it is given call for; holds no state."""

    def __init__(self, rtcp_out: RtcpSender) -> None:
        self.rtcp_out = rtcp_out

    def send_reports(self, tracks: Iterable[PublishedTrack], legs: Iterable[Leg], now: float) -> None:
        """About once a second: a receiver report to every upstream on the streams it sends, and a
        sender report on every leg that carries media (the SFU terminates RTCP per hop)."""
        blocks: dict[Upstream, list[bytes]] = {}
        for track in tracks:
            for stream in track.streams:
                if stream.stats.received and stream.ssrc is not None:
                    blocks.setdefault(track.upstream, []).append(stream.stats.report_block(stream.ssrc, now))
        for upstream, reported in blocks.items():
            upstream.send_rtcp(rtcp.receiver_report(upstream.rtcp_ssrc, reported))
        for leg in legs:
            if leg.packets and leg.subscriber.port_session is not None:
                # Wall-clock NTP time, not `now`: the subscriber maps RTP time to real time with it.
                leg.subscriber.send_rtcp(rtcp.sender_report(leg.ssrc, leg.last_ts, leg.packets, leg.octets))

    @staticmethod
    def transport_out(session: CallSession, remote: sdp.RemoteDescription) -> None:
        """Number what the session receives from the SFU once its description takes the
        transport-wide sequence extension on a section the SFU sends on (BUNDLE: one id)."""
        if session.transport_out is not None:
            return
        for transceiver in session.transceivers:
            section = remote.section(transceiver.mid)
            ext_id = transceiver.section.extensions.get(extensions.TRANSPORT_CC)
            if (transceiver.leg is not None and section is not None and ext_id is not None
                    and section.extensions.get(extensions.TRANSPORT_CC) == ext_id):
                session.transport_out = TransportSender(ext_id)
                return

    def send_transport_feedback(self, sessions: Iterable[CallSession], now: float) -> None:
        """Every FEEDBACK_INTERVAL: each publisher's transport-wide arrivals since the last one."""
        for session in sessions:
            receiver = session.transport_in
            if receiver is None or session.port_session is None:
                continue
            media = next((s.ssrc for t in session.tracks.values() for s in t.streams if s.ssrc is not None), 0)
            packet = receiver.report(session.rtcp_ssrc, media)
            if packet is not None:
                self.rtcp_out.send_rtcp(session.port_session, packet)
