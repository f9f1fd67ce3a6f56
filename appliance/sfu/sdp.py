"""SDP for the SFU: what a client's description says, and the descriptions the SFU writes (an
ICE-lite, BUNDLE, rtcp-mux endpoint on the one media port; a full ICE agent in a session relaying
to a third party).

A client's description is read in one pass, each line once, after limits checked on counts that
cost a pass in C. aiortc's parser (whose line readers are reused) scans a section's codecs again
for each a=fmtp and a=rtcp-fb line and its SSRCs again for each a=ssrc line: 200 KB of such lines
held the event loop for 30 s.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from aiortc.rtcdtlstransport import RTCDtlsFingerprint
from aiortc.rtcicetransport import RTCIceCandidate
from aiortc.sdp import candidate_from_sdp, parameters_from_sdp

from .codecs import FEEDBACK, RETRANSMISSION_FEEDBACK, Codec

# Limits of a client's description. Cloudflare documents none (CALLS_API.md 4) and browsers have no
# fixed one; these are far beyond what a browser writes (about 1.2 KB per audio and 4.5 KB per
# video m-section in Chrome; at most 4 simulcast layers), and keep the largest accepted description
# to tens of milliseconds of work.
MAX_SDP_BYTES = 1 << 20
MAX_SECTIONS = 512  # also the m-sections of a session: every description of it lists them all
MAX_LAYERS = 8  # simulcast layers (RIDs) one m-section sends

# Feedback the SFU can take part in; every use of an offered codec's feedback narrows to these, so
# no other is kept (and a wildcard a=rtcp-fb:* line costs one entry per codec, not one per line).
_FEEDBACK = FEEDBACK | RETRANSMISSION_FEEDBACK
_DIRECTIONS = {"sendrecv", "sendonly", "recvonly", "inactive"}
_SETUPS = {"active", "passive", "actpass"}
_M_LINE = re.compile(r"m=([^ ]+) ([0-9]+) ([A-Z/]+) (.+)")


class SdpError(ValueError):
    """A description the SFU cannot use; the message says why, `code` is the Calls errorCode."""

    code = "invalid_session_description"


class SdpLimit(SdpError):
    """A description past one of the limits above."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


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

    def __post_init__(self) -> None:
        self._by_mid = {s.mid: s for s in self.sections}

    def section(self, mid: str) -> RemoteSection | None:
        return self._by_mid.get(mid)


def check_limits(text: str) -> None:
    """Refuse a description past MAX_SDP_BYTES or MAX_SECTIONS before reading it."""
    size = len(text) if text.isascii() else len(text.encode("utf-8", "replace"))
    if size > MAX_SDP_BYTES:
        raise SdpLimit("payload_too_large", f"the SDP has {size} bytes; at most {MAX_SDP_BYTES} bytes "
                                            f"(MAX_SDP_BYTES) are accepted")
    sections = text.count("\nm=")  # the lines parse() starts m-sections at
    if sections > MAX_SECTIONS:
        raise SdpLimit("invalid_params", f"the SDP has {sections} m-sections; at most {MAX_SECTIONS} "
                                         f"(MAX_SECTIONS) are accepted")


@dataclass
class _Transport:
    """What the session level or one m-section says of ICE and DTLS."""

    ufrag: str | None = None
    pwd: str | None = None
    fingerprints: list[RTCDtlsFingerprint] = field(default_factory=list)
    setup: str | None = None  # the first a=setup

    def read(self, name: str, value: str) -> bool:
        """Take the attribute if it is one of these; False when it is not."""
        if name == "ice-ufrag":
            self.ufrag = value
        elif name == "ice-pwd":
            self.pwd = value
        elif name == "fingerprint":
            words = value.split()
            if len(words) != 2:
                raise SdpError(f"a=fingerprint: expected <algorithm> <value>, found {value[:120]!r}")
            self.fingerprints.append(RTCDtlsFingerprint(algorithm=words[0], value=words[1]))
        elif name == "setup":
            if value.strip() not in _SETUPS:
                raise SdpError(f"a=setup: expected active, passive or actpass, found {value[:40]!r}")
            self.setup = self.setup or value.strip()
        else:
            return False
        return True


