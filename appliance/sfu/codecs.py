"""The codecs and RTP header extensions the SFU forwards, and how offers are narrowed to them.

The SFU never decodes (ARCHITECTURE principle 2), so any codec both sides agree on works; these
are the ones Cloudflare Calls documents, plus RTX (RFC 4588) for retransmissions; FEC formats
(red, ulpfec) are left out: the box repairs losses with its retransmission cache instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ItemError

SUPPORTED = {"audio": {"opus", "pcmu", "pcma"}, "video": {"vp8", "vp9", "h264", "av1"}}
# Feedback the SFU takes part in: keyframe requests (it turns a subscriber's into PLI toward the
# publisher), transport-wide congestion control both ways and, with retransmissions on, generic
# NACK both ways.
FEEDBACK = {"nack pli", "ccm fir", "transport-cc"}
RETRANSMISSION_FEEDBACK = {"nack"}
# Extensions the SFU takes on pushed media: mid, rid and repaired-rid name simulcast and RTX
# streams; extensions.py says which it forwards to subscribers.
EXTENSIONS = {
    "urn:ietf:params:rtp-hdrext:sdes:mid",
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
    "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "urn:3gpp:video-orientation",
    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
}


@dataclass
class Codec:
    pt: int
    name: str  # as written in a=rtpmap, e.g. "VP8"
    clock: int
    channels: int | None = None
    fmtp: str = ""
    feedback: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple:
        """What makes two codec lines the same codec: a subscriber's payload type is chosen per key."""
        return (self.name.lower(), self.clock, self.channels or 1, self.fmtp)

    def with_pt(self, pt: int) -> Codec:
        return Codec(pt, self.name, self.clock, self.channels, self.fmtp, list(self.feedback))

    def with_feedback(self, wanted: set[str]) -> Codec:
        """The same codec line with only the feedback in `wanted`."""
        return Codec(self.pt, self.name, self.clock, self.channels, self.fmtp,
                     [fb for fb in self.feedback if fb in wanted])

    def sdp_lines(self) -> list[str]:
        rtpmap = f"{self.name}/{self.clock}" + (f"/{self.channels}" if self.channels and self.channels > 1 else "")
        lines = [f"a=rtpmap:{self.pt} {rtpmap}"]
        lines += [f"a=rtcp-fb:{self.pt} {fb}" for fb in self.feedback]
        if self.fmtp:
            lines.append(f"a=fmtp:{self.pt} {self.fmtp}")
        return lines


VIDEO_FEEDBACK = ["nack", "nack pli", "ccm fir", "transport-cc"]
# What the SFU offers when it asks a client to send (a push without an offer): libwebrtc's usual lines.
OFFERED = {
    "audio": [Codec(111, "opus", 48000, 2, "minptime=10;useinbandfec=1", ["transport-cc"]), Codec(0, "PCMU", 8000),
              Codec(8, "PCMA", 8000)],
    "video": [Codec(96, "VP8", 90000, None, "", VIDEO_FEEDBACK),
              Codec(98, "VP9", 90000, None, "profile-id=0", VIDEO_FEEDBACK),
              Codec(102, "H264", 90000, None, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
                    VIDEO_FEEDBACK),
              Codec(45, "AV1", 90000, None, "", VIDEO_FEEDBACK)],
}


def _fmtp(codec: Codec) -> dict[str, str]:
    return dict(part.partition("=")[::2] for part in codec.fmtp.split(";") if part)


def match_key(codec: Codec) -> tuple:
    """What a receiver must have negotiated to decode what a sender of `codec` sends: the same
    codec, and for H.264 the same packetization mode and profile (the level may differ)."""
    name = codec.name.lower()
    if name != "h264":
        return name, codec.clock, codec.channels or 1
    fmtp = _fmtp(codec)
    return (name, codec.clock, codec.channels or 1, fmtp.get("packetization-mode", "0"),
            fmtp.get("profile-level-id", "42001f")[:4].lower())


def match(sent: list[Codec], offered: list[Codec]) -> tuple[dict[int, int], list[Codec]]:
    """Which of a receiver's `offered` codecs take each of the `sent` ones: the sender's payload
    type -> the receiver's (its last match), and every offered codec that matches one, in the
    sender's order. One pass over each list, however long both are."""
    by_key: dict[tuple, list[Codec]] = {}
    for codec in offered:
        by_key.setdefault(match_key(codec), []).append(codec)
    pt_map: dict[int, int] = {}
    taken: dict[int, Codec] = {}
    done: set[tuple] = set()
    for codec in sent:
        key = match_key(codec)
        found = by_key.get(key)
        if found:
            pt_map[codec.pt] = found[-1].pt
            if key not in done:
                done.add(key)
                for theirs in found:
                    taken.setdefault(theirs.pt, theirs)
    return pt_map, list(taken.values())


