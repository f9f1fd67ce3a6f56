"""A WebRTC load client for the SFU benchmarks: real ICE checks, a real DTLS handshake and real SRTP,
built from the project's own STUN, DTLS, SDP and RTCP pieces, and no media encoding at all.

In Chrome mode (the default) a peer negotiates what Chrome does and the box then works as it does
for Chrome: the transport-wide sequence number and mid header extensions, transport-cc feedback on
every codec, NACK, PLI and FIR on video, and RTX for video on its own SSRC. A publisher numbers every
packet it sends across audio and video and names its mid on each SSRC's first packets; a subscriber
reads the numbers in the plain RTP headers of what it receives (SRTP leaves headers unencrypted)
and sends transport-cc feedback about every FEEDBACK_INTERVAL. `chrome=False` keeps the plain
load of the first benchmark: one codec per m-section, no extensions, no feedback.
"""
from __future__ import annotations

import json
import secrets
import socket
import struct
import time
import urllib.request

import pylibsrtp
from aiortc.rtcdtlstransport import RTCCertificate

from appliance.rtc.dtls import Connected, DtlsConnection, DtlsContext
from appliance.sfu import extensions, feedback, sdp
from appliance.sfu.transport import TransportReceiver
from appliance.stun import Attr, Class, Message, Method, short_term_key

CONTEXT = DtlsContext(RTCCertificate.generateCertificate())
AUDIO_PT, VIDEO_PT, RTX_PT = 111, 96, 97
# The ids Chrome gives these extensions in its offers (one space for the BUNDLE group).
TRANSPORT_CC_ID, MID_ID = 3, 4
CHROME_EXTENSIONS = {extensions.TRANSPORT_CC, extensions.MID}
FEEDBACK_INTERVAL = 0.05  # libwebrtc's receivers report transport-wide arrivals about this often
MID_PACKETS = 64  # packets per SSRC that name their mid (libwebrtc stops once the SSRC is acknowledged)
DRAIN_EVERY = 64  # a Chrome-mode publisher reads (and drops) what the box sent it every this many packets
_HEADER = struct.Struct(">BBHII")


def _post(url: str, body: dict | None, secret: str, method: str = "POST") -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Authorization": f"Bearer {secret}"})
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.loads(res.read() or b"{}")


def _transport(mid: str, ufrag: str, pwd: str, setup: str) -> list[str]:
    return ["c=IN IP4 0.0.0.0", f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{pwd}",
            f"a=fingerprint:sha-256 {CONTEXT.fingerprint.value}", f"a=setup:{setup}", f"a=mid:{mid}"]


def _section(kind: str, mid: str, direction: str, ufrag: str, pwd: str, ssrc: int | None, setup: str,
             pt: int | None = None) -> list[str]:
    """A plain m-section: one codec (under `pt` when the box chose the number), NACK and PLI, no extensions."""
    default, rtpmap = (AUDIO_PT, "opus/48000/2") if kind == "audio" else (VIDEO_PT, "VP8/90000")
    pt = default if pt is None else pt
    lines = [f"m={kind} 9 UDP/TLS/RTP/SAVPF {pt}", *_transport(mid, ufrag, pwd, setup), f"a={direction}",
             "a=rtcp-mux", f"a=rtpmap:{pt} {rtpmap}", f"a=rtcp-fb:{pt} nack pli"]
    if ssrc is not None:
        lines += [f"a=ssrc:{ssrc} cname:load", f"a=ssrc:{ssrc} msid:load {kind}"]
    return lines


def _chrome_send_section(kind: str, mid: str, ufrag: str, pwd: str, ssrc: int, rtx_ssrc: int | None) -> list[str]:
    """A sending m-section as Chrome offers it, cut to one codec (and its RTX) and the extensions the
    box takes part in."""
    lines = [f"m={kind} 9 UDP/TLS/RTP/SAVPF " + (f"{AUDIO_PT}" if kind == "audio" else f"{VIDEO_PT} {RTX_PT}"),
             *_transport(mid, ufrag, pwd, "actpass"), f"a=extmap:{TRANSPORT_CC_ID} {extensions.TRANSPORT_CC}",
             f"a=extmap:{MID_ID} {extensions.MID}", "a=sendonly", f"a=msid:load {kind}", "a=rtcp-mux"]
    if kind == "audio":
        lines += [f"a=rtpmap:{AUDIO_PT} opus/48000/2", f"a=rtcp-fb:{AUDIO_PT} transport-cc",
                  f"a=fmtp:{AUDIO_PT} minptime=10;useinbandfec=1"]
    else:
        lines += ["a=rtcp-rsize", f"a=rtpmap:{VIDEO_PT} VP8/90000",
                  *(f"a=rtcp-fb:{VIDEO_PT} {fb}" for fb in ("transport-cc", "ccm fir", "nack", "nack pli")),
                  f"a=rtpmap:{RTX_PT} rtx/90000", f"a=fmtp:{RTX_PT} apt={VIDEO_PT}"]
    if rtx_ssrc is not None:
        lines.append(f"a=ssrc-group:FID {ssrc} {rtx_ssrc}")
    for s in (ssrc, *([rtx_ssrc] if rtx_ssrc is not None else [])):
        lines += [f"a=ssrc:{s} cname:load", f"a=ssrc:{s} msid:load {kind}"]
    return lines


