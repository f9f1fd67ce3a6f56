"""An in-memory lab for the SFU core, in the style of the TURN core's (tests/unit/turn/harness.py):
the `Sfu` driven without sockets or an event loop, as the API, the media port and the shell drive it.

- `RecordingPort` stands in for `appliance.rtc.port.MediaPort`: it registers sessions and records
  what the SFU hands it for each (RTP, RTCP, DTLS application data), returning what the real port
  would (False until the session is connected). It does no ICE, DTLS or SRTP: those are the port's,
  tested in tests/unit/rtc. An endpoint "connects" when the lab gives its session handler the
  `Connected` event the port's DTLS gives.
- `RecordingAssociation` stands in for the shell's SCTP association (`associate`): the channels the
  router opens, the messages it sends; a client's message is delivered as SCTP would hand it over.
- `Endpoint` is a client with one PeerConnection (one Calls session). It writes Chrome-like SDP
  (offers of its m-lines, answers to the SFU's offers), pushes and pulls through the Sfu's public
  operations, sends RTP and RTCP built with aiortc.rtp's packet classes into its session handler
  (decrypted, as the port hands them over) and reads what the SFU sent it, parsed with the same
  classes against the SFU's SDP as aiortc's parser reads it.
- Time is the lab's `now`, moved explicitly and passed in; the SFU's timers run when a test calls
  them (`run_timers`, or one job).

A test reads like this:

    lab = Lab()
    pub, sub = lab.endpoint("pub"), lab.endpoint("sub")
    pub.push(video("cam"))
    sub.pull(pub, "cam")
    cam = pub.sender("cam")
    cam.send(key=True)
    (packet, _) = sub.media("0")             # RtpPacket objects, on the SSRC the SFU's SDP gave mid 0
    sub.nack("0", [packet.sequence_number])  # answered from the cache, on the RTX SSRC
    assert sub.rtx("0")[0].payload[2:] == packet.payload
"""
from __future__ import annotations

import itertools
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiortc.rtcdtlstransport import RTCCertificate
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import (RTCP_PSFB_PLI, RTCP_RTPFB_NACK, HeaderExtensions, HeaderExtensionsMap, RtcpByePacket,
                        RtcpPacket, RtcpPsfbPacket, RtcpReceiverInfo, RtcpRrPacket, RtcpRtpfbPacket, RtcpSrPacket,
                        RtpPacket, wrap_rtx)
from aiortc.sdp import SessionDescription

from appliance.rtc.dtls import Closed, Connected, DtlsContext, SrtpKeys
from appliance.rtc.ice import PathSelected, host_candidates
from appliance.sfu import feedback
from appliance.sfu.datachannels import DataChannel
from appliance.sfu.forward import Leg, payload_offset
from appliance.sfu.sfu import Sfu
from appliance.sfu.transport import TransportSender

# --- SDP as Chrome writes it -----------------------------------------------------------------------

FINGERPRINT = "sha-256 " + ":".join(f"{b:02X}" for b in range(32))
# One certificate for every lab: only its fingerprint reaches the SDP.
CONTEXT = DtlsContext(RTCCertificate.generateCertificate())
# Where the lab's media port listens (documentation addresses: nothing is sent anywhere).
MEDIA_ADDRESSES = [("203.0.113.5", 40000)]


def transport_lines(ufrag: str = "Yq1Z", pwd: str = "8WT9V2dSqkzP4Xv2+bWQ3bGx", setup: str = "actpass",
                    application: bool = False) -> list[str]:
    """What Chromium repeats in every m-section of a BUNDLE description."""
    return ["c=IN IP4 0.0.0.0", *([] if application else ["a=rtcp:9 IN IP4 0.0.0.0"]), f"a=ice-ufrag:{ufrag}",
            f"a=ice-pwd:{pwd}", "a=ice-options:trickle", f"a=fingerprint:{FINGERPRINT}", f"a=setup:{setup}"]


TRANSPORT = transport_lines()

AUDIO_EXTMAPS = ["a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
                 "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
                 "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
                 "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid"]
VIDEO_EXTMAPS = ["a=extmap:14 urn:ietf:params:rtp-hdrext:toffset",
                 "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
                 "a=extmap:13 urn:3gpp:video-orientation",
                 "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
                 "a=extmap:5 http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
                 "a=extmap:6 http://www.webrtc.org/experiments/rtp-hdrext/video-content-type",
                 "a=extmap:7 http://www.webrtc.org/experiments/rtp-hdrext/video-timing",
                 "a=extmap:8 http://www.webrtc.org/experiments/rtp-hdrext/color-space",
                 "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid",
                 "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
                 "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"]
AUDIO_CODECS = ("111 63 9 0 8 13 110 126", [
    "a=rtpmap:111 opus/48000/2", "a=rtcp-fb:111 transport-cc", "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:63 red/48000/2", "a=fmtp:63 111/111", "a=rtpmap:9 G722/8000", "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:8 PCMA/8000", "a=rtpmap:13 CN/8000", "a=rtpmap:110 telephone-event/48000",
    "a=rtpmap:126 telephone-event/8000"])
_VIDEO_FEEDBACK = ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]
VIDEO_CODECS = ("96 97 102 103", [
    "a=rtpmap:96 VP8/90000", *(f"a=rtcp-fb:96 {fb}" for fb in _VIDEO_FEEDBACK),
    "a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96",
    "a=rtpmap:102 H264/90000", *(f"a=rtcp-fb:102 {fb}" for fb in _VIDEO_FEEDBACK),
    "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
    "a=rtpmap:103 rtx/90000", "a=fmtp:103 apt=102"])
VIDEO_CODECS_NO_RTX = ("96 102", [line for line in VIDEO_CODECS[1] if not line.startswith(("a=rtpmap:97", "a=fmtp:97",
                                                                                          "a=rtpmap:103", "a=fmtp:103"))])
VP8_PT, RTX_PT, OPUS_PT = 96, 97, 111
STREAM_ID = "5d3c2d5a-3b1c-4c6e-9a0e-4f2b9c1d7e11"  # the a=msid stream of Chrome's offers


def head(mids: Iterable[str], session_id: int = 4611731400430051336, version: int = 2) -> list[str]:
    return ["v=0", f"o=- {session_id} {version} IN IP4 127.0.0.1", "s=-", "t=0 0",
            f"a=group:BUNDLE {' '.join(mids)}", "a=extmap-allow-mixed", f"a=msid-semantic: WMS {STREAM_ID}"]


