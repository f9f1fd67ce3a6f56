"""Trickle ICE fragments (appliance/sfu/sdpfrag.py): what WHIP and WHEP clients PATCH, as browsers
and medooze's whip.js write them, the box's answer to an ICE restart read back, and arbitrary or
mangled text refused with SdpError only (a 400, never a 500)."""
from __future__ import annotations

import string

import pytest
from aiortc.sdp import candidate_from_sdp
from hypothesis import example, given, settings
from hypothesis import strategies as st

from appliance.sfu import sdp, sdpfrag

ICE_CHARS = string.ascii_letters + string.digits + "+/"
TOKEN_CHARS = string.ascii_letters + string.digits + "!#$%&'*+-.^_`{|}~"

# Chrome's candidates as whip.js PATCHes them ("a=" + candidate.candidate, only the first m-line's),
# its first batch and then the end (Chrome ends gathering with a null candidate only).
CHROME = (
    "a=ice-ufrag:EsAw\r\n"
    "a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n"
    "a=mid:0\r\n"
    "a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n"
    "a=candidate:3471623853 1 udp 2122194687 2001:db8::1 61765 typ host generation 0 ufrag EsAw network-id 2\r\n"
    "a=candidate:2376167283 1 udp 2113937151 4f0bbb52-b7d7-4cf4-8f2b-16b8b5b0c0aa.local 54400 typ host "
    "generation 0 ufrag EsAw network-cost 999\r\n"
    "a=candidate:473322822 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active generation 0 ufrag EsAw "
    "network-id 1\r\n"
    "a=candidate:842163049 1 udp 1686052607 198.51.100.7 61764 typ srflx raddr 192.0.2.1 rport 61764 "
    "generation 0 ufrag EsAw network-id 1\r\n"
    "a=end-of-candidates\r\n"
)
# The same client in Firefox: hex credentials, and the empty candidate Firefox (68 and later) gives as
# a generation's end-of-candidates, which whip.js writes as a bare "a=" before its own end line.
FIREFOX = (
    "a=ice-ufrag:9b4c1a2f\r\n"
    "a=ice-pwd:4a1d6f5e3c2b1a09f8e7d6c5b4a39281\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 0\r\n"
    "a=mid:0\r\n"
    "a=candidate:0 1 UDP 2122252543 192.0.2.5 52345 typ host\r\n"
    "a=candidate:2 1 TCP 2105524479 192.0.2.5 9 typ host tcptype active\r\n"
    "a=candidate:1 1 UDP 1686052863 198.51.100.9 52345 typ srflx raddr 192.0.2.5 rport 52345\r\n"
    "a=\r\n"
    "a=end-of-candidates\r\n"
)
# RFC 8840 9's shape (and what other WHIP clients send): a=ice-options:trickle and the bundle first,
# credentials inside each m-section, one end line per section, LF line ends.
RFC_8840 = (
    "a=ice-options:trickle\n"
    "a=group:BUNDLE 0 1\n"
    "m=audio 9 RTP/AVP 0\n"
    "a=ice-ufrag:EsAw\n"
    "a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\n"
    "a=mid:0\n"
    "a=candidate:1 1 UDP 1658497328 198.51.100.33 5000 typ host\n"
    "a=candidate:2 1 UDP 1658497328 192.0.2.33 5000 typ srflx raddr 198.51.100.33 rport 5000\n"
    "a=end-of-candidates\n"
    "m=video 9 RTP/AVP 31\n"
    "a=ice-ufrag:EsAw\n"
    "a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\n"
    "a=mid:1\n"
    "a=end-of-candidates\n"
)
# whip.js's restart PATCH (If-Match: *): the new credentials, candidates only if some came already.
WHIP_JS_RESTART = "a=ice-ufrag:rT9q\r\na=ice-pwd:Zk2b7yQm0c8v1XwP4s6nHt3L\r\n"


def test_a_chrome_fragment_parses():
    fragment = sdpfrag.parse(CHROME)
    assert (fragment.ufrag, fragment.pwd, fragment.mids) == ("EsAw", "P2uYro0UCOQ4zxjKXaWCBui1", ["0"])
    assert [candidate_from_sdp(c).ip for c in fragment.candidates] == [
        "192.0.2.1", "2001:db8::1", "4f0bbb52-b7d7-4cf4-8f2b-16b8b5b0c0aa.local", "192.0.2.1", "198.51.100.7"]
    assert fragment.end_of_candidates


def test_a_firefox_fragment_with_its_empty_end_of_candidates_parses():
    fragment = sdpfrag.parse(FIREFOX)
    assert (fragment.ufrag, fragment.pwd, fragment.mids) == ("9b4c1a2f", "4a1d6f5e3c2b1a09f8e7d6c5b4a39281", ["0"])
    assert [candidate_from_sdp(c).type for c in fragment.candidates] == ["host", "host", "srflx"]
    assert fragment.end_of_candidates
    # The bare "a=" alone says the same as a=end-of-candidates.
    assert sdpfrag.parse(FIREFOX.replace("a=end-of-candidates\r\n", "")).end_of_candidates