def _chrome_receive_section(offered: sdp.RemoteSection, ufrag: str, pwd: str) -> list[str]:
    """Chrome's answer to one of the box's sending m-sections: every codec, feedback and extension
    it offered that Chrome takes (the parser already keeps only feedback the box takes part in)."""
    pts = " ".join(str(c.pt) for c in offered.codecs)
    ext_lines = [f"a=extmap:{ext_id} {uri}" for uri, ext_id in offered.extensions.items() if uri in CHROME_EXTENSIONS]
    return [f"m={offered.kind} 9 UDP/TLS/RTP/SAVPF {pts}", *_transport(offered.mid, ufrag, pwd, "active"),
            *ext_lines, "a=recvonly", "a=rtcp-mux", "a=rtcp-rsize",
            *(line for codec in offered.codecs for line in codec.sdp_lines())]


def _sdp(sections: list[list[str]]) -> str:
    mids = [next(line[6:] for line in s if line.startswith("a=mid:")) for s in sections]
    head = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", f"a=group:BUNDLE {' '.join(mids)}"]
    return "\r\n".join(head + [line for s in sections for line in s]) + "\r\n"


class LoadPeer:
    """One PeerConnection to the SFU: a UDP socket, ICE-controlling checks, the DTLS client."""

    def __init__(self, api: str, secret: str, chrome: bool = True) -> None:
        self.api, self.secret, self.chrome = api, secret, chrome
        self.ufrag, self.pwd = secrets.token_hex(4), secrets.token_hex(12)
        self.session = _post(f"{api}/sessions/new", None, secret)["sessionId"]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.dtls: DtlsConnection | None = None
        self._remote_ice = ("", "")  # the box's ufrag and pwd, for consent checks
        # Sending (Chrome mode): the transport-wide number of the last packet, and what names each SSRC's mid.
        self.transport_seq = 0
        self._mid_elements: dict[int, bytes] = {}
        self._mid_left: dict[int, int] = {}
        self.rtx_ssrc: int | None = None
        # Receiving (Chrome mode): the box's transport-wide numbering of what it sends this peer.
        self.rtcp_ssrc = secrets.randbits(32)
        self.transport_in: TransportReceiver | None = None
        self.feedback_sent = 0  # transport-cc feedback packets sent to the box
        self.feedback_received = 0  # transport-cc feedback packets the box sent this peer
        self._media_ssrc = 0  # the SSRC of the latest packet numbered: the feedback's media SSRC, as libwebrtc's
        self._feedback_at = 0.0

    def _connect(self, remote: sdp.RemoteDescription) -> None:
        if self.dtls is not None:  # a renegotiation: the PeerConnection stays up
            return
        self._remote_ice = (remote.ufrag, remote.pwd)
        self.sock.connect(remote.candidates[0])
        self.keepalive()
        self.sock.settimeout(5)
        self.sock.recv(2048)  # the check's answer
        self.dtls = dtls = DtlsConnection(CONTEXT, False, remote.fingerprints)
        dtls.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for datagram in dtls.datagrams_to_send():
                self.sock.send(datagram)
            event = dtls.next_event()
            while event is not None:
                if isinstance(event, Connected):
                    self.sock.setblocking(False)
                    return
                event = dtls.next_event()
            self.sock.settimeout(0.2)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                dtls.handle_timeout(time.monotonic() + 10)
                continue
            if 19 < data[0] < 64:
                dtls.receive(data)
        raise RuntimeError("DTLS did not connect")

    def keepalive(self) -> None:
        """An ICE check on the path (RFC 7675 consent: the box drops a path 30 s after the last one);
        the answer is read, and dropped, by the next `drain`."""
        ufrag, pwd = self._remote_ice
        check = Message(Method.BINDING, Class.REQUEST, attributes=[
            (Attr.USERNAME, f"{ufrag}:{self.ufrag}"), (Attr.ICE_CONTROLLING, 1), (Attr.PRIORITY, 1),
            (Attr.USE_CANDIDATE, True)])
        self.sock.send(check.encode(short_term_key(pwd), fingerprint=True))

    def publish(self) -> dict[str, int]:
        """Push one audio and one video track; their SSRCs (in Chrome mode video also has an RTX SSRC,
        `rtx_ssrc`, that carries nothing: nothing is lost)."""
        ssrcs = {"audio": secrets.randbits(32), "video": secrets.randbits(32)}
        if self.chrome:
            self.rtx_ssrc = secrets.randbits(32)
            sections = [_chrome_send_section("audio", "0", self.ufrag, self.pwd, ssrcs["audio"], None),
                        _chrome_send_section("video", "1", self.ufrag, self.pwd, ssrcs["video"], self.rtx_ssrc)]
            for mid, kind in enumerate(("audio", "video")):
                name = str(mid).encode()
                self._mid_elements[ssrcs[kind]] = bytes((MID_ID << 4 | len(name) - 1,)) + name
                self._mid_left[ssrcs[kind]] = MID_PACKETS
        else:
            sections = [_section(kind, str(i), "sendonly", self.ufrag, self.pwd, ssrcs[kind], "actpass")
                        for i, kind in enumerate(("audio", "video"))]
        answer = _post(f"{self.api}/sessions/{self.session}/tracks/new", {
            "sessionDescription": {"type": "offer", "sdp": _sdp(sections)},
            "tracks": [{"location": "local", "mid": "0", "trackName": "audio"},
                       {"location": "local", "mid": "1", "trackName": "video"}]}, self.secret)
        self._connect(sdp.parse(answer["sessionDescription"]["sdp"], "answer"))
        return ssrcs

    def subscribe(self, publisher: str, *more: str) -> None:
        """Pull the audio and video tracks of each publisher's session, answering the box's offer
        (which lists every m-section of this session, so it may renegotiate a connected one)."""
        tracks = [{"location": "remote", "sessionId": s, "trackName": name}
                  for s in (publisher, *more) for name in ("audio", "video")]
        offer_sdp = _post(f"{self.api}/sessions/{self.session}/tracks/new", {"tracks": tracks},
                          self.secret)["sessionDescription"]["sdp"]
        offer = sdp.parse(offer_sdp, "offer")
        if self.chrome:
            sections = [_chrome_receive_section(s, self.ufrag, self.pwd) for s in offer.sections]
            ids = {s.extensions[extensions.TRANSPORT_CC] for s in offer.sections
                   if extensions.TRANSPORT_CC in s.extensions}
            if ids and self.transport_in is None:
                self.transport_in = TransportReceiver(ids.pop())
        else:
            # The first codec of each m-section only: no RTX.
            sections = [_section(s.kind, s.mid, "recvonly", self.ufrag, self.pwd, None, "active", s.codecs[0].pt)
                        for s in offer.sections]
        _post(f"{self.api}/sessions/{self.session}/renegotiate",
              {"sessionDescription": {"type": "answer", "sdp": _sdp(sections)}}, self.secret, method="PUT")
        self._connect(offer)

    def send_rtp(self, pt: int, seq: int, ts: int, ssrc: int, payload: bytes) -> None:
        """One packet; in Chrome mode with the next transport-wide number (and the mid on the SSRC's
        first packets), and now and then reading what the box sent back."""
        if self.dtls is None or self.dtls.srtp_tx is None:
            raise RuntimeError("send_rtp before the PeerConnection is connected")
        if self.chrome:
            self.transport_seq = number = (self.transport_seq + 1) & 0xFFFF
            elements = bytes((TRANSPORT_CC_ID << 4 | 1, number >> 8, number & 0xFF))
            left = self._mid_left.get(ssrc)
            if left:
                self._mid_left[ssrc] = left - 1
                elements += self._mid_elements[ssrc]
            header = _HEADER.pack(0x90, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + extensions.block(elements)
            if number % DRAIN_EVERY == 0:
                self.drain()
        else:
            header = _HEADER.pack(0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
        self._send(self.dtls.srtp_tx.protect(header + payload))

    def _send(self, datagram: bytes) -> None:
        try:
            self.sock.send(datagram)
        except BlockingIOError:
            pass

    def drain(self) -> int:
        """Read what arrived; how many datagrams. In Chrome mode the transport-wide numbers of RTP
        are noted, the box's transport-cc feedback counted, and feedback sent when it is due."""
        count = 0
        while True:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                break
            count += 1
            if self.chrome and data[0] >> 6 == 2:  # RTP or RTCP (not a STUN answer)
                self._received(data)
        if self.chrome:
            self._send_feedback()
        return count

    def _received(self, data: bytes) -> None:
        if 192 <= data[1] <= 223:  # RTCP (RFC 5761)
            rx = self.dtls.srtp_rx if self.dtls is not None else None
            if rx is None:
                return
            try:
                self.feedback_received += len(feedback.transport_feedback(rx.unprotect_rtcp(data)))
            except pylibsrtp.Error:
                pass
            return
        receiver = self.transport_in
        if receiver is None:
            return
        number = extensions.find(data, receiver.ext_id)
        if number is not None and len(number) == 2:
            receiver.arrived(number[0] << 8 | number[1], time.monotonic())
            self._media_ssrc = int.from_bytes(data[8:12], "big")

    def _send_feedback(self) -> None:
        receiver, now = self.transport_in, time.monotonic()
        if receiver is None or now - self._feedback_at < FEEDBACK_INTERVAL:
            return
        if self.dtls is None or self.dtls.srtp_tx is None:
            return
        self._feedback_at = now
        packet = receiver.report(self.rtcp_ssrc, self._media_ssrc)
        if packet is not None:
            self.feedback_sent += 1
            self._send(self.dtls.srtp_tx.protect_rtcp(packet))

    def close(self) -> None:
        self.sock.close()