def ssrc_lines(ssrc: int, rtx_ssrc: int | None, cname: str, msid: str) -> list[str]:
    """a=ssrc lines as Chrome writes them for one sent track (with its RTX SSRC in a FID group)."""
    group = [f"a=ssrc-group:FID {ssrc} {rtx_ssrc}"] if rtx_ssrc is not None else []
    return group + [line for s in (ssrc, rtx_ssrc) if s is not None
                    for line in (f"a=ssrc:{s} cname:{cname}", f"a=ssrc:{s} msid:{msid}")]


def audio_lines(mid: str, direction: str = "sendonly", ssrc: int | None = 3735928559,
                track_id: str = "0b4f0b7e-6c1a-4d55-8f43-2f3d3a0f6a01", transport: list[str] = TRANSPORT,
                cname: str = "4TOk42mSjXCkVIa6") -> list[str]:
    """A Chromium audio m-section: opus first, the extensions it offers."""
    sending = direction in ("sendonly", "sendrecv")
    msid = f"{STREAM_ID} {track_id}"
    return [f"m=audio 9 UDP/TLS/RTP/SAVPF {AUDIO_CODECS[0]}", *transport, f"a=mid:{mid}", *AUDIO_EXTMAPS,
            f"a={direction}", *([f"a=msid:{msid}"] if sending else []), "a=rtcp-mux", *AUDIO_CODECS[1],
            *(ssrc_lines(ssrc, None, cname, msid) if sending and ssrc is not None else [])]


def video_lines(mid: str, direction: str = "sendonly", *, rids: Iterable[str] = (), simulcast: str | None = None,
                extra: Iterable[str] = (), ssrc: int | None = None, rtx_ssrc: int | None = None, rtx: bool = True,
                track_id: str = "9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a", transport: list[str] = TRANSPORT,
                cname: str = "4TOk42mSjXCkVIa6") -> list[str]:
    """A Chromium video m-section: VP8 and H.264, each with RTX unless `rtx` is False; sent with
    RID simulcast (`rids`, no a=ssrc lines) or on one SSRC."""
    sending = direction in ("sendonly", "sendrecv")
    msid = f"{STREAM_ID} {track_id}"
    pts, codecs = VIDEO_CODECS if rtx else VIDEO_CODECS_NO_RTX
    return [f"m=video 9 UDP/TLS/RTP/SAVPF {pts}", *transport, f"a=mid:{mid}", *VIDEO_EXTMAPS, f"a={direction}",
            *([f"a=msid:{msid}"] if sending else []), "a=rtcp-mux", "a=rtcp-rsize", *codecs,
            *[f"a=rid:{rid} send" for rid in rids], *([simulcast] if simulcast else []), *extra,
            *(ssrc_lines(ssrc, rtx_ssrc if rtx else None, cname, msid) if sending and ssrc is not None else [])]


def application_lines(mid: str, transport: list[str] | None = None) -> list[str]:
    transport = transport_lines(application=True) if transport is None else transport
    return ["m=application 9 UDP/DTLS/SCTP webrtc-datachannel", *transport, f"a=mid:{mid}", "a=sctp-port:5000",
            "a=max-message-size:262144"]


def chrome_offer(simulcast="a=simulcast:send f;h;q", rids=("f", "h", "q"), ssrc_lines=()):
    """An offer as Chromium writes it for an audio track and a video track sent with three
    encodings (sendEncodings rid f, h, q): no a=ssrc lines on the video section."""
    return "\r\n".join([*head(["0", "1"]), *audio_lines("0"),
                        *video_lines("1", rids=rids, simulcast=simulcast, extra=ssrc_lines), ""])


CHROME_SIMULCAST_OFFER = chrome_offer()

# --- RTP payloads and raw packets --------------------------------------------------------------------

# VP8 payload headers (RFC 7741 4.3, the first three bytes of the VP8 frame tag): |Size0|H|VER|P|.
# A key frame has P = 0 and the start code 9d 01 2a after its three tag bytes. The byte after the
# first has its low bit set, so a parser that skips one byte too many sees P = 1.
VP8_KEY = bytes([0x50, 0x01, 0x01, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0xE0, 0x01])
# An interframe (P = 1); the next byte has its low bit clear, so a parser one byte off sees P = 0.
VP8_INTER = bytes([0x51, 0x00, 0x02, 0x10, 0x20])


def vp8_payload(payload_header, *, x=None, s=True, pid=0, n=False, picture_id=None, long_id=False, tl0=None,
                tid=None, keyidx=None):
    """An RFC 7741 payload descriptor (4.2) followed by `payload_header`. Optional fields are
    present when given: `picture_id` (I; 7 bits, or 15 with `long_id`, the M bit), `tl0` (L),
    `tid` and `keyidx` (T and K, which share one byte)."""
    ext = 0
    fields = b""
    if picture_id is not None:
        ext |= 0x80
        fields += (0x8000 | picture_id).to_bytes(2, "big") if long_id else bytes([picture_id & 0x7F])
    if tl0 is not None:
        ext |= 0x40
        fields += bytes([tl0])
    if tid is not None or keyidx is not None:
        ext |= (0x20 if tid is not None else 0) | (0x10 if keyidx is not None else 0)
        fields += bytes([((tid or 0) << 6) | 0x20 | (keyidx or 0) & 0x1F])  # Y set
    if x is None:
        x = bool(ext)
    first = (0x80 if x else 0) | (0x20 if n else 0) | (0x10 if s else 0) | pid
    return bytes([first]) + (bytes([ext]) + fields if x else b"") + payload_header


