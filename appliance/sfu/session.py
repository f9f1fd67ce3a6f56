"""A Calls session: one PeerConnection between a client and the SFU, its m-sections and its media.

The session is the port's handler for that PeerConnection (appliance.rtc.port.SessionHandler):
decrypted RTP arrives in `rtp`, on the hot path, and goes out on every leg of its track.
"""
from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field
from typing import Protocol

from ..rtc.ice import new_credentials
from ..rtc.port import Event, MediaPort
from ..rtc.port import Session as PortSession
from . import extensions, feedback, rtcp, rtx, tracks
from .codecs import PayloadTypes
from .datachannels import SessionChannels
from .forward import Leg
from .leg_feedback import from_receiver
from .repair import Repair
from .sdp import LocalSection, RemoteDescription
from .streams import Stream
from .switching import LayerSwitcher
from .tracks import IngestCounters, PublishedTrack
from .transport import TransportReceiver, TransportSender

LOSSY = 0.02  # a subscriber reporting more loss than this gets no more than it received


class SessionOwner(Protocol):
    """What a session's media and events need from the SFU that holds it."""

    port: MediaPort
    repair: Repair
    switcher: LayerSwitcher
    ingest: IngestCounters

    def session_event(self, session: CallSession, event: Event, now: float) -> None: ...

    def session_data(self, session: CallSession, data: bytes) -> None: ...

    def session_changed(self, session: CallSession) -> None:
        """A Calls operation changed the session (its journal grew)."""


@dataclass(eq=False)
class Transceiver:
    """One m-section of the session, as the SFU negotiated it."""

    section: LocalSection
    role: str  # "push" (client -> SFU), "pull" (SFU -> client), "data" (the m=application), "idle"
    track: PublishedTrack | None = None  # push: what it publishes
    source: PublishedTrack | None = None  # pull: what it receives
    leg: Leg | None = None  # pull: the copy it receives
    closed: bool = False
    pending: bool = False  # in an SFU offer not answered yet
    pending_name: str | None = None  # push offered by the SFU: the track name, published on the answer

    @property
    def mid(self) -> str:
        return self.section.mid


