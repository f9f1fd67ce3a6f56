"""SDP for the SFU: what a client's description says (read with aiortc's parser), and the
descriptions the SFU writes (an ICE-lite, BUNDLE, rtcp-mux endpoint on the one media port;
a full ICE agent in a session relaying to a third party).
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from aiortc import sdp as aiortc_sdp
from aiortc.rtcdtlstransport import RTCDtlsFingerprint

from .codecs import Codec


class SdpError(ValueError):
    """A description the SFU cannot use; the message says why."""


@dataclass
class RemoteSection:
    """One m-section of a client's description."""

    index: int
    mid: str
    kind: str
    direction: str  # as the client wrote it
    rejected: bool
    codecs: list[Codec]
    extensions: dict[str, int]  # uri -> id
    ssrcs: list[int]  # media SSRCs first; RTX SSRCs are not listed here
    msid: str | None
    sctp_port: int | None
    max_message_size: int | None = None  # m=application: a=max-message-size, None when absent
    rtx_ssrcs: dict[int, int] = field(default_factory=dict)  # media SSRC -> RTX SSRC (a=ssrc-group:FID)
    rids: list[str] = field(default_factory=list)  # simulcast layers it sends, most preferred first (RFC 8853)


@dataclass
class RemoteDescription:
    type: str
    ufrag: str
    pwd: str
    fingerprints: list[RTCDtlsFingerprint]
    setup: str  # active, passive or actpass
    sections: list[RemoteSection]
    # UDP host and server-reflexive candidates with an IP address, best first: what a session
    # that controls ICE checks (mDNS names and relayed candidates are for browsers to check).
    candidates: list[tuple[str, int]] = field(default_factory=list)

    def section(self, mid: str) -> RemoteSection | None:
        return next((s for s in self.sections if s.mid == mid), None)


def parse(text: object, expected_type: str) -> RemoteDescription:
    """Read a client's description of `expected_type` ("offer" or "answer")."""
    if not isinstance(text, str) or not text.startswith("v="):
        raise SdpError("sessionDescription.sdp: expected SDP text starting with v=")
    try:
        parsed = aiortc_sdp.SessionDescription.parse(text)
    except Exception as e:  # aiortc's parser raises whatever the line trips it on
        raise SdpError(f"the SDP does not parse: {type(e).__name__}: {e}") from None
    sections = []
    ice = dtls = None
    candidates = []
    raw_sections = _raw_sections(text)
    for index, media in enumerate(parsed.media):
        mid = media.rtp.muxId
        if not mid:
            raise SdpError(f"m-section {index} has no a=mid (BUNDLE needs one on every m-section)")
        if media.ice and media.ice.usernameFragment:
            ice = ice or media.ice
        if media.dtls and media.dtls.fingerprints:
            dtls = dtls or media.dtls
        candidates += [c for c in media.ice_candidates if c.component == 1 and c.protocol.lower() == "udp"
                       and c.type in ("host", "srflx") and _is_ip(c.ip)]
        pairs = {int(g.items[0]): int(g.items[1]) for g in media.ssrc_group if g.semantic == "FID" and len(g.items) > 1}
        fid = set(pairs.values())
        sections.append(RemoteSection(
            index=index,
            mid=mid,
            kind=media.kind,
            direction=media.direction or "sendrecv",
            rejected=media.port == 0,
            codecs=[Codec.from_parameters(c) for c in media.rtp.codecs],
            extensions={e.uri: e.id for e in media.rtp.headerExtensions},
            ssrcs=list(dict.fromkeys(s.ssrc for s in media.ssrc if s.ssrc not in fid)),
            msid=media.msid,
            sctp_port=media.sctp_port,
            max_message_size=media.sctpCapabilities.maxMessageSize if media.sctpCapabilities else None,
            rtx_ssrcs=pairs,
            rids=_send_rids(raw_sections[index] if index < len(raw_sections) else []),
        ))
    if not sections:
        raise SdpError("the SDP has no m-section")
    if ice is None or not ice.password:
        raise SdpError("the SDP has no a=ice-ufrag/a=ice-pwd")
    if dtls is None:
        raise SdpError("the SDP has no a=fingerprint")
    setup = _setup(text)
    candidates.sort(key=lambda c: c.priority, reverse=True)
    addresses = list(dict.fromkeys((c.ip, c.port) for c in candidates))  # BUNDLE repeats them per section
    return RemoteDescription(expected_type, ice.usernameFragment, ice.password, list(dtls.fingerprints), setup,
                             sections, addresses)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _raw_sections(text: str) -> list[list[str]]:
    """The attribute lines of each m-section (aiortc's parser keeps no a=rid or a=simulcast)."""
    sections: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("m="):
            sections.append([])
        elif sections and line.startswith("a="):
            sections[-1].append(line[2:].strip())
    return sections


