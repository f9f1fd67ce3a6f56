"""A Calls session: one PeerConnection between a client and the SFU, its m-sections and its media.

The session is the port's handler for that PeerConnection (appliance.rtc.port.SessionHandler):
decrypted RTP arrives in `rtp`, on the hot path, and goes out on every leg of its track.
"""
from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field
from typing import Any

from ..rtc.ice import new_credentials
from . import extensions, rtcp
from .codecs import PayloadTypes
from .datachannels import SessionChannels
from .forward import Leg, payload_offset
from .sdp import LocalSection, RemoteDescription
from .tracks import PublishedTrack


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
    simulcast: dict | None = None  # pull: the subscriber's layer preferences (tracks/update)
    pending_name: str | None = None  # push offered by the SFU: the track name, published on the answer

    @property
    def mid(self) -> str:
        return self.section.mid


@dataclass(eq=False)
class CallSession:
    id: str
    app: str
    created: float
    sfu: Any
    ufrag: str = ""
    pwd: str = ""
    port_session: Any = None
    remote: RemoteDescription | None = None
    transceivers: list[Transceiver] = field(default_factory=list)
    payload_types: PayloadTypes = field(default_factory=PayloadTypes)
    extension_ids: extensions.ExtensionIds = field(default_factory=extensions.ExtensionIds)
    by_ssrc: dict[int, PublishedTrack] = field(default_factory=dict)
    tracks: dict[str, PublishedTrack] = field(default_factory=dict)
    sdp_version: int = 0
    sdp_id: int = field(default_factory=lambda: random.getrandbits(62))
    pending_offer: bool = False
    connected_at: float | None = None
    closed: bool = False
    # sessions/new?thirdparty=true: the SFU relays to a third-party endpoint and is the full,
    # controlling ICE agent toward it (CALLS_API.md 1.1).
    thirdparty: bool = False
    rtcp_ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    cname: str = field(default_factory=lambda: secrets.token_hex(8))
    datachannels: SessionChannels = field(default_factory=SessionChannels)

    def __post_init__(self) -> None:
        self.ufrag, self.pwd = new_credentials()

    def transceiver(self, mid: str) -> Transceiver | None:
        return next((t for t in self.transceivers if t.mid == mid), None)

    def next_mid(self) -> str:
        used = {t.mid for t in self.transceivers}
        number = 0
        while str(number) in used:
            number += 1
        return str(number)

    # --- the port's handler: the hot path first -------------------------------------------------

    def rtp(self, packet: bytes, now: float) -> None:
        track = self.by_ssrc.get(int.from_bytes(packet[8:12], "big"))
        if track is None:
            self.sfu.counters.unknown_ssrc += 1
            return
        track.last_packet = now
        seq = packet[2] << 8 | packet[3]
        ts = int.from_bytes(packet[4:8], "big")
        track.stats.update(seq, ts, now)
        legs = track.legs
        if not legs:
            return
        offset = payload_offset(packet)
        if offset < 0:
            self.sfu.counters.malformed += 1
            return
        payload = packet[offset:]  # once per packet, shared by every leg
        found = extensions.elements(packet) if track.forwards_extensions else None
        if not found:
            for leg in legs:
                leg.forward(packet, payload, seq, ts)
            return
        blocks: dict[tuple, bytes] = {}
        for leg in legs:
            key = leg.ext_key
            ext = blocks.get(key)
            if ext is None:
                ext = blocks[key] = extensions.block(found, leg.ext_map)
            leg.forward(packet, payload, seq, ts, ext)

    def rtcp(self, packet: bytes, now: float) -> None:
        for ssrc, ntp_middle in rtcp.sender_reports(packet):
            track = self.by_ssrc.get(ssrc)
            if track is not None:
                track.stats.sr_ntp_middle, track.stats.sr_at = ntp_middle, now
        for ssrc in rtcp.keyframe_requests(packet):
            leg = self.sfu.legs_by_ssrc.get(ssrc)
            if leg is not None and leg.subscriber is self and leg.source is not None:
                self.sfu.request_keyframe(leg.source, now)

    def data(self, data: bytes) -> None:
        self.sfu.channels.receive(self, data)

    def event(self, event: Any) -> None:
        self.sfu.session_event(self, event)