def feedback(retransmissions: bool) -> set[str]:
    return FEEDBACK | RETRANSMISSION_FEEDBACK if retransmissions else FEEDBACK


# Format parameters that say what the writer of a description prefers to receive, which the SFU
# does not echo back to a publisher: Opus's stereo (RFC 7587 7.1). Firefox offers stereo=1 (it can
# play stereo); answered back, it asks the publisher to encode stereo, which libwebrtc's Opus does
# at 64 kbit/s instead of 32 for a mono microphone. Browsers' own answers leave it out.
RECEIVER_PREFERENCES = {"opus": {"stereo"}}


def accept(kind: str, offered: list[Codec], retransmissions: bool = False) -> list[Codec]:
    """The offered codecs the SFU takes for a pushed track, in the offer's order, with only
    the feedback it answers and none of the offerer's RECEIVER_PREFERENCES."""
    names = SUPPORTED.get(kind, set())
    wanted = feedback(retransmissions)
    return [
        _without_receiver_preferences(c.with_feedback(wanted))
        for c in offered
        if c.name.lower() in names
    ]


def _without_receiver_preferences(codec: Codec) -> Codec:
    dropped = RECEIVER_PREFERENCES.get(codec.name.lower())
    if not dropped:
        return codec
    fmtp = ";".join(p for p in codec.fmtp.split(";") if p and p.partition("=")[0] not in dropped)
    return Codec(codec.pt, codec.name, codec.clock, codec.channels, fmtp, codec.feedback)


def subscriber_feedback(codec: Codec) -> set[str]:
    """The feedback the SFU takes from a subscriber for `codec`: keyframe requests and NACK (even
    with the cache off, which then leaves them unanswered) on video, transport-wide congestion
    control on both kinds."""
    if codec.name.lower() in SUPPORTED["video"]:
        return feedback(True)
    return {"transport-cc"} if codec.name.lower() in SUPPORTED["audio"] else set()


def apt(codec: Codec) -> int | None:
    """The payload type an RTX format repairs (its fmtp apt=), None for any other codec."""
    if codec.name.lower() != "rtx":
        return None
    value = _fmtp(codec).get("apt", "")
    return int(value) if value.isdigit() else None


def rtx_pairs(codecs: list[Codec]) -> dict[int, int]:
    """RTX payload type -> the payload type it repairs, for the RTX formats among `codecs`."""
    return {codec.pt: repaired for codec in codecs if (repaired := apt(codec)) is not None}


def accept_rtx(offered: list[Codec], accepted: list[Codec]) -> list[Codec]:
    """The offered RTX formats that repair one of the `accepted` codecs."""
    pts = {c.pt for c in accepted}
    return [Codec(c.pt, c.name, c.clock, None, c.fmtp) for c in offered if apt(c) in pts]


def rtx_for(codec: Codec) -> Codec:
    """An RTX format for `codec` (its payload type is assigned per session)."""
    return Codec(codec.pt, "rtx", codec.clock, None, f"apt={codec.pt}")


def accept_extensions(offered: dict[str, int]) -> dict[str, int]:
    return {uri: ext_id for uri, ext_id in offered.items() if uri in EXTENSIONS}


class PayloadTypes:
    """A session's payload-type numbers for what the SFU sends: one per codec key, the same
    across all of the session's m-sections (BUNDLE shares the number space)."""

    # The dynamic range first, then the lower one Chrome also uses (35-63, RFC 8829 5.1.4's "any
    # number not statically assigned"): a video track with every browser codec and its RTX needs
    # more than the 32 numbers of 96-127.
    NUMBERS = (*range(96, 128), *range(35, 64))

    def __init__(self) -> None:
        self._by_key: dict[tuple, int] = {}
        self._used: set[int] = set()  # _by_key's values, kept: offers can reserve thousands of keys

    def reserve(self, codecs: list[Codec]) -> None:
        """Numbers the client already uses in its own sections stay theirs."""
        for codec in codecs:
            self._used.add(self._by_key.setdefault(codec.key, codec.pt))

    def assign(self, codec: Codec) -> Codec:
        pt = self._by_key.get(codec.key)
        if pt is None:
            used = self._used
            pt = next((n for n in self.NUMBERS if n not in used), None)
            if pt is None:
                raise ItemError("invalid_params", "no free payload type left in this session: it carries more "
                                                  f"than {len(self.NUMBERS)} distinct codecs")
            self._by_key[codec.key] = pt
            used.add(pt)
        return codec.with_pt(pt)
