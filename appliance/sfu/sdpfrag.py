"""Trickle ICE SDP fragments (`application/trickle-ice-sdpfrag`, RFC 8840 9): what a WHIP or WHEP
client PATCHes to its resource (RFC 9725 4.3), and the fragment the box answers an ICE restart with.

A fragment carries the ICE credentials it applies to (or new ones, for a restart), the m-sections
its candidates belong to (by mid), the candidates, and a=end-of-candidates. The box is ICE-lite:
it learns a client's addresses from the checks that reach it, so trickled candidates are read only
to be checked, and a restart is what a fragment can change.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from aiortc.sdp import candidate_from_sdp

from .sdp import SdpError, candidate_values, media_line

# A browser trickles a handful of candidates at a time; a fragment is one PATCH body.
MAX_FRAGMENT_BYTES = 64 * 1024
MAX_CANDIDATES = 256
# RFC 8445 5.3: ufrag 4-256, pwd 22-256 ice-chars.
_ICE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/")


@dataclass
class Fragment:
    ufrag: str | None = None
    pwd: str | None = None
    mids: list[str] = field(default_factory=list)
    candidates: list[str] = field(default_factory=list)  # a=candidate values, as written
    end_of_candidates: bool = False


def _ice_value(name: str, value: str, least: int) -> str:
    if not least <= len(value) <= 256 or not set(value) <= _ICE_CHARS:
        raise SdpError(f"a={name}: expected {least} to 256 ICE characters, found {value[:40]!r}")
    return value


def _once(current: str | None, name: str, value: str, least: int) -> str:
    """An ICE credential line; written again (per m-section) it must say the same."""
    value = _ice_value(name, value, least)
    if current is not None and current != value:
        raise SdpError(f"a={name}: the fragment names two different values")
    return value


def parse(text: str) -> Fragment:
    """The fragment in `text`; SdpError names the line that is not one of RFC 8840's."""
    if len(text) > MAX_FRAGMENT_BYTES:
        raise SdpError(f"the fragment has {len(text)} characters; at most {MAX_FRAGMENT_BYTES} are accepted")
    fragment = Fragment()
    in_media = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        kind, _, value = line.partition("=")
        if kind == "m":
            parts = value.split()
            if len(parts) < 4 or not parts[1].isdigit():
                raise SdpError(f"line {number}: expected \"m=<media> <port> <proto> <fmt>\", found {line[:80]!r}")
            in_media = True
            continue
        if kind != "a":
            raise SdpError(f"line {number}: a fragment has only a= and m= lines, found {line[:80]!r}")
        name, _, argument = value.partition(":")
        if name == "ice-ufrag":
            fragment.ufrag = _once(fragment.ufrag, name, argument, 4)
        elif name == "ice-pwd":
            fragment.pwd = _once(fragment.pwd, name, argument, 22)
        elif name == "mid":
            if not in_media or not argument:
                raise SdpError(f"line {number}: a=mid belongs to an m= line and names it")
            fragment.mids.append(argument)
        elif name == "candidate":
            if len(fragment.candidates) >= MAX_CANDIDATES:
                raise SdpError(f"the fragment has more than {MAX_CANDIDATES} candidates")
            try:
                candidate_from_sdp(argument)
            except (AssertionError, ValueError, IndexError):  # aiortc asserts there are 8 fields
                raise SdpError(f"line {number}: not an ICE candidate: {line[:80]!r}") from None
            fragment.candidates.append(argument)
        elif name == "end-of-candidates" or not value:
            # Firefox ends a generation with an empty candidate, which clients writing "a=" + candidate
            # (medooze's whip.js) send as a bare "a=".
            fragment.end_of_candidates = True
        elif name not in ("ice-options", "ice-lite", "group"):
            raise SdpError(f"line {number}: a={name} has no place in a trickle ICE fragment")
    return fragment


def restart_answer(ufrag: str, pwd: str, mid: str, kind: str, candidates: list[tuple[str, int, str]]) -> str:
    """The fragment a restart is answered with (RFC 9725 4.3.2): the new credentials and the box's
    candidates, on the bundle's first m-section."""
    lines = [f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{pwd}", media_line(kind, 9), f"a=mid:{mid}"]
    lines += [f"a=candidate:{value}" for value in candidate_values(candidates)]
    lines.append("a=end-of-candidates")
    return "\r\n".join(lines) + "\r\n"