def rtp(seq, ts, ssrc=1111, pt=111, marker=False, payload=b"payload", extension=b"", csrcs=()):
    """A raw RTP packet, byte by byte (a leg's own tests check the bytes it writes from these)."""
    first = 0x80 | (0x10 if extension else 0) | len(csrcs)
    header = struct.pack(">BBHII", first, (0x80 if marker else 0) | pt, seq, ts, ssrc)
    header += b"".join(struct.pack(">I", c) for c in csrcs)
    if extension:
        header += struct.pack(">HH", 0xBEDE, len(extension) // 4) + extension
    return header + payload


class Sent(list):
    """A leg's output on its own: what it would have sent, in order."""

    def __call__(self, session, packet):
        self.append(packet)


@dataclass(eq=False)
class Downstream:
    """A leg's subscriber as a leg's own tests need it (appliance.sfu.forward.Downstream): where its
    packets go and the transport-wide numbering, when set."""

    port_session: Any = "session"
    transport_out: TransportSender | None = None

    def bandwidth(self) -> float | None:
        return None

    def send_rtcp(self, packet: bytes) -> bool:
        return True


def forward(leg: Leg, packet: bytes) -> None:
    """Forward `packet` on `leg` as a publisher's session does."""
    leg.forward(packet, packet[payload_offset(packet):], packet[2] << 8 | packet[3], int.from_bytes(packet[4:8], "big"))


# --- the media port --------------------------------------------------------------------------------


@dataclass(eq=False)
class RecordedSession:
    """A session on the recording port: what the SFU registered and the RTP and RTCP it sent on it
    (all of it: the real port would send only once connected, and says so by returning False)."""

    handler: Any  # the SFU's CallSession
    ufrag: str
    pwd: str
    remote_ufrag: str | None = None
    remote_fingerprints: list | None = None
    server: bool | None = None  # our DTLS role, as the SFU set it
    controlling: bool = False
    connected: bool = False
    removed: bool = False
    checks: list[tuple] = field(default_factory=list)  # connect() calls: (remote ufrag, candidates)
    rtp: list[bytes] = field(default_factory=list)
    rtcp: list[bytes] = field(default_factory=list)
    # The path and keys once connected (Endpoint.connect), as the real port's session has them.
    listener: Any = None
    addr: tuple[str, int] | None = None
    keys: SrtpKeys | None = None
    dtls: Any = None
    rtcp_sent: dict[int, int] = field(default_factory=dict)
    quietly: bool = False  # removed without a DTLS close_notify
    # RecordingPort.resume's arguments: (keys, inbound, outbound, rtcp_sent) of a carried-on session.
    resumed: tuple | None = None

    @property
    def up(self) -> bool:
        return self.connected and not self.removed


class RecordingPort:
    """What the SFU uses of `appliance.rtc.port.MediaPort`, with the same signatures."""

    def __init__(self) -> None:
        self.context = CONTEXT
        self.contexts = {CONTEXT.fingerprint.value: CONTEXT}
        self.sessions: list[RecordedSession] = []

    def add_session(self, handler: Any, ufrag: str, pwd: str, *, remote_ufrag: str | None = None,
                    remote_fingerprints: list | None = None, server: bool | None = None,
                    controlling: bool = False, certificate: str | None = None) -> RecordedSession:
        session = RecordedSession(handler, ufrag, pwd, remote_ufrag, remote_fingerprints, server, controlling)
        self.sessions.append(session)
        return session

    def set_remote(self, session: RecordedSession, ufrag: str, fingerprints: list, server: bool, now: float) -> None:
        session.remote_ufrag, session.remote_fingerprints = ufrag, fingerprints
        if session.server is None:  # the role is settled by whichever came first, as DTLS settles it
            session.server = server

    def connect(self, session: RecordedSession, ufrag: str, remote_ufrag: str, remote_pwd: str,
                candidates: list, now: float) -> None:
        session.checks.append((remote_ufrag, list(candidates)))

    def remove_session(self, session: RecordedSession, quietly: bool = False) -> None:
        session.removed = True
        session.quietly = quietly

    @staticmethod
    def udp(listener: Any) -> bool:
        return listener == "udp"

    def resume(self, session: RecordedSession, listener: Any, addr: tuple[str, int], keys: SrtpKeys,
               inbound: dict[int, int], outbound: dict[int, int], rtcp_sent: dict[int, int], now: float) -> None:
        session.resumed = (keys, inbound, outbound, rtcp_sent)
        session.listener, session.addr, session.keys, session.connected = listener, addr, keys, True
        session.rtcp_sent = dict(rtcp_sent)
        session.handler.event(PathSelected(session, listener, addr), now)
        session.handler.event(Connected(keys.profile), now)

    def send_rtp(self, session: RecordedSession, packet: bytes) -> bool:
        session.rtp.append(packet)
        return session.up

    def send_rtcp(self, session: RecordedSession, packet: bytes) -> bool:
        session.rtcp.append(packet)
        if session.up:
            ssrc = int.from_bytes(packet[4:8], "big")
            session.rtcp_sent[ssrc] = session.rtcp_sent.get(ssrc, 0) + 1
        return session.up


class RecordingAssociation:
    """A session's SCTP association as the channel router drives it (channel_router.Association),
    without SCTP: which channels it opened and closed and the messages it was given to send. The
    shell's association (appliance/rtc/sctp.py, aiortc's SCTP) is tested end to end by
    tests/integration/test_datachannels.py. Channels are open at once while `ready`."""

    def __init__(self, port_session: RecordedSession, remote_port: int, max_message_size: int | None,
                 on_message: Callable[[DataChannel, Any], None]) -> None:
        self.port_session = port_session
        self.remote_port = remote_port
        self.max_message_size = max_message_size
        self.on_message = on_message
        self.ready = True
        self.channels: dict[int, DataChannel] = {}
        self.closed: list[int] = []
        self.sent: list[tuple[int, Any]] = []
        self.packets: list[bytes] = []
        self.stopped = False

    def open(self, channel: DataChannel) -> None:
        self.channels[channel.id] = channel

    def receive(self, data: bytes) -> bool:
        self.packets.append(data)
        return not self.stopped

    def close(self, channel_id: int) -> None:
        if self.channels.pop(channel_id, None) is not None:
            self.closed.append(channel_id)

    def state(self, channel_id: int) -> str | None:
        if channel_id not in self.channels:
            return None
        return "open" if self.ready and not self.stopped else "connecting"

    def send(self, channel_id: int, message: Any) -> bool:
        if self.state(channel_id) != "open":
            return False
        self.sent.append((channel_id, message))
        return True

    def stop(self) -> None:
        self.stopped = True

    def deliver(self, channel_id: int, message: Any) -> None:
        """A message the client sent on the channel, as SCTP hands it over."""
        assert self.state(channel_id) == "open", f"channel {channel_id} is not open"
        self.on_message(self.channels[channel_id], message)


# --- the lab ---------------------------------------------------------------------------------------


class Lab:
    """An Sfu over a recording port and recording SCTP associations, on the lab's clock `now`."""

    def __init__(self, *, retransmissions: bool = True, now: float = 0.0) -> None:
        self.now = now
        self.port = RecordingPort()
        self.associations: dict[RecordedSession, RecordingAssociation] = {}
        self.sfu = Sfu(self.port, self.candidates, self.associate, retransmissions)
        self.sfu.start(now)
        self.endpoints: list[Endpoint] = []
        self._ssrc = 0x5EED0000

    @staticmethod
    def candidates():
        """The media port's host candidates, as the media service gives them."""
        return host_candidates(MEDIA_ADDRESSES)

    def associate(self, port_session: RecordedSession, remote_port: int, max_message_size: int | None,
                  on_message: Callable[[DataChannel, Any], None]) -> RecordingAssociation:
        association = RecordingAssociation(port_session, remote_port, max_message_size, on_message)
        self.associations[port_session] = association
        return association

    def at(self, now: float | None) -> float:
        """Move the clock to `now` (None: stay); the time."""
        if now is not None:
            self.now = now
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    def endpoint(self, name: str = "client", **options: Any) -> Endpoint:
        endpoint = Endpoint(self, name, **options)
        self.endpoints.append(endpoint)
        return endpoint

    def new_ssrc(self) -> int:
        self._ssrc += 1
        return self._ssrc

    # The SFU's timers: as the shell runs them, up to a time; or one job, when a test says.

    def run_timers(self, until: float) -> None:
        """Advance the clock to `until`, running the SFU's timer each time it is due on the way."""
        while (due := self.sfu.get_timer()) is not None and due <= until:
            self.sfu.handle_timer(self.at(max(due, self.now)))
        self.at(until)

    def send_reports(self, now: float | None = None) -> None:
        self.sfu.send_reports(self.at(now))

    def send_transport_feedback(self, now: float | None = None) -> None:
        self.sfu.send_transport_feedback(self.at(now))

    def adapt(self, now: float | None = None) -> None:
        self.sfu.adapt(self.at(now))

    def sweep(self, now: float | None = None) -> None:
        self.sfu.sweep(self.at(now))


# --- endpoints -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Track:
    """What an endpoint sends on an m-line: audio, or video on one SSRC or with RID simulcast."""

    name: str
    kind: str
    ssrc: int | None = None
    rtx_ssrc: int | None = None
    rids: tuple[str, ...] = ()


def audio(name: str, ssrc: int | None = None) -> Track:
    return Track(name, "audio", ssrc)


def video(name: str, ssrc: int | None = None, rtx_ssrc: int | None = None, rids: Iterable[str] = ()) -> Track:
    return Track(name, "video", ssrc, rtx_ssrc, tuple(rids))


@dataclass(eq=False)
class MLine:
    """One m-line of an endpoint's PeerConnection, in the endpoint's terms."""

    mid: str
    kind: str  # audio, video, application
    direction: str  # sendonly (it publishes), recvonly (it receives), sendrecv, inactive
    track: Track | None = None
    rtx: bool = True
    body: list[str] | None = None  # codec and extension lines, once an SFU offer set them
    stopped: bool = False  # written with port 0 from now on
    recyclable: bool = False  # stopped and negotiated so: a new transceiver may take the m-line


SSRCS = {"f": 0x0F0F0F01, "h": 0x0F0F0F02, "q": 0x0F0F0F03}
RTX_SSRCS = {"f": 0x0E0E0E01, "h": 0x0E0E0E02, "q": 0x0E0E0E03}


_PORTS = itertools.count(40000)


class Endpoint:
    """A client of the SFU with one PeerConnection: one Calls session, its SDP and its packets."""

    def __init__(self, lab: Lab, name: str, *, app: str = "app", thirdparty: bool = False,
                 edit: Callable[[str], str] | None = None) -> None:
        self.lab = lab
        self.sfu = lab.sfu
        self.name = name
        self.session = lab.sfu.new_session(app, lab.now, thirdparty=thirdparty)
        number = len(lab.endpoints)
        self.ufrag, self.pwd = f"c{number:03d}", f"client-password-{number:06d}"
        self.cname = f"cname-{name}"
        self.rtcp_ssrc = lab.new_ssrc()
        self.address = ("198.51.100.20", next(_PORTS))  # where its media comes from: no two endpoints share it
        self.edit = edit  # SDP munging: every description this endpoint sends passes through it
        self.lines: list[MLine] = []
        self.mids: set[str] = set()  # every mid it ever had: a mid is never given out twice
        self.sdp_id, self.sdp_version = 1000 + number, 1
        self.pending_offer: str | None = None  # an SFU offer not answered yet
        self.offered: dict[str, Track] = {}  # tracks to send on m-lines of the pending SFU offer
        self.sdp: str | None = None  # the SFU's latest description
        self.description: SessionDescription | None = None  # the same, as aiortc's parser reads it
        self.extensions = HeaderExtensionsMap()
        self.transport_seq = 0
        self.feedback_count = 0
        self.senders: dict[str, Sender] = {}

    def __repr__(self) -> str:
        return f"Endpoint({self.name})"

    @property
    def id(self) -> str:
        return self.session.id

    @property
    def port_session(self) -> RecordedSession | None:
        return self.session.port_session

    # --- descriptions --------------------------------------------------------------------------

    def _transport(self, setup: str, application: bool = False) -> list[str]:
        return transport_lines(self.ufrag, self.pwd, setup, application)

    def _section(self, line: MLine, setup: str) -> list[str]:
        if line.kind == "application":
            lines = application_lines(line.mid, self._transport(setup, True))
        elif line.body is not None:
            pts = " ".join(l.split()[0].partition(":")[2] for l in line.body if l.startswith("a=rtpmap:"))
            lines = [f"m={line.kind} 9 UDP/TLS/RTP/SAVPF {pts}", *self._transport(setup), f"a=mid:{line.mid}",
                     *[l for l in line.body if l.startswith("a=extmap:")], f"a={line.direction}",
                     *self._sending(line, msid=True), "a=rtcp-mux",
                     *(["a=rtcp-rsize"] if line.kind == "video" else []),
                     *[l for l in line.body if not l.startswith("a=extmap:")], *self._sending(line, msid=False)]
        elif line.kind == "audio":
            track = line.track
            lines = audio_lines(line.mid, line.direction, track.ssrc if track else None, _track_id(track),
                                self._transport(setup), self.cname)
        else:
            track = line.track or Track("", "video")
            lines = video_lines(line.mid, line.direction, rids=track.rids,
                                simulcast=f"a=simulcast:send {';'.join(track.rids)}" if track.rids else None,
                                ssrc=track.ssrc, rtx_ssrc=track.rtx_ssrc, rtx=line.rtx, track_id=_track_id(track),
                                transport=self._transport(setup), cname=self.cname)
        if line.stopped:
            # JSEP 5.2.2: a stopped transceiver's m-line has port 0 and carries nothing.
            first = lines[0].split(" ", 2)
            lines = [f"{first[0]} 0 {first[2]}", lines[1], f"a=mid:{line.mid}", "a=inactive"]
        return lines

    def _sending(self, line: MLine, msid: bool) -> list[str]:
        track = line.track
        if track is None or line.direction not in ("sendonly", "sendrecv"):
            return []
        stream = f"{STREAM_ID} {_track_id(track)}"
        if msid:
            return [f"a=msid:{stream}"]
        if track.ssrc is None:
            return []
        return ssrc_lines(track.ssrc, track.rtx_ssrc if line.kind == "video" else None, self.cname, stream)

    def _write(self, setup: str) -> str:
        mids = [line.mid for line in self.lines if not line.stopped]
        self.sdp_version += 1
        text = "\r\n".join([*head(mids, self.sdp_id, self.sdp_version),
                            *[part for line in self.lines for part in self._section(line, setup)], ""])
        return self.edit(text) if self.edit is not None else text

    def offer(self) -> str:
        """Its offer (Chrome's createOffer) of every m-line it has."""
        return self._write("actpass")

    def answer(self, offer: str) -> str:
        """Its answer (Chrome's createAnswer) to an SFU offer: receive what the SFU sends, send
        the tracks the SFU asked for (`offer_push`), the offer's codecs and extensions as offered."""
        lines = []
        for block in _sections(offer):
            mid = next(l[6:] for l in block if l.startswith("a=mid:"))
            kind = block[0][2:].split()[0]
            offered = next((l[2:] for l in block if l[2:] in ("sendonly", "recvonly", "sendrecv", "inactive")),
                           "sendrecv")
            line = self.line(mid) or MLine(mid, kind, "inactive", self.offered.pop(mid, None))
            self.mids.add(mid)
            lines.append(line)
            body = [l for l in block if l.startswith(("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:", "a=extmap:"))]
            if kind != "application":
                line.body = body
            line.direction = {"sendonly": "recvonly", "recvonly": "sendonly"}.get(offered, offered)
            if line.direction in ("sendonly", "sendrecv") and line.track is None:
                line.direction = "recvonly" if offered == "sendrecv" else "inactive"
            if block[0].split()[1] == "0":
                line.stopped = True
        self.lines = lines  # an answer has the offer's m-lines, in its order
        return self._write("active")

    def line(self, mid: str) -> MLine | None:
        return next((line for line in self.lines if line.mid == mid), None)

    def _add(self, line: MLine) -> MLine:
        """A new m-line of its own: Chrome gives it the m-line of a transceiver whose stop was
        negotiated, if there is one (JSEP 5.2.2), else appends it."""
        self.mids.add(line.mid)
        free = next((i for i, l in enumerate(self.lines) if l.recyclable), None)
        if free is None:
            self.lines.append(line)
        else:
            self.lines[free] = line
        return line

    def _next_mid(self) -> str:
        n = 0
        while str(n) in self.mids:
            n += 1
        return str(n)

    def _take(self, description: dict | None) -> None:
        """The SFU's description: what this endpoint reads the SFU's SSRCs and extension ids from.
        Its offer waits for `renegotiate`; its answer completes a negotiation."""
        if description is None:
            return
        self.sdp = description["sdp"]
        self.description = SessionDescription.parse(self.sdp)
        extensions = {(e.id, e.uri) for m in self.description.media for e in m.rtp.headerExtensions}
        self.extensions = HeaderExtensionsMap()
        self.extensions.configure(RTCRtpParameters(headerExtensions=[
            RTCRtpHeaderExtensionParameters(id=i, uri=u) for i, u in sorted(extensions)]))
        if description["type"] == "offer":
            self.pending_offer = self.sdp
        else:
            self._negotiated()

    def _negotiated(self) -> None:
        for line in self.lines:
            if line.stopped:
                line.recyclable = True

    # --- the Calls operations ------------------------------------------------------------------

    def push(self, *tracks: Track, items: list[dict] | None = None, auto_discover: bool = False,
             data: bool = False):
        """Add m-lines sending `tracks` (and an m=application with `data`) and push with its offer;
        the per-item results. Unless `items` are given, they name each new track by its mid."""
        new = self._add_tracks(tracks, data)
        if items is None:
            items = [{"location": "local", "mid": mid, "trackName": name} for mid, name in new]
        answer, results = self.sfu.push(self.session, self.offer(), items, auto_discover, self.lab.now)
        self._take(answer)
        return results

    def offer_with(self, *tracks: Track) -> str:
        """Its offer after adding m-lines that send `tracks`, for a test to change before pushing it."""
        self._add_tracks(tracks, False)
        return self.offer()

    def _add_tracks(self, tracks: Iterable[Track], data: bool) -> list[tuple[str, str]]:
        """(mid, track name) of the m-lines added for `tracks`, each with its own SSRCs."""
        new = []
        for track in tracks:
            if track.kind == "video" and track.ssrc is None and not track.rids:
                track = Track(track.name, track.kind, self.lab.new_ssrc(), self.lab.new_ssrc())
            elif track.kind == "audio" and track.ssrc is None:
                track = Track(track.name, track.kind, self.lab.new_ssrc())
            new.append((self._add(MLine(self._next_mid(), track.kind, "sendonly", track)).mid, track.name))
        if data and not any(l.kind == "application" and not l.stopped for l in self.lines):
            self._add(MLine(self._next_mid(), "application", "sendrecv"))
        return new

    def offer_push(self, *tracks: Track, bidirectional: bool = False, answer: bool = True):
        """Local tracks the SFU offers to receive (`kind` given); answered at once unless not `answer`."""
        items = [{"location": "local", "trackName": t.name, "kind": t.kind,
                  **({"bidirectionalMediaStream": True} if bidirectional else {})} for t in tracks]
        offer, results = self.sfu.offer_push(self.session, items, self.lab.now)
        self._take(offer)
        by_name = {t.name: t for t in tracks}
        for result in results:
            if "errorCode" not in result:
                track = by_name[result["trackName"]]
                ssrc = track.ssrc or self.lab.new_ssrc()
                rtx_ssrc = track.rtx_ssrc or (self.lab.new_ssrc() if track.kind == "video" else None)
                # Its m-line comes with the SFU's offer; the answer sends the track on it.
                self.offered[result["mid"]] = Track(track.name, track.kind, ssrc, rtx_ssrc)
        if answer and self.pending_offer is not None:
            self.renegotiate()
        return results

    def pull(self, source: Endpoint, *names: str, simulcast: dict | None = None, answer: bool = True):
        """Pull `names` of `source`; the SFU offers, and this endpoint answers unless not `answer`."""
        offer, results = self.sfu.pull(self.session, _remote(source, names, simulcast), self.lab.now)
        self._take(offer)
        if answer and self.pending_offer is not None:
            self.renegotiate()
        return results

    def pull_offering(self, source: Endpoint, *names: str, simulcast: dict | None = None, rtx: bool = True):
        """Pull into receiving m-lines of this endpoint's own offer, as a WHEP player does (one per
        track, of the kind `source` sends it as)."""
        for name in names:
            kind = next((l.kind for l in source.lines if l.track is not None and l.track.name == name), "audio")
            self._add(MLine(self._next_mid(), kind, "recvonly", rtx=rtx))
        answer, results = self.sfu.pull_with_offer(self.session, self.offer(), _remote(source, names, simulcast),
                                                   self.lab.now)
        self._take(answer)
        return results

    def renegotiate(self) -> None:
        """Answer the SFU's pending offer."""
        offer, self.pending_offer = self.pending_offer, None
        assert offer is not None, "no SFU offer to answer"
        self.sfu.renegotiate(self.session, self.answer(offer), self.lab.now)
        self._negotiated()

    def update(self, *items: dict) -> list[dict]:
        return self.sfu.update(self.session, list(items), self.lab.now)

    def close(self, *mids: str, force: bool = False, offer: bool = True):
        """Stop the transceivers of `mids` (Chrome's transceiver.stop()) and close their tracks,
        with the offer that shows them stopped unless `force` or not `offer`; the results."""
        for mid in mids:
            line = self.line(mid)
            if line is not None:
                line.stopped = True
                line.direction = "inactive"
        text = self.offer() if offer and not force else None
        answer, results = self.sfu.close_tracks(self.session, list(mids), text, force, self.lab.now)
        self._take(answer)
        return results

    def leave(self) -> None:
        """The session ends (its PeerConnection closed)."""
        self.session.event(Closed(), self.lab.now)

    def connect(self) -> None:
        """ICE and DTLS succeeded: the port would now carry this session's media."""
        assert self.port_session is not None, "nothing negotiated: the port has no session to connect"
        self.port_session.connected = True
        self.port_session.listener, self.port_session.addr = "udp", self.address
        self.port_session.keys = SrtpKeys("SRTP_AES128_CM_SHA1_80", bytes(range(30)), bytes(range(30, 60)))
        self.session.event(PathSelected(self.port_session, "udp", self.address), self.lab.now)
        self.session.event(Connected("SRTP_AES128_CM_SHA1_80"), self.lab.now)

    def describe(self) -> dict:
        return self.sfu.describe_session(self.session)

    # What a test may check inside the SFU, reached from here only.

    def track(self, name: str):
        """The SFU's PublishedTrack of this endpoint's track `name`."""
        return self.session.tracks[name]

    def leg(self, mid: str):
        """The SFU's Leg that sends this endpoint the track pulled on `mid`."""
        transceiver = self.session.transceiver(mid)
        assert transceiver is not None, f"no m-section {mid}"
        return transceiver.leg

    # --- media this endpoint sends ---------------------------------------------------------------

    def sender(self, name: str) -> Sender:
        """What sends the track `name` (one this endpoint pushed)."""
        if name not in self.senders:
            line = next(l for l in self.lines if l.track is not None and l.track.name == name)
            self.senders[name] = Sender(self, line)
        return self.senders[name]

    def send_rtp(self, packet: RtpPacket, now: float | None = None, transport_cc: bool = True) -> bytes:
        """Into the SFU as the port hands it over (decrypted), with the extensions negotiated
        (a transport-wide number on every packet when that is, as Chrome numbers them)."""
        if transport_cc:
            self.transport_seq = (self.transport_seq + 1) & 0xFFFF
            packet.extensions.transport_sequence_number = self.transport_seq
        data = packet.serialize(self.extensions)
        self.session.rtp(data, self.lab.at(now))
        return data

    def send_rtcp(self, *packets: Any, now: float | None = None) -> None:
        """One compound RTCP packet of aiortc packets (or bytes) into the SFU."""
        self.session.rtcp(b"".join(bytes(p) for p in packets), self.lab.at(now))

    def send_data(self, data: bytes) -> None:
        """DTLS application data (an SCTP packet) into the SFU, as the port hands it over."""
        self.session.data(data)

    def pli(self, mid: str, now: float | None = None) -> None:
        self.send_rtcp(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self.rtcp_ssrc, media_ssrc=self.ssrc(mid)), now=now)

    def nack(self, mid: str, seqs: Iterable[int], now: float | None = None) -> None:
        self.send_rtcp(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=self.rtcp_ssrc, media_ssrc=self.ssrc(mid),
                                       lost=sorted(seqs)), now=now)

    def receiver_report(self, mid: str, fraction_lost: int = 0, lsr: int = 0, dlsr: int = 0,
                        now: float | None = None) -> None:
        """An RR on what the SFU sends on `mid`: `fraction_lost` in 256ths."""
        info = RtcpReceiverInfo(ssrc=self.ssrc(mid), fraction_lost=fraction_lost, packets_lost=0,
                                highest_sequence=0, jitter=0, lsr=lsr, dlsr=dlsr)
        self.send_rtcp(RtcpRrPacket(ssrc=self.rtcp_ssrc, reports=[info]), now=now)

    def transport_report(self, lost: Iterable[int] = (), now: float | None = None) -> None:
        """Transport-wide feedback on every numbered packet the SFU sent so far (aiortc writes none:
        the SFU's own writer), each arrived at `now` but the transport-wide numbers in `lost`."""
        now = self.lab.at(now)
        seqs = sorted(p.extensions.transport_sequence_number for p in self.rtp()
                      if p.extensions.transport_sequence_number is not None)
        assert seqs, "nothing numbered arrived"
        missing = set(lost)
        self.feedback_count = (self.feedback_count + 1) & 0xFF
        arrivals = [None if seq in missing else now for seq in range(seqs[0], seqs[-1] + 1)]
        self.send_rtcp(feedback.transport_feedback_packet(self.rtcp_ssrc, self.rtp()[0].ssrc, seqs[0],
                                                          self.feedback_count, now, arrivals), now=now)

    # --- what the SFU sent this endpoint ---------------------------------------------------------

    def _recorded(self) -> RecordedSession:
        assert self.port_session is not None, "the SFU registered no port session for this endpoint"
        return self.port_session

    def rtp(self) -> list[RtpPacket]:
        """Every RTP packet the SFU sent this endpoint, parsed with the extension ids of its SDP."""
        if self.port_session is None:
            return []
        return [RtpPacket.parse(data, self.extensions) for data in self.port_session.rtp]

    def ssrc(self, mid: str) -> int:
        """The SSRC the SFU's SDP gives what it sends on `mid` (its a=ssrc lines)."""
        media = self._media(mid)
        fid = {g.items[1] for g in media.ssrc_group if g.semantic == "FID"}
        return next(s.ssrc for s in media.ssrc if s.ssrc not in fid)

    def rtx_ssrc(self, mid: str) -> int | None:
        media = self._media(mid)
        return next((g.items[1] for g in media.ssrc_group if g.semantic == "FID"), None)

    def _media(self, mid: str):
        assert self.description is not None, "no description from the SFU yet"
        return next(m for m in self.description.media if m.rtp.muxId == mid)

    def media(self, mid: str) -> list[RtpPacket]:
        """The packets of what the SFU sends on `mid`, in order."""
        ssrc = self.ssrc(mid)
        return [p for p in self.rtp() if p.ssrc == ssrc]

    def rtx(self, mid: str) -> list[RtpPacket]:
        """The retransmissions of what the SFU sends on `mid` (RFC 4588: the OSN, then the payload)."""
        ssrc = self.rtx_ssrc(mid)
        return [p for p in self.rtp() if p.ssrc == ssrc]

    def raw_rtcp(self) -> list[bytes]:
        return list(self.port_session.rtcp) if self.port_session is not None else []

    def rtcp(self) -> list[Any]:
        """Every RTCP packet the SFU sent, compound packets taken apart (aiortc's classes), but
        transport-wide feedback, which aiortc cannot read (`transport_feedback`)."""
        return [p for data in self.raw_rtcp() for p in RtcpPacket.parse(data)
                if not (isinstance(p, RtcpRtpfbPacket) and p.fmt == feedback.FMT_TRANSPORT_CC)]

    def plis(self) -> list[int]:
        """The media SSRCs the SFU asked keyframes of, in order."""
        return [p.media_ssrc for p in self.rtcp() if isinstance(p, RtcpPsfbPacket) and p.fmt == RTCP_PSFB_PLI]

    def nacks(self) -> list[tuple[int, list[int]]]:
        return [(p.media_ssrc, p.lost) for p in self.rtcp()
                if isinstance(p, RtcpRtpfbPacket) and p.fmt == RTCP_RTPFB_NACK]

    def byes(self) -> list[int]:
        return [ssrc for p in self.rtcp() if isinstance(p, RtcpByePacket) for ssrc in p.sources]

    def sender_reports(self) -> list[RtcpSrPacket]:
        return [p for p in self.rtcp() if isinstance(p, RtcpSrPacket)]

    def receiver_reports(self) -> list[RtcpRrPacket]:
        return [p for p in self.rtcp() if isinstance(p, RtcpRrPacket)]

    def transport_feedback(self) -> list[feedback.TransportFeedback]:
        """Transport-wide feedback (which aiortc does not read), with the SFU's reader."""
        return [report for data in self.raw_rtcp() for report in feedback.transport_feedback(data)]

    def clear(self) -> None:
        """Forget what the SFU sent so far."""
        if self.port_session is not None:
            self.port_session.rtp.clear()
            self.port_session.rtcp.clear()

    # --- data channels ---------------------------------------------------------------------------

    def establish(self, offer: bool = False, answer: bool = True):
        """`datachannels/establish`: with this endpoint's offer of an m=application when `offer`,
        else the SFU offers one (answered at once unless not `answer`); the channel."""
        text = None
        if offer:
            if not any(l.kind == "application" and not l.stopped for l in self.lines):
                self._add(MLine(self._next_mid(), "application", "sendrecv"))
            text = self.offer()
        description, channel = self.sfu.establish(self.session, text, self.lab.now)
        self._take(description)
        if answer and self.pending_offer is not None:
            self.renegotiate()
        return channel

    def new_channels(self, *items: dict) -> list[dict]:
        """`datachannels/new`."""
        return self.sfu.channels.new(self.session, list(items), self.lab.now)

    def close_channels(self, *ids: int) -> list[dict]:
        return self.sfu.channels.close(self.session, [{"id": i} for i in ids])

    def update_channels(self, *items: dict) -> list[dict]:
        return self.sfu.channels.update(self.session, list(items))

    @property
    def association(self) -> RecordingAssociation | None:
        """The SCTP association the SFU runs for this session, once it has one."""
        return self.lab.associations.get(self.port_session) if self.port_session is not None else None

    def message(self, channel_id: int, message: Any) -> None:
        """Send a message on a channel, as this client's SCTP would carry it to the SFU."""
        assert self.association is not None, "no SCTP association: negotiate an m=application and connect"
        self.association.deliver(channel_id, message)

    def messages(self, channel_id: int | None = None) -> list:
        """What the SFU sent on the channel (or on all, as (id, message)), in order."""
        sent = self.association.sent if self.association is not None else []
        return [m for i, m in sent if i == channel_id] if channel_id is not None else list(sent)