def test_a_fragment_with_ice_options_first_and_two_sections_parses():
    fragment = sdpfrag.parse(RFC_8840)
    assert (fragment.ufrag, fragment.pwd, fragment.mids) == ("EsAw", "P2uYro0UCOQ4zxjKXaWCBui1", ["0", "1"])
    assert len(fragment.candidates) == 2 and fragment.end_of_candidates


def test_a_restart_fragment_has_credentials_and_nothing_else():
    fragment = sdpfrag.parse(WHIP_JS_RESTART)
    assert (fragment.ufrag, fragment.pwd) == ("rT9q", "Zk2b7yQm0c8v1XwP4s6nHt3L")
    assert fragment.mids == [] and fragment.candidates == [] and not fragment.end_of_candidates


def test_a_candidates_only_fragment_names_no_credentials():
    fragment = sdpfrag.parse("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
                             "a=candidate:1 1 udp 2122260223 192.0.2.1 61764 typ host\r\n")
    assert fragment.ufrag is None and fragment.pwd is None and len(fragment.candidates) == 1
    assert not fragment.end_of_candidates


def test_a_mid_outside_an_m_line_is_refused():
    with pytest.raises(sdp.SdpError, match="line 3: a=mid belongs to an m= line"):
        sdpfrag.parse("a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\na=mid:0\r\n")
    with pytest.raises(sdp.SdpError, match="a=mid belongs to an m= line and names it"):
        sdpfrag.parse("m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:\r\n")


def test_two_different_ufrags_or_pwds_are_refused():
    # (The same credentials in every m-section are fine: RFC_8840 above.)
    with pytest.raises(sdp.SdpError, match="a=ice-ufrag: the fragment names two different values"):
        sdpfrag.parse(CHROME + "a=ice-ufrag:Other\r\n")
    with pytest.raises(sdp.SdpError, match="a=ice-pwd: the fragment names two different values"):
        sdpfrag.parse(CHROME + "a=ice-pwd:anotherPassword22chars/+\r\n")


@pytest.mark.parametrize("line, why", [
    ("a=ice-ufrag:abc", "a=ice-ufrag: expected 4 to 256"),
    ("a=ice-ufrag:ab-cd", "a=ice-ufrag: expected 4 to 256"),
    ("a=ice-ufrag:" + "u" * 257, "a=ice-ufrag: expected 4 to 256"),
    ("a=ice-pwd:" + "p" * 21, "a=ice-pwd: expected 22 to 256"),
    ("a=candidate:1 1 udp 2122260223 192.0.2.1", "line 1: not an ICE candidate"),
    ("a=candidate:1 1 udp high 192.0.2.1 61764 typ host", "line 1: not an ICE candidate"),
    ("a=candidate:", "line 1: not an ICE candidate"),
    ("m=audio 9", "line 1: expected \"m=<media> <port> <proto> <fmt>\""),
    ("m=audio x UDP/TLS/RTP/SAVPF 0", "line 1: expected \"m=<media> <port> <proto> <fmt>\""),
    ("v=0", "line 1: a fragment has only a= and m= lines"),
    ("a=fingerprint:sha-256 00", "line 1: a=fingerprint has no place in a trickle ICE fragment"),
])
def test_what_has_no_place_in_a_fragment_is_refused_with_its_line(line, why):
    with pytest.raises(sdp.SdpError, match=why):
        sdpfrag.parse(line + "\r\n")


