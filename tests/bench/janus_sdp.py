"""The SDP a Janus load peer sends and what it reads of Janus's, in the two modes of the box bench's load
peer (tests/bench/sfu_load.py): plain (one codec per m-section, no extensions, no feedback) and Chrome
(transport-wide sequence numbers and mid on what the publisher sends, transport-cc feedback from the
subscribers, NACK/PLI/FIR and RTX for video), so that Janus is asked the same work as the box."""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from aiortc.rtcdtlstransport import RTCDtlsFingerprint

from appliance.sfu import extensions
from tests.bench.sfu_load import AUDIO_PT, VIDEO_PT

RTX_PT = 97
TRANSPORT_CC_ID, MID_ID = 3, 4  # the ids Chrome offers these extensions under, as the box bench's peer
CODECS = {"audio": (AUDIO_PT, "opus/48000/2"), "video": (VIDEO_PT, "VP8/90000")}
CHROME_EXTENSIONS = (extensions.TRANSPORT_CC, extensions.MID)  # what the box's Chrome-mode peer takes too
# RFC 8445 5.1.2.1: type preference 126 (host), top local preference, component 1.
HOST_PRIORITY = 126 << 24 | 0xFFFF << 8 | 255


@dataclass(frozen=True)
class Section:
    """One m-section of Janus's SDP."""

    kind: str
    mid: str
    pts: list[str]
    codec_lines: list[str]  # its a=rtpmap, a=fmtp and a=rtcp-fb lines
    extensions: dict[str, int]  # URI -> id


@dataclass(frozen=True)
class RemoteDescription:
    """What a load peer needs of Janus's SDP (offer or answer)."""

    ufrag: str
    pwd: str
    fingerprint: RTCDtlsFingerprint
    candidates: list[tuple[str, int]]  # UDP IPv4 host candidates
    setup: str  # Janus's DTLS role: active (it connects), passive or actpass (it waits)
    sections: list[Section]

    @classmethod
    def parse(cls, sdp: str) -> RemoteDescription:
        def one(pattern: str) -> re.Match[str]:
            match = re.search(pattern, sdp, re.M)
            if match is None:
                raise ValueError(f"Janus's SDP has no {pattern!r}:\n{sdp}")
            return match

        fingerprint = one(r"^a=fingerprint:(\S+) (\S+)")
        candidates = [(host, int(port)) for host, port in re.findall(
            r"^a=candidate:\S+ 1 udp \d+ (\d+\.\d+\.\d+\.\d+) (\d+) typ host", sdp, re.M | re.I)]
        if not candidates:
            raise ValueError(f"Janus's SDP has no IPv4 UDP host candidate:\n{sdp}")
        sections: list[Section] = []
        for kind, pts, body in re.findall(r"^m=(\w+) \d+ \S+ ([\d ]+)(.*?)(?=^m=|\Z)", sdp, re.M | re.S):
            mid = re.search(r"^a=mid:(\S+)", body, re.M)
            sections.append(Section(
                kind, mid[1] if mid else str(len(sections)), pts.split(),
                re.findall(r"^a=(?:rtpmap|fmtp|rtcp-fb):\S+ [^\r\n]+", body, re.M),
                {uri: int(ext_id) for ext_id, uri in re.findall(r"^a=extmap:(\d+) (\S+)", body, re.M)}))
        return cls(one(r"^a=ice-ufrag:(\S+)")[1], one(r"^a=ice-pwd:(\S+)")[1],
                   RTCDtlsFingerprint(fingerprint[1], fingerprint[2]), candidates, one(r"^a=setup:(\S+)")[1], sections)

    def extension_id(self, uri: str) -> int | None:
        """The id Janus gave `uri` (one id space for the BUNDLE group), or None if not negotiated."""
        return next((s.extensions[uri] for s in self.sections if uri in s.extensions), None)


@dataclass(frozen=True)
class LocalIce:
    """What the load peer's SDP says of its transport."""

    ufrag: str
    pwd: str
    fingerprint: str  # sha-256
    host: str
    port: int