def _remote(source: Endpoint, names: Iterable[str], simulcast: dict | None) -> list[dict]:
    """Pull items for `names` of `source`."""
    return [{"location": "remote", "sessionId": source.id, "trackName": name,
             **({"simulcast": simulcast} if simulcast is not None else {})} for name in names]


def _track_id(track: Track | None) -> str:
    return f"track-{track.name}" if track is not None else ""


def _sections(text: str) -> list[list[str]]:
    blocks: list[list[str]] = []
    for line in text.split("\r\n"):
        if line.startswith("m="):
            blocks.append([])
        if blocks and line:
            blocks[-1].append(line)
    return blocks


# --- media sources -----------------------------------------------------------------------------------

# Chrome's three layers start their numbers apart; q wraps its sequence numbers at its frame 4.
START_SEQ: dict[str | None, int] = {"f": 1000, "h": 20000, "q": 65528}
START_TS: dict[str | None, int] = {"f": 10_000, "h": 500_000, "q": 4_294_960_000}
# Each layer counts its VP8 picture ids (and TL0PICIDX) on its own, as browsers' do: in the 15-bit
# space f's and h's run ahead of q's, so a move from f or h to q goes back.
START_PICTURE: dict[str | None, int] = {"f": 8543, "h": 8949, "q": 32446}