def _send_rids(attributes: list[str]) -> list[str]:
    """The RIDs a section sends (RFC 8851/8853): a=simulcast's send list in its order, the first
    alternative of each entry, paused ones (~) included; a=rid send lines when a=simulcast is absent."""
    declared = [a[4:].split()[0] for a in attributes if a.startswith("rid:") and a[4:].split()[1:2] == ["send"]]
    for attribute in attributes:
        if attribute.startswith("simulcast:"):
            words = attribute[10:].split()
            if "send" in words[:-1]:
                entries = words[words.index("send") + 1].split(";")
                rids = [entry.split(",")[0].lstrip("~") for entry in entries]
                return [rid for rid in rids if rid in declared] or rids
    return declared


def _setup(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("a=setup:"):
            return line[8:].strip()
    return "actpass"


@dataclass
class LocalSection:
    """One m-section as the SFU writes it."""

    mid: str
    kind: str
    direction: str  # the SFU's own: recvonly (client pushes), sendonly (SFU sends), inactive
    codecs: list[Codec] = field(default_factory=list)
    extensions: dict[str, int] = field(default_factory=dict)
    ssrc: int | None = None
    cname: str | None = None
    msid: str | None = None
    rejected: bool = False
    sctp_port: int | None = None
    rtx_ssrc: int | None = None  # a pull's retransmission stream (a=ssrc-group:FID)
    rids: list[str] = field(default_factory=list)  # a push's simulcast layers, received


@dataclass
class LocalParameters:
    """What every m-section of one session repeats: ICE, DTLS and the candidates."""

    ufrag: str
    pwd: str
    fingerprint: RTCDtlsFingerprint
    setup: str  # actpass in offers, passive or active in answers
    candidates: list[tuple[str, int, str]]  # (address, port, "udp" | "tcp")
    session_id: int
    version: int
    lite: bool = True  # False in a session that controls ICE toward a third party


def write(kind: str, params: LocalParameters, sections: list[LocalSection]) -> dict[str, str]:
    """The `{"type", "sdp"}` object of the Calls API for an SFU description."""
    bundled = [s.mid for s in sections if not s.rejected]
    lines = [
        "v=0",
        f"o=- {params.session_id} {params.version} IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        *(["a=ice-lite"] if params.lite else []),
        *([f"a=group:BUNDLE {' '.join(bundled)}"] if bundled else []),
        "a=extmap-allow-mixed",
        "a=msid-semantic: WMS *",
    ]
    for section in sections:
        lines += _section(section, params)
    return {"type": kind, "sdp": "\r\n".join(lines) + "\r\n"}


def _section(section: LocalSection, params: LocalParameters) -> list[str]:
    port = 0 if section.rejected else 9
    if section.kind == "application":
        lines = [f"m=application {port} UDP/DTLS/SCTP webrtc-datachannel"]
    else:
        pts = " ".join(str(c.pt) for c in section.codecs) or "0"
        lines = [f"m={section.kind} {port} UDP/TLS/RTP/SAVPF {pts}"]
    lines += ["c=IN IP4 0.0.0.0"]
    if section.kind != "application":
        lines.append("a=rtcp:9 IN IP4 0.0.0.0")
    for number, (address, cport, transport) in enumerate(params.candidates, start=1):
        if transport == "udp":
            lines.append(f"a=candidate:{number} 1 udp {2130706431 - number} {address} {cport} typ host")
        else:
            lines.append(f"a=candidate:{number} 1 tcp {1518280447 - number} {address} {cport} typ host tcptype passive")
    lines += [
        "a=end-of-candidates",
        f"a=ice-ufrag:{params.ufrag}",
        f"a=ice-pwd:{params.pwd}",
        f"a=fingerprint:{params.fingerprint.algorithm} {params.fingerprint.value}",
        f"a=setup:{params.setup}",
        f"a=mid:{section.mid}",
    ]
    if section.kind == "application":
        return lines + [f"a=sctp-port:{section.sctp_port or 5000}", "a=max-message-size:262144"]
    if section.rejected:
        # Nothing more: a rejected section's stream ids would clash with the section that replaces it.
        return lines + ["a=inactive", "a=rtcp-mux", *[line for c in section.codecs[:1] for line in c.sdp_lines()]]
    lines += [f"a=extmap:{ext_id} {uri}" for uri, ext_id in section.extensions.items()]
    lines.append(f"a={section.direction}")
    if section.msid:
        lines.append(f"a=msid:{section.msid}")
    lines += ["a=rtcp-mux", "a=rtcp-rsize"]
    for codec in section.codecs:
        lines += codec.sdp_lines()
    if section.rids:
        lines += [f"a=rid:{rid} recv" for rid in section.rids]
        lines.append(f"a=simulcast:recv {';'.join(section.rids)}")
    if section.ssrc is not None:
        ssrcs = [section.ssrc] + ([section.rtx_ssrc] if section.rtx_ssrc is not None else [])
        if section.rtx_ssrc is not None:
            lines.append(f"a=ssrc-group:FID {section.ssrc} {section.rtx_ssrc}")
        for ssrc in ssrcs:
            lines.append(f"a=ssrc:{ssrc} cname:{section.cname}")
            if section.msid:
                lines.append(f"a=ssrc:{ssrc} msid:{section.msid}")
    return lines