def parse(text: object, expected_type: str) -> RemoteDescription:
    """Read a client's description of `expected_type` ("offer" or "answer"), in time linear in its size."""
    if not isinstance(text, str) or not text.startswith("v="):
        raise SdpError("sessionDescription.sdp: expected SDP text starting with v=")
    check_limits(text)
    blocks: list[list[str]] = [[]]  # the session level, then each m-section's lines
    for line in text.split("\n"):
        if line.startswith("m="):
            blocks.append([])
        blocks[-1].append(line.rstrip("\r"))
    session = _Transport()
    for line in blocks[0]:
        if line.startswith("a="):
            name, _, value = line[2:].partition(":")
            session.read(name, value)
    sections: list[RemoteSection] = []
    by_mid: dict[str, RemoteSection] = {}
    ice = fingerprints = None
    setup = session.setup
    candidates: list[RTCIceCandidate] = []
    for index, lines in enumerate(blocks[1:]):
        section, transport = _read_section(index, lines, candidates)
        if section.mid in by_mid:
            raise SdpError(f"m-sections {by_mid[section.mid].index} and {index} both have a=mid:{section.mid[:40]}")
        by_mid[section.mid] = section
        sections.append(section)
        # Media-level ICE and DTLS attributes override the session level's; BUNDLE takes the first
        # section's (a section's fingerprints count once it or the session says a=setup).
        ufrag = transport.ufrag if transport.ufrag is not None else session.ufrag
        if ice is None and ufrag:
            ice = (ufrag, transport.pwd if transport.pwd is not None else session.pwd)
        if fingerprints is None and (transport.setup or session.setup) and (session.fingerprints
                                                                             or transport.fingerprints):
            fingerprints = session.fingerprints + transport.fingerprints
        setup = setup or transport.setup
    if not sections:
        raise SdpError("the SDP has no m-section")
    if ice is None or not ice[1]:
        raise SdpError("the SDP has no a=ice-ufrag/a=ice-pwd")
    if fingerprints is None:
        raise SdpError("the SDP has no a=fingerprint")
    candidates.sort(key=lambda c: c.priority, reverse=True)
    addresses = list(dict.fromkeys((c.ip, c.port) for c in candidates))  # BUNDLE repeats them per section
    return RemoteDescription(expected_type, ice[0], ice[1], fingerprints, setup or "actpass", sections, addresses)


def _read_section(index: int, lines: list[str], candidates: list[RTCIceCandidate]) -> tuple[RemoteSection, _Transport]:
    """One m-section from its lines, each read once; its UDP host and srflx candidates go to `candidates`."""
    match = _M_LINE.fullmatch(lines[0])
    if match is None:
        raise SdpError(f"m-section {index}: expected m=<media> <port> <proto> <formats>, found {lines[0][:120]!r}")
    kind, port = match[1], _int(match[2], "the m= line's port")
    if kind in ("audio", "video"):
        for pt in match[4].split():
            _pt(pt)
    transport = _Transport()
    mid = direction = msid = sctp_port = max_message_size = None
    bundle_only = False
    rtpmaps: dict[int, tuple[str, int, int | None]] = {}
    fmtps: dict[int, str] = {}
    feedback: dict[str, dict[str, int]] = {}  # payload type as written, or "*" -> feedback -> first line
    extensions: dict[str, int] = {}
    ssrcs: dict[int, None] = {}
    rtx_ssrcs: dict[int, int] = {}
    simulcast: list[str] = []  # the a=rid and a=simulcast attributes
    for number, line in enumerate(lines):
        if not line.startswith("a="):
            continue
        name, _, value = line[2:].partition(":")
        if name == "rtcp-fb":
            words = value.split(" ", 2)
            if len(words) < 2:
                raise SdpError(f"m-section {index}: a=rtcp-fb: expected <pt> <feedback>, found {value[:120]!r}")
            entry = words[1] + (f" {words[2]}" if len(words) > 2 and words[2] else "")
            if entry in _FEEDBACK:
                feedback.setdefault(words[0], {}).setdefault(entry, number)
        elif name == "rtpmap":
            pt, _, encoding = value.partition(" ")
            parts = encoding.split("/")
            if len(parts) < 2:
                raise SdpError(f"m-section {index}: a=rtpmap: expected <pt> <name>/<clock>, found {value[:120]!r}")
            channels = (_int(parts[2], "a=rtpmap's channels") if len(parts) > 2 else 1) if kind == "audio" else None
            rtpmaps.setdefault(_pt(pt), (parts[0], _int(parts[1], "a=rtpmap's clock rate"), channels))
        elif name == "fmtp":
            pt, _, parameters = value.partition(" ")
            fmtps[_pt(pt)] = parameters
        elif name == "ssrc":
            ssrcs[_int(value.partition(" ")[0], "a=ssrc")] = None
        elif name == "ssrc-group":
            words = value.split()
            if words[:1] == ["FID"] and len(words) > 2:
                rtx_ssrcs[_int(words[1], "a=ssrc-group")] = _int(words[2], "a=ssrc-group")
        elif name == "extmap":
            words = value.split()
            if len(words) < 2:
                raise SdpError(f"m-section {index}: a=extmap: expected <id> <uri>, found {value[:120]!r}")
            extensions[words[1]] = _int(words[0].partition("/")[0], "a=extmap's id")
        elif name == "candidate":
            try:
                candidate = candidate_from_sdp(value)
            except (AssertionError, ValueError, IndexError):
                raise SdpError(f"m-section {index}: a=candidate does not parse: {value[:120]!r}") from None
            if (candidate.component == 1 and candidate.protocol.lower() == "udp"
                    and candidate.type in ("host", "srflx") and _is_ip(candidate.ip)):
                candidates.append(candidate)
        elif name == "mid":
            mid = value
        elif name == "bundle-only":
            bundle_only = True
        elif name == "msid":
            msid = value
        elif name in _DIRECTIONS:
            direction = name
        elif name == "sctp-port":
            sctp_port = _int(value, "a=sctp-port")
        elif name == "max-message-size":
            max_message_size = _int(value, "a=max-message-size")
        elif name in ("rid", "simulcast"):
            simulcast.append(line[2:].strip())
        else:
            transport.read(name, value)
    if not mid:
        raise SdpError(f"m-section {index} has no a=mid (BUNDLE needs one on every m-section)")
    rids = _send_rids(simulcast)
    if len(rids) > MAX_LAYERS:
        raise SdpLimit("invalid_params", f"m-section {mid[:40]} sends {len(rids)} simulcast layers; at most "
                                         f"{MAX_LAYERS} (MAX_LAYERS) are accepted")
    wildcard = feedback.get("*", {})
    codecs = []
    for pt, (encoding, clock, channels) in rtpmaps.items():
        first = dict(wildcard)  # each feedback at its first line, as the lines order them
        for entry, number in feedback.get(str(pt), {}).items():
            first[entry] = min(number, first.get(entry, number))
        codecs.append(Codec(pt, encoding, clock, channels, _fmtp(fmtps.get(pt)), sorted(first, key=first.__getitem__)))
    fid = set(rtx_ssrcs.values())
    return RemoteSection(
        index=index,
        mid=mid,
        kind=kind,
        direction=direction or "sendrecv",
        # RFC 8843 6: port 0 with a=bundle-only is a section offered inside the BUNDLE group (Firefox's
        # max-bundle offers), not a rejected one.
        rejected=port == 0 and not bundle_only,
        codecs=codecs,
        extensions=extensions,
        ssrcs=[ssrc for ssrc in ssrcs if ssrc not in fid],
        msid=msid,
        sctp_port=sctp_port,
        max_message_size=max_message_size,
        rtx_ssrcs=rtx_ssrcs,
        rids=rids,
    ), transport


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:  # also past Python's 4,300 digits
        raise SdpError(f"{what}: expected a number, found {text[:40]!r}") from None