class Sender:
    """An encoder's output on one m-line: for video, every frame is two VP8 packets (the first
    starts the frame and says whether it is a keyframe), each payload ending in a label
    `<rid><frame>.<part>` that shows where a forwarded packet came from; for audio, one opus
    packet per frame. The packets carry mid and rid (RFC 8852), as libwebrtc sends them until
    acknowledged."""

    def __init__(self, endpoint: Endpoint, line: MLine) -> None:
        self.endpoint = endpoint
        self.mid = line.mid
        track = line.track
        assert track is not None, "the m-line sends nothing"
        self.kind = track.kind
        self.rids: tuple[str | None, ...] = track.rids or (None,)
        self.ssrcs: dict[str | None, int | None] = {None: track.ssrc}
        self.rtx_ssrcs: dict[str | None, int | None] = {None: track.rtx_ssrc}
        if track.rids:
            # RID simulcast: the SSRCs are the encoder's own, found by the SFU from the rid extensions.
            self.ssrcs = {rid: SSRCS.get(rid) or endpoint.lab.new_ssrc() for rid in track.rids}
            self.rtx_ssrcs = {rid: RTX_SSRCS.get(rid) or endpoint.lab.new_ssrc() for rid in track.rids}
        self.pt = VP8_PT if self.kind == "video" else OPUS_PT
        self.seq = {rid: START_SEQ.get(rid, 3000) for rid in self.rids}
        self.ts = {rid: START_TS.get(rid, 40_000) for rid in self.rids}
        self.frame = {rid: 0 for rid in self.rids}
        self.sent: dict[tuple[str | None, int], RtpPacket] = {}  # (rid, seq) -> the packet
        self.rtx_seq = 7
        self.level: int | None = None  # audio: the RFC 6464 level (-dBov) each packet carries, when set

    @property
    def ssrc(self) -> int:
        return self.ssrcs[self.rids[0]]

    def frame_packets(self, rid: str | None = None, key: bool = False, with_ids: bool = True) -> list[RtpPacket]:
        """The packets of the rid's next frame."""
        number = self.frame[rid]
        self.frame[rid] += 1
        label = f"{rid or ''}{number}"
        if self.kind == "audio":
            self.ts[rid] = (self.ts[rid] + 960) & 0xFFFFFFFF
            return [self._packet(rid, f"opus{label}.0".encode(), True, with_ids)]
        self.ts[rid] = (self.ts[rid] + 3000) & 0xFFFFFFFF
        packets = []
        picture = (START_PICTURE.get(rid, 0) + number) & 0x7FFF
        for part in (0, 1):
            # X; I with a 15-bit picture id, L (TL0PICIDX), T (every frame on temporal layer 0).
            descriptor = bytes([0x90 if part == 0 else 0x80, 0xE0, 0x80 | picture >> 8, picture & 0xFF,
                                picture & 0xFF, 0x20])
            body = (VP8_KEY if key else VP8_INTER) if part == 0 else b""
            packets.append(self._packet(rid, descriptor + body + f"{label}.{part}".encode(), part == 1, with_ids))
        return packets

    def _packet(self, rid: str | None, payload: bytes, marker: bool, with_ids: bool) -> RtpPacket:
        seq = self.seq[rid]
        self.seq[rid] = (seq + 1) & 0xFFFF
        packet = RtpPacket(self.pt, int(marker), seq, self.ts[rid], self.ssrcs[rid], payload)
        if with_ids:
            packet.extensions.mid = self.mid
            packet.extensions.rtp_stream_id = rid
        if self.level is not None:
            packet.extensions.audio_level = (True, self.level)
        self.sent[rid, seq] = packet
        return packet

    def send(self, rid: str | None = None, now: float | None = None, key: bool = False, lose: Iterable[int] = ()):
        """One frame of `rid` into the SFU, but the packets numbered in `lose` (0, 1)."""
        lost = set(lose)
        for part, packet in enumerate(self.frame_packets(rid, key)):
            if part not in lost:
                self.endpoint.send_rtp(packet, now)

    def tick(self, now: float | None = None, keys: Iterable[str | None] = (), only: Iterable[str | None] | None = None):
        """A frame of every layer (or those in `only`), keyframes on those in `keys`."""
        keys = set(keys)
        for rid in self.rids if only is None else only:
            self.send(rid, now, key=rid in keys)

    def rtx(self, rid: str | None, seq: int) -> RtpPacket:
        """The RTX packet (RFC 4588) that repairs `seq` of `rid`: rtx payload type, the OSN, and
        mid with repaired-rid."""
        self.rtx_seq += 1
        packet = wrap_rtx(self.sent[rid, seq], RTX_PT, self.rtx_seq, self.rtx_ssrcs[rid])
        packet.extensions = HeaderExtensions(mid=self.mid, repaired_rtp_stream_id=rid)
        return packet

    def send_rtx(self, rid: str | None, seq: int, now: float | None = None) -> None:
        self.endpoint.send_rtp(self.rtx(rid, seq), now)



def label(packet: RtpPacket) -> str:
    """Which frame and part a forwarded packet is, from the end of its payload (see `Sender`)."""
    found = re.search(rb"([A-Za-z]*[0-9]+\.[01])$", packet.payload)
    assert found, packet.payload
    return found.group(1).decode()


def labels(packets: Iterable[RtpPacket]) -> list[str]:
    return [label(p) for p in packets]


def picture(packet: RtpPacket) -> tuple[int, int]:
    """The VP8 picture id and TL0PICIDX of a packet of a `Sender`'s (its descriptor's bytes 2-4)."""
    return (packet.payload[2] & 0x7F) << 8 | packet.payload[3], packet.payload[4]