def test_a_fragment_up_to_the_size_limit_parses_and_a_longer_one_is_refused():
    filler = "a=ice-options:trickle\r\n"
    text = CHROME + filler * ((sdpfrag.MAX_FRAGMENT_BYTES - len(CHROME)) // len(filler))
    text += " " * (sdpfrag.MAX_FRAGMENT_BYTES - len(text))
    assert len(text) == sdpfrag.MAX_FRAGMENT_BYTES
    assert sdpfrag.parse(text).ufrag == "EsAw"
    with pytest.raises(sdp.SdpError, match=f"at most {sdpfrag.MAX_FRAGMENT_BYTES} are accepted"):
        sdpfrag.parse(text + " ")


def test_up_to_the_candidate_limit_parses_and_one_more_is_refused():
    lines = ["m=audio 9 UDP/TLS/RTP/SAVPF 0", "a=mid:0"] + [
        f"a=candidate:{n} 1 udp {2122260223 - n} 192.0.2.1 {1024 + n} typ host" for n in range(sdpfrag.MAX_CANDIDATES)]
    assert len(sdpfrag.parse("\r\n".join(lines)).candidates) == sdpfrag.MAX_CANDIDATES
    lines.append("a=candidate:0 1 udp 1 192.0.2.2 9 typ host")
    with pytest.raises(sdp.SdpError, match=f"more than {sdpfrag.MAX_CANDIDATES} candidates"):
        sdpfrag.parse("\r\n".join(lines))


# --- the box's answer to a restart, read back ---------------------------------------------------------

HOST_CANDIDATES = st.lists(st.tuples(st.ip_addresses().map(str), st.integers(1, 65535), st.sampled_from(["udp", "tcp"])),
                           max_size=12)


@settings(max_examples=300, deadline=None)
@given(ufrag=st.text(ICE_CHARS, min_size=4, max_size=256), pwd=st.text(ICE_CHARS, min_size=22, max_size=256),
       mid=st.text(TOKEN_CHARS, min_size=1, max_size=32), kind=st.sampled_from(["audio", "video", "application"]),
       candidates=HOST_CANDIDATES)
def test_a_restart_answer_reads_back_as_what_it_says(ufrag, pwd, mid, kind, candidates):
    fragment = sdpfrag.parse(sdpfrag.restart_answer(ufrag, pwd, mid, kind, candidates))
    assert (fragment.ufrag, fragment.pwd, fragment.mids) == (ufrag, pwd, [mid])
    read = [candidate_from_sdp(value) for value in fragment.candidates]
    assert [(c.ip, c.port, c.protocol, c.type) for c in read] == [(a, p, t, "host") for a, p, t in candidates]
    assert fragment.end_of_candidates


# --- anything else: SdpError or a fragment, never another exception -----------------------------------

REAL_LINES = [line for text in (CHROME, FIREFOX, RFC_8840) for line in text.splitlines() if line]
ATTRIBUTE_NAMES = st.sampled_from(["ice-ufrag", "ice-pwd", "mid", "candidate", "end-of-candidates", "ice-options",
                                   "group", "ice-lite", "fingerprint", "", "x"])
ATTRIBUTE_VALUES = st.sampled_from([
    "", " ", ":", "EsAw", "abc", "P2uYro0UCOQ4zxjKXaWCBui1", "u" * 300, "0", "1 1 udp", "1 1 udp 1 192.0.2.1 x typ host",
    "1 1 udp 1 192.0.2.1 9 typ host raddr", "1 1 udp 1 192.0.2.1 9 typ host rport x", "9" * 5000,
    "1 x udp 1 192.0.2.1 9 typ host", "\x00", "é", "٣", "trickle",
])


@st.composite
def mutated_fragments(draw) -> str:
    """Real fragments' lines, shuffled and mutated: dropped, cut, copied, replaced by generated
    attributes, m= lines and characters."""
    lines = draw(st.lists(st.sampled_from(REAL_LINES), max_size=20))
    for _ in range(draw(st.integers(0, 8))):
        at = draw(st.integers(0, len(lines)))
        action = draw(st.sampled_from(["attribute", "mline", "text", "drop", "cut", "copy"]))
        if action == "attribute":
            lines.insert(at, f"a={draw(ATTRIBUTE_NAMES)}:{draw(ATTRIBUTE_VALUES)}")
        elif action == "mline":
            lines.insert(at, "m=" + draw(st.sampled_from(["audio 9 UDP/TLS/RTP/SAVPF 0", "video 9", "audio x a b",
                                                          "application 9 UDP/DTLS/SCTP webrtc-datachannel", "",
                                                          "audio ٣ a b"])))
        elif action == "text":
            lines.insert(at, draw(st.text(max_size=40)))
        elif lines and at < len(lines):
            if action == "drop":
                del lines[at]
            elif action == "cut":
                lines[at] = lines[at][:draw(st.integers(0, len(lines[at])))]
            else:
                lines.insert(at, lines[at])
    return draw(st.sampled_from(["\r\n", "\n", "\r"])).join(lines)


def parses_or_is_an_sdp_error(text: str) -> None:
    try:
        fragment = sdpfrag.parse(text)
    except sdp.SdpError as e:
        assert str(e)
        return
    for credential, least in ((fragment.ufrag, 4), (fragment.pwd, 22)):
        assert credential is None or (least <= len(credential) <= 256 and set(credential) <= set(ICE_CHARS))
    assert len(fragment.candidates) <= sdpfrag.MAX_CANDIDATES and all(fragment.mids)


@settings(max_examples=1000, deadline=None)
@given(text=mutated_fragments())
@example(text="a=candidate:foo")  # too few fields: aiortc asserts
@example(text="a=candidate:")
def test_a_mangled_fragment_parses_or_is_an_sdp_error(text):
    parses_or_is_an_sdp_error(text)


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=300), prefix=st.sampled_from(["", "a=", "a=candidate:", "m=", "a=ice-ufrag:", "a=mid:"]))
def test_arbitrary_text_parses_or_is_an_sdp_error(text, prefix):
    parses_or_is_an_sdp_error(prefix + text)