def offer(ice: LocalIce, ssrcs: dict[str, int], rtx_ssrc: int | None) -> str:
    """A publisher's offer: audio then video, sendonly. With `rtx_ssrc`, Chrome's (transport-cc and mid,
    RTX on video); without, plain."""
    sections = []
    for mid, kind in enumerate(("audio", "video")):
        pt, codec = CODECS[kind]
        ssrc = ssrcs[kind]
        lines = [f"a=rtpmap:{pt} {codec}"]
        if rtx_ssrc is None:
            lines.append(f"a=rtcp-fb:{pt} nack pli")
            sources = [ssrc]
        elif kind == "audio":
            lines += [f"a=extmap:{TRANSPORT_CC_ID} {extensions.TRANSPORT_CC}", f"a=extmap:{MID_ID} {extensions.MID}",
                      f"a=rtcp-fb:{pt} transport-cc", f"a=fmtp:{pt} minptime=10;useinbandfec=1"]
            sources = [ssrc]
        else:
            lines += [f"a=extmap:{TRANSPORT_CC_ID} {extensions.TRANSPORT_CC}", f"a=extmap:{MID_ID} {extensions.MID}",
                      "a=rtcp-rsize",
                      *(f"a=rtcp-fb:{pt} {fb}" for fb in ("transport-cc", "ccm fir", "nack", "nack pli")),
                      f"a=rtpmap:{RTX_PT} rtx/90000", f"a=fmtp:{RTX_PT} apt={pt}",
                      f"a=ssrc-group:FID {ssrc} {rtx_ssrc}"]
            sources = [ssrc, rtx_ssrc]
        pts = f"{pt} {RTX_PT}" if rtx_ssrc is not None and kind == "video" else str(pt)
        sections.append(_section(ice, kind, str(mid), pts, "sendonly", "actpass", [
            *lines, *(f"a=ssrc:{s} {attr}" for s in sources for attr in ("cname:load", f"msid:load {kind}"))]))
    return _sdp(ice, sections)


def answer(ice: LocalIce, remote: RemoteDescription, chrome: bool) -> str:
    """A subscriber's answer to Janus's offer, every m-section recvonly: in Chrome mode with every codec
    and feedback Janus offered and the extensions the box's Chrome-mode peer takes; plain, its first
    codec only, NACK and PLI."""
    sections = []
    for section in remote.sections:
        if section.kind not in CODECS:
            raise ValueError(f"Janus offered media other than audio and video: {section.kind}")
        if chrome:
            pts = " ".join(section.pts)
            lines = ["a=rtcp-rsize", *(f"a={line}" for line in section.codec_lines),
                     *(f"a=extmap:{ext_id} {uri}" for uri, ext_id in section.extensions.items()
                       if uri in CHROME_EXTENSIONS)]
        else:
            pts = section.pts[0]
            lines = [f"a=rtpmap:{pts} {CODECS[section.kind][1]}", f"a=rtcp-fb:{pts} nack pli"]
        sections.append(_section(ice, section.kind, section.mid, pts, "recvonly", "active", lines))
    return _sdp(ice, sections)


def _section(ice: LocalIce, kind: str, mid: str, pts: str, direction: str, setup: str, lines: list[str]) -> list[str]:
    return [f"m={kind} {ice.port} UDP/TLS/RTP/SAVPF {pts}", f"c=IN IP4 {ice.host}", f"a=mid:{mid}", f"a={direction}",
            f"a=ice-ufrag:{ice.ufrag}", f"a=ice-pwd:{ice.pwd}", f"a=fingerprint:sha-256 {ice.fingerprint}",
            f"a=setup:{setup}", "a=rtcp-mux", *lines,
            f"a=candidate:1 1 udp {HOST_PRIORITY} {ice.host} {ice.port} typ host", "a=end-of-candidates"]


def _sdp(ice: LocalIce, sections: list[list[str]]) -> str:
    mids = [line[6:] for section in sections for line in section if line.startswith("a=mid:")]
    head = ["v=0", f"o=- {secrets.randbits(31)} 1 IN IP4 {ice.host}", "s=-", "t=0 0",
            f"a=group:BUNDLE {' '.join(mids)}", "a=msid-semantic: WMS load"]
    return "\r\n".join(head + [line for section in sections for line in section]) + "\r\n"
