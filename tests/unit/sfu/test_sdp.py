"""What the SFU reads from and writes into SDP for sessions that control ICE (thirdparty)."""
from aiortc.rtcdtlstransport import RTCDtlsFingerprint
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.sfu import sdp

REMOTE = "\r\n".join([
    "v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=ice-lite", "a=group:BUNDLE 0 1",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0",
    "a=candidate:1 1 udp 2130706431 192.0.2.5 3478 typ host",
    "a=candidate:2 1 udp 2130706430 2001:db8::5 3478 typ host",
    "a=candidate:3 1 udp 1694498815 198.51.100.5 40000 typ srflx raddr 0.0.0.0 rport 0",
    "a=candidate:4 1 udp 2130706432 abcd-1234.local 3478 typ host",
    "a=candidate:5 1 tcp 1518280447 192.0.2.5 443 typ host tcptype passive",
    "a=candidate:6 1 udp 16777215 203.0.113.5 50000 typ relay raddr 0.0.0.0 rport 0",
    "a=candidate:7 2 udp 2130706429 192.0.2.5 3479 typ host",
    "a=ice-ufrag:lite", "a=ice-pwd:lite-peer-password-22ch", "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
    "a=setup:passive", "a=mid:0", "a=sendonly", "a=rtcp-mux", "a=rtpmap:111 opus/48000/2",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 0.0.0.0",
    "a=candidate:1 1 udp 2130706431 192.0.2.5 3478 typ host",
    "a=ice-ufrag:lite", "a=ice-pwd:lite-peer-password-22ch", "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
    "a=setup:passive", "a=mid:1", "a=sendonly", "a=rtcp-mux", "a=rtpmap:111 opus/48000/2", "",
])


def test_the_udp_host_and_srflx_candidates_with_an_address_are_read_best_first_once():
    remote = sdp.parse(REMOTE, "answer")
    assert remote.candidates == [("192.0.2.5", 3478), ("2001:db8::5", 3478), ("198.51.100.5", 40000)]
    assert remote.setup == "passive"


def test_a_full_agent_writes_no_ice_lite():
    params = sdp.LocalParameters("ufrag", "pwd", RTCDtlsFingerprint("sha-256", ":".join(["CD"] * 32)), "actpass",
                                 [("192.0.2.1", 40000, "udp")], 1, 1)
    section = sdp.LocalSection("0", "audio", "sendrecv")
    assert "a=ice-lite" in sdp.write("offer", params, [section])["sdp"]
    params.lite = False
    offer = sdp.write("offer", params, [section])["sdp"]
    assert "a=ice-lite" not in offer and "a=setup:actpass" in offer


LINES = [line for line in REMOTE.split("\r\n") if line]
ATTRIBUTE_VALUES = st.sampled_from([
    "", " ", "x", "-1", "128", "72", "99999999999999999999999", "9" * 5000, "111 opus", "111 opus/x/2", "111 /",
    "111", "* nack", "111 nack pli", "FID 1", "FID a b", "1 urn:x", "a/b urn:x", "1 udp x 1.2.3.4 5 typ host",
    "send 1;2", "h send", "send h;~m,l", ":", "sha-256", "actpass", "bogus", "\x00", "é",
])
ATTRIBUTE_NAMES = st.sampled_from([
    "rtpmap", "fmtp", "rtcp-fb", "ssrc", "ssrc-group", "extmap", "candidate", "mid", "msid", "sctp-port",
    "max-message-size", "rid", "simulcast", "setup", "fingerprint", "ice-ufrag", "ice-pwd", "sendonly", "x",
])


@st.composite
def mutated_descriptions(draw) -> str:
    """The sample description with lines dropped, duplicated, cut or replaced by generated attributes and m= lines."""
    lines = list(LINES)
    for _ in range(draw(st.integers(0, 8))):
        at = draw(st.integers(0, len(lines)))
        action = draw(st.sampled_from(["attribute", "drop", "cut", "copy", "mline"]))
        if action == "attribute":
            lines.insert(at, f"a={draw(ATTRIBUTE_NAMES)}:{draw(ATTRIBUTE_VALUES)}")
        elif action == "mline":
            lines.insert(at, "m=" + draw(st.sampled_from(["audio 9 UDP/TLS/RTP/SAVPF 111", "video 0 X 96 97",
                                                          "application 9 UDP/DTLS/SCTP webrtc-datachannel",
                                                          "audio x RTP 1", "video 9 RTP/AVP 200", "audio"])))
        elif lines and at < len(lines):
            if action == "drop":
                del lines[at]
            elif action == "cut":
                lines[at] = lines[at][:draw(st.integers(0, len(lines[at])))]
            else:
                lines.insert(at, lines[at])
    return "\r\n".join(lines) + draw(st.sampled_from(["\r\n", "\n", ""]))


@settings(max_examples=500, deadline=None)
@given(text=mutated_descriptions(), kind=st.sampled_from(["offer", "answer"]))
def test_any_description_parses_or_is_an_sdp_error(text, kind):
    """The parser's only failure is SdpError (a 400 naming the problem), never another exception (a 500)."""
    try:
        remote = sdp.parse(text, kind)
    except sdp.SdpError as e:
        assert str(e)
        return
    assert remote.sections and remote.ufrag and remote.fingerprints
    assert len({s.mid for s in remote.sections}) == len(remote.sections)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_arbitrary_text_parses_or_is_an_sdp_error(text):
    for candidate in (text, "v=0\r\n" + text):
        try:
            sdp.parse(candidate, "offer")
        except sdp.SdpError:
            pass
