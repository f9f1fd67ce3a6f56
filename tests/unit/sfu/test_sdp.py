"""What the SFU reads from and writes into SDP for sessions that control ICE (thirdparty)."""
from aiortc.rtcdtlstransport import RTCDtlsFingerprint

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