def _pt(text: str) -> int:
    """An RTP payload type: 7 bits, not one of the RTCP packet types (RFC 5761)."""
    pt = _int(text, "payload type")
    if not 0 <= pt <= 127 or 72 <= pt <= 76:
        raise SdpError(f"payload type {pt}: expected 0-71 or 77-127")
    return pt


def _fmtp(parameters: str | None) -> str:
    """a=fmtp's parameters as aiortc normalizes them (numbers of its known keys as numbers)."""
    if parameters is None:
        return ""
    try:
        parsed = parameters_from_sdp(parameters)
    except ValueError:
        raise SdpError(f"a=fmtp does not parse: {parameters[:120]!r}") from None
    return ";".join(k if v is None else f"{k}={v}" for k, v in parsed.items())


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _send_rids(attributes: list[str]) -> list[str]:
    """The RIDs a section sends (RFC 8851/8853): a=simulcast's send list in its order, the first
    alternative of each entry, paused ones (~) included; a=rid send lines when a=simulcast is absent."""
    declared = [words[0] for words in (a[4:].split() for a in attributes if a.startswith("rid:"))
                if words[1:2] == ["send"]]
    for attribute in attributes:
        if attribute.startswith("simulcast:"):
            words = attribute[10:].split()
            if "send" in words[:-1]:
                entries = words[words.index("send") + 1].split(";")
                rids = [entry.split(",")[0].lstrip("~") for entry in entries]
                known = set(declared)
                return [rid for rid in rids if rid in known] or rids
    return declared


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


def candidate_values(candidates: list[tuple[str, int, str]]) -> list[str]:
    """The a=candidate values of the box's host candidates, (address, port, "udp" | "tcp") each."""
    values = []
    for number, (address, port, transport) in enumerate(candidates, start=1):
        if transport == "udp":
            values.append(f"{number} 1 udp {2130706431 - number} {address} {port} typ host")
        else:
            values.append(f"{number} 1 tcp {1518280447 - number} {address} {port} typ host tcptype passive")
    return values


def media_line(kind: str, port: int, pts: str = "0") -> str:
    if kind == "application":
        return f"m=application {port} UDP/DTLS/SCTP webrtc-datachannel"
    return f"m={kind} {port} UDP/TLS/RTP/SAVPF {pts}"


def _section(section: LocalSection, params: LocalParameters) -> list[str]:
    pts = " ".join(str(c.pt) for c in section.codecs) or "0"
    lines = [media_line(section.kind, 0 if section.rejected else 9, pts), "c=IN IP4 0.0.0.0"]
    if section.kind != "application":
        lines.append("a=rtcp:9 IN IP4 0.0.0.0")
    lines += [f"a=candidate:{value}" for value in candidate_values(params.candidates)]
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
