"""A WebRTC load client for the SFU benchmark: real ICE checks, a real DTLS handshake and real SRTP,
built from the project's own STUN and DTLS pieces, and no media encoding at all."""
from __future__ import annotations

import json
import re
import secrets
import socket
import struct
import time
import urllib.request

from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsFingerprint

from appliance.rtc.dtls import Connected, DtlsConnection, DtlsContext
from appliance.stun import Attr, Class, Message, Method, short_term_key

CONTEXT = DtlsContext(RTCCertificate.generateCertificate())
AUDIO_PT, VIDEO_PT = 111, 96


def _post(url: str, body: dict | None, secret: str, method: str = "POST") -> dict:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Authorization": f"Bearer {secret}"})
    with urllib.request.urlopen(req, timeout=10) as res:
        return json.loads(res.read() or b"{}")


def _section(kind: str, mid: str, direction: str, ufrag: str, pwd: str, ssrc: int | None, setup: str) -> list[str]:
    pt, rtpmap = (AUDIO_PT, "opus/48000/2") if kind == "audio" else (VIDEO_PT, "VP8/90000")
    lines = [f"m={kind} 9 UDP/TLS/RTP/SAVPF {pt}", "c=IN IP4 0.0.0.0", f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{pwd}",
             f"a=fingerprint:sha-256 {CONTEXT.fingerprint.value}", f"a=setup:{setup}", f"a=mid:{mid}", f"a={direction}",
             "a=rtcp-mux", f"a=rtpmap:{pt} {rtpmap}", f"a=rtcp-fb:{pt} nack pli"]
    if ssrc is not None:
        lines += [f"a=ssrc:{ssrc} cname:load", f"a=ssrc:{ssrc} msid:load {kind}"]
    return lines


def _sdp(sections: list[list[str]]) -> str:
    mids = [next(line[6:] for line in s if line.startswith("a=mid:")) for s in sections]
    head = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", f"a=group:BUNDLE {' '.join(mids)}"]
    return "\r\n".join(head + [line for s in sections for line in s]) + "\r\n"


class LoadPeer:
    """One PeerConnection to the SFU: a UDP socket, ICE-controlling checks, the DTLS client."""

    def __init__(self, api: str, secret: str) -> None:
        self.api, self.secret = api, secret
        self.ufrag, self.pwd = secrets.token_hex(4), secrets.token_hex(12)
        self.session = _post(f"{api}/sessions/new", None, secret)["sessionId"]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.dtls: DtlsConnection | None = None

    def _connect(self, answer_sdp: str) -> None:
        ufrag = re.search(r"a=ice-ufrag:(\S+)", answer_sdp)[1]
        pwd = re.search(r"a=ice-pwd:(\S+)", answer_sdp)[1]
        fingerprint = re.search(r"a=fingerprint:(\S+) (\S+)", answer_sdp)
        host, port = re.search(r"a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host", answer_sdp).groups()
        self.sock.connect((host, int(port)))
        check = Message(Method.BINDING, Class.REQUEST, attributes=[
            (Attr.USERNAME, f"{ufrag}:{self.ufrag}"), (Attr.ICE_CONTROLLING, 1), (Attr.PRIORITY, 1),
            (Attr.USE_CANDIDATE, True)])
        self.sock.send(check.encode(short_term_key(pwd), fingerprint=True))
        self.sock.settimeout(5)
        self.sock.recv(2048)  # the check's answer
        self.dtls = DtlsConnection(CONTEXT, False, [RTCDtlsFingerprint(fingerprint[1], fingerprint[2])])
        self.dtls.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for datagram in self.dtls.datagrams_to_send():
                self.sock.send(datagram)
            event = self.dtls.next_event()
            while event is not None:
                if isinstance(event, Connected):
                    self.sock.setblocking(False)
                    return
                event = self.dtls.next_event()
            self.sock.settimeout(0.2)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                self.dtls.handle_timeout(time.monotonic() + 10)
                continue
            if 19 < data[0] < 64:
                self.dtls.receive(data)
        raise RuntimeError("DTLS did not connect")

    def publish(self) -> dict[str, int]:
        """Push one audio and one video track; their SSRCs."""
        ssrcs = {"audio": secrets.randbits(32), "video": secrets.randbits(32)}
        offer = _sdp([_section(kind, str(i), "sendonly", self.ufrag, self.pwd, ssrcs[kind], "actpass")
                      for i, kind in enumerate(("audio", "video"))])
        answer = _post(f"{self.api}/sessions/{self.session}/tracks/new", {
            "sessionDescription": {"type": "offer", "sdp": offer},
            "tracks": [{"location": "local", "mid": "0", "trackName": "audio"},
                       {"location": "local", "mid": "1", "trackName": "video"}]}, self.secret)
        self._connect(answer["sessionDescription"]["sdp"])
        return ssrcs

    def subscribe(self, publisher: str) -> None:
        offer = _post(f"{self.api}/sessions/{self.session}/tracks/new", {"tracks": [
            {"location": "remote", "sessionId": publisher, "trackName": "audio"},
            {"location": "remote", "sessionId": publisher, "trackName": "video"}]}, self.secret)
        sdp = offer["sessionDescription"]["sdp"]
        kinds = re.findall(r"^m=(audio|video) ", sdp, re.M)
        pts = [int(pt) for pt in re.findall(r"^m=\w+ \d+ \S+ (\d+)", sdp, re.M)]
        sections = []
        for mid, (kind, pt) in enumerate(zip(kinds, pts)):
            section = _section(kind, str(mid), "recvonly", self.ufrag, self.pwd, None, "active")
            sections.append([line.replace(f" {AUDIO_PT if kind == 'audio' else VIDEO_PT}", f" {pt}", 1)
                             if line.startswith(("m=", "a=rtpmap", "a=rtcp-fb")) else line for line in section])
        _post(f"{self.api}/sessions/{self.session}/renegotiate",
              {"sessionDescription": {"type": "answer", "sdp": _sdp(sections)}}, self.secret, method="PUT")
        self._connect(sdp)

    def send_rtp(self, pt: int, seq: int, ts: int, ssrc: int, payload: bytes) -> None:
        packet = struct.pack(">BBHII", 0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc) + payload
        try:
            self.sock.send(self.dtls.srtp_tx.protect(packet))
        except BlockingIOError:
            pass

    def drain(self) -> int:
        """Read and discard what arrived; how many datagrams."""
        count = 0
        while True:
            try:
                self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                return count
            count += 1

    def close(self) -> None:
        self.sock.close()