@dataclass(eq=False)
class CallSession:
    id: str
    app: str
    created: float
    owner: SessionOwner
    ufrag: str = ""
    pwd: str = ""
    port_session: PortSession | None = None
    remote: RemoteDescription | None = None
    transceivers: list[Transceiver] = field(default_factory=list)  # in m-section order
    payload_types: PayloadTypes = field(default_factory=PayloadTypes)
    extension_ids: extensions.ExtensionIds = field(default_factory=extensions.ExtensionIds)
    by_ssrc: dict[int, Stream] = field(default_factory=dict)  # media SSRC -> the stream it carries
    rtx_by_ssrc: dict[int, Stream] = field(default_factory=dict)  # RTX SSRC -> the stream it repairs
    legs: dict[int, Leg] = field(default_factory=dict)  # what the SFU sends it, by the leg's SSRC
    stream_ids: dict[str, int] = field(default_factory=dict)  # the publisher's ids of mid, rid, repaired-rid
    transport_in: TransportReceiver | None = None  # what the session's publishing side reports on
    transport_out: TransportSender | None = None  # what the SFU sends the session, numbered and estimated
    tracks: dict[str, PublishedTrack] = field(default_factory=dict)
    sdp_version: int = 0
    pending_offer: bool = False
    connected_at: float | None = None
    closed: bool = False
    # When the cluster next checkpoints the session's media for another box to carry it on
    # (sfu/continuation.py): 0 as soon as anything a checkpoint holds changed shape.
    checkpoint_due: float = 0.0
    # Carried on from another box: media goes on, the data channels' SCTP association did not.
    datachannels_lost: bool = False
    generation: int = 0  # boxes that held it before this one (journal.Moved)
    # sessions/new?thirdparty=true: the SFU relays to a third-party endpoint and is the full,
    # controlling ICE agent toward it (CALLS_API.md 1.1).
    thirdparty: bool = False
    # What the session serves: "" for a Calls client, "whip/<name>" or "whep/<name>" for the resource
    # of a WHIP publisher or WHEP player (appliance.api.whip, whep), which acts only on its own.
    label: str = ""
    datachannels: SessionChannels = field(default_factory=SessionChannels)
    # What the session's random choices (SSRCs, names, ids) come from: replaying its journal from
    # the same seed on another box (appliance.cluster) rebuilds the same session.
    seed: int = field(default_factory=lambda: secrets.randbits(64))
    # The certificate its descriptions carry (the value of its SHA-256 fingerprint).
    certificate: str | None = None
    # The Calls operations that made it what it is, for another box to replay (sfu/journal.py);
    # None once too large to move.
    journal: list | None = field(default_factory=list)
    journaling: bool = False  # inside a journaled operation: the ones it calls are not noted again

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.sdp_id = self.rng.getrandbits(62)
        self.rtcp_ssrc = self.rng.getrandbits(32)
        self.cname = f"{self.rng.getrandbits(64):016x}"
        if not self.ufrag:
            self.ufrag, self.pwd = new_credentials()
        # Each request looks m-sections up by mid, and so may a packet: by index, not by scanning.
        # A transceiver keeps its mid and stays indexed even once its m-line is recycled (follow),
        # so that no mid is used twice.
        self._by_mid: dict[str, Transceiver] = {}
        self._data: list[Transceiver] = []  # the m=application ones: one live, perhaps a few closed
        self._free_mid = 0  # no number below it is free: mids are only ever added

    def bandwidth(self) -> float | None:
        """What the SFU may send this session, in bit/s; None while nothing measures it. While
        the session reports losing more than LOSSY of what it is sent, no more than it received:
        GCC holds its estimate through 2-10% loss, but a layer that overflows a queue by a few
        percent keeps costing retransmissions and freezes."""
        if self.transport_out is None:
            return None
        estimator = self.transport_out.estimator
        loss = max((t.leg.loss for t in self.transceivers if t.leg is not None and t.role == "pull"), default=0.0)
        if loss > LOSSY and estimator.acked_bitrate:
            return min(estimator.estimate, estimator.acked_bitrate)
        return estimator.estimate

    def add(self, transceiver: Transceiver, recycle: bool = False) -> Transceiver:
        """Add an m-section: at the end, or (`recycle`, in an SFU offer) on the m-line of a transceiver
        that is stopped and known to the client as rejected, so a long session's descriptions do not
        grow with every track it ever pulled (JSEP 5.2.2; browsers recycle their own the same way)."""
        free = self.free_line() if recycle else None
        if free is None:
            self.transceivers.append(transceiver)
        else:
            self.transceivers[free] = transceiver
        self._by_mid[transceiver.mid] = transceiver
        if transceiver.role == "data":
            self._data.append(transceiver)
        return transceiver

    def free_line(self) -> int | None:
        """The index of an m-line an SFU offer may give a new transceiver, if any."""
        return next((i for i, t in enumerate(self.transceivers) if t.closed and t.section.rejected and not t.pending),
                    None)

    def transceiver(self, mid: str) -> Transceiver | None:
        return self._by_mid.get(mid)

    def follow(self, offer: list[str]) -> list[Transceiver]:
        """Take the m-line order of a client offer (its mids), which lists every m-section of the
        session: a browser gives a stopped transceiver's m-line to a new one, under a new mid
        (JSEP 5.2.2), so a transceiver it no longer lists has left the session's descriptions.
        Those are returned (the caller stops any still open); their mids stay taken. An offer
        naming a mid the session does not know changes nothing."""
        listed = []
        for mid in offer:
            transceiver = self._by_mid.get(mid)
            if transceiver is None:
                return []
            listed.append(transceiver)
        kept = {id(t) for t in listed}
        gone = [t for t in self.transceivers if id(t) not in kept]
        self.transceivers = listed
        return gone

    def application(self) -> Transceiver | None:
        """The m=application that is not closed, if any."""
        return next((t for t in self._data if not t.closed), None)

    def next_mid(self) -> str:
        """The lowest number no m-section of the session has as its mid."""
        while str(self._free_mid) in self._by_mid:
            self._free_mid += 1
        return str(self._free_mid)

    # --- the port's handler: the hot path first -------------------------------------------------

    def rtp(self, packet: bytes, now: float) -> None:
        """One decrypted RTP packet from the client: compiled where the extension is (tracks.RTP),
        which does what `rtp_in_python` does."""
        compiled = tracks.RTP
        if compiled is not None:
            compiled(self, packet, now)
        else:
            self.rtp_in_python(packet, now)

    def rtp_in_python(self, packet: bytes, now: float) -> None:
        transport = self.transport_in
        if transport is not None:
            seq = extensions.find_two(packet, transport.ext_id)
            if seq >= 0:
                transport.arrived(seq, now)
        stream = self.by_ssrc.get(int.from_bytes(packet[8:12], "big"))
        if stream is None:
            self._unbound(packet, now)
            return
        stream.track.receive(stream, packet, now)

    def _unbound(self, packet: bytes, now: float) -> None:
        """A packet of an SSRC not seen before, or of a retransmission stream: RID simulcast
        and RTX streams are named by header extensions (RFC 8852), not by the SDP."""
        ssrc = int.from_bytes(packet[8:12], "big")
        stream = self.rtx_by_ssrc.get(ssrc)
        if stream is None:
            stream = self._bind(packet, ssrc)
            if stream is None:
                self.owner.ingest.unknown_ssrc += 1
                return
            if stream.ssrc == ssrc:
                stream.track.receive(stream, packet, now)
                return
        apt = stream.track.rtx.get(packet[1] & 0x7F)
        if apt is None or stream.ssrc is None or stream.losses is None:
            return
        original = rtx.unwrap(packet, apt, stream.ssrc)
        # Only what is still missing: RTX also carries the publisher's bandwidth probes, copies
        # of packets the box already has.
        if original is not None and (original[2] << 8 | original[3]) in stream.losses.missing:
            stream.track.receive(stream, original, now)

    def _bind(self, packet: bytes, ssrc: int) -> Stream | None:
        """The stream a new SSRC carries (its RTX SSRC maps there too), from the mid, rid and
        repaired-rid extensions, or from the payload type when the track has one stream."""
        found = extensions.elements(packet) or {}
        ids = self.stream_ids
        mid = found.get(ids.get(extensions.MID, -1))
        track = None
        if mid is not None:
            transceiver = self.transceiver(mid.decode(errors="replace"))
            track = transceiver.track if transceiver is not None else None
        elif len(self.tracks) == 1:
            track = next(iter(self.tracks.values()))
        if track is None or track.closed:
            return None
        repaired = found.get(ids.get(extensions.REPAIRED_RID, -1))
        rid = found.get(ids.get(extensions.RID, -1))
        if repaired is not None or (packet[1] & 0x7F) in track.rtx:
            stream = track.stream(repaired.decode(errors="replace")) if repaired is not None else (
                track.streams[0] if not track.simulcast else None)
            if stream is not None:
                stream.rtx_ssrc = ssrc
                self.rtx_by_ssrc[ssrc] = stream
                self.checkpoint_due = 0.0
            return stream
        if rid is not None:
            stream = track.stream(rid.decode(errors="replace"))
        else:
            stream = track.streams[0] if not track.simulcast else None
        if stream is None:
            return None
        if stream.ssrc is not None:
            self.by_ssrc.pop(stream.ssrc, None)  # the publisher restarted the stream on a new SSRC
        stream.ssrc = ssrc
        self.by_ssrc[ssrc] = stream
        self.checkpoint_due = 0.0  # the binding is in no packet once the publisher stops naming it
        return stream

    def rtcp(self, packet: bytes, now: float) -> None:
        for ssrc, ntp_middle in rtcp.sender_reports(packet):
            stream = self.by_ssrc.get(ssrc)
            if stream is not None:
                stream.stats.sr_ntp_middle, stream.stats.sr_at = ntp_middle, now
        legs, repair = self.legs, self.owner.repair
        from_receiver(packet, legs, repair, now)
        transport = self.transport_out
        if transport is not None:
            for at, end in feedback.transport_feedback_spans(packet):
                for leg, out_seq, was_resend in transport.fed_back(packet, at, end, now):
                    if legs.get(leg.ssrc) is leg:
                        repair.resend_lost(leg, out_seq, was_resend, now)

    # --- the publishing side as its tracks' upstream ----------------------------------------------

    def send_rtcp(self, packet: bytes) -> bool:
        """RTCP to the client: feedback on what it publishes (the tracks' Upstream), reports and
        goodbyes on what it receives (the legs' Downstream)."""
        return self.port_session is not None and self.owner.port.send_rtcp(self.port_session, packet)

    def request_keyframe(self, media_ssrc: int, force: bool) -> None:
        """A PLI: what every browser answers with a keyframe (the SFU itself paces them)."""
        self.send_rtcp(rtcp.pli(self.rtcp_ssrc, media_ssrc))

    def data(self, data: bytes) -> None:
        self.owner.session_data(self, data)

    def event(self, event: Event, now: float) -> None:
        self.owner.session_event(self, event, now)
