"""Simulcast and RTX in SDP: what the SFU reads from a publisher's offer (a=rid, a=simulcast,
a=ssrc-group:FID; RFC 8851, 8853, 4588) and writes in its own sections."""
from aiortc.rtcdtlstransport import RTCDtlsFingerprint

from appliance.sfu import sdp
from appliance.sfu.codecs import Codec

from .harness import CHROME_SIMULCAST_OFFER, chrome_offer


def test_chrome_simulcast_offer_rids_in_simulcast_order():
    remote = sdp.parse(CHROME_SIMULCAST_OFFER, "offer")
    audio, video = remote.sections
    assert (audio.mid, audio.rids) == ("0", [])
    assert (video.mid, video.kind, video.direction) == ("1", "video", "sendonly")
    assert video.rids == ["f", "h", "q"]
    assert video.ssrcs == [] and video.rtx_ssrcs == {}
    assert video.extensions["urn:ietf:params:rtp-hdrext:sdes:mid"] == 4
    assert video.extensions["urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"] == 10
    assert video.extensions["urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"] == 11
    assert [(c.pt, c.name) for c in video.codecs][:2] == [(96, "VP8"), (97, "rtx")]
    assert audio.ssrcs == [3735928559]


def test_the_simulcast_order_not_the_rid_lines_order():
    remote = sdp.parse(chrome_offer("a=simulcast:send q;h;f"), "offer")
    assert remote.sections[1].rids == ["q", "h", "f"]


def test_alternatives_take_the_first_and_paused_layers_count():
    assert sdp.parse(chrome_offer("a=simulcast:send f,h;q"), "offer").sections[1].rids == ["f", "q"]
    assert sdp.parse(chrome_offer("a=simulcast:send f;h;~q"), "offer").sections[1].rids == ["f", "h", "q"]
    assert sdp.parse(chrome_offer("a=simulcast:send ~f,h;q"), "offer").sections[1].rids == ["f", "q"]


def test_a_simulcast_send_list_after_a_recv_list():
    remote = sdp.parse(chrome_offer("a=simulcast:recv r1 send f;h;q", rids=("f", "h", "q")), "offer")
    assert remote.sections[1].rids == ["f", "h", "q"]


def test_rid_lines_without_simulcast_and_receive_only_rids():
    assert sdp.parse(chrome_offer(None), "offer").sections[1].rids == ["f", "h", "q"]
    offer = chrome_offer(None).replace("a=rid:h send", "a=rid:h recv")
    assert sdp.parse(offer, "offer").sections[1].rids == ["f", "q"]
    assert sdp.parse(chrome_offer(None, rids=()), "offer").sections[1].rids == []


def test_rid_lines_with_restrictions():
    offer = chrome_offer().replace("a=rid:f send", "a=rid:f send pt=96;max-width=1280;max-height=720")
    assert sdp.parse(offer, "offer").sections[1].rids == ["f", "h", "q"]


def test_fid_groups_pair_media_and_rtx_ssrcs():
    lines = ["a=ssrc-group:FID 1111 2222", "a=ssrc:1111 cname:c", "a=ssrc:1111 msid:s t", "a=ssrc:2222 cname:c",
             "a=ssrc:2222 msid:s t"]
    remote = sdp.parse(chrome_offer(None, rids=(), ssrc_lines=lines), "offer")
    video = remote.sections[1]
    assert video.ssrcs == [1111] and video.rtx_ssrcs == {1111: 2222} and video.rids == []


def test_legacy_simulcast_with_sim_and_fid_groups():
    # Plan B style simulcast (SIM group) as some clients still send: three media SSRCs, each with RTX.
    lines = ["a=ssrc-group:SIM 1 2 3", "a=ssrc-group:FID 1 11", "a=ssrc-group:FID 2 12", "a=ssrc-group:FID 3 13"]
    lines += [f"a=ssrc:{s} cname:c" for s in (1, 11, 2, 12, 3, 13)]
    video = sdp.parse(chrome_offer(None, rids=(), ssrc_lines=lines), "offer").sections[1]
    assert video.ssrcs == [1, 2, 3] and video.rtx_ssrcs == {1: 11, 2: 12, 3: 13}


PARAMS = sdp.LocalParameters("ufrag", "pwd", RTCDtlsFingerprint("sha-256", ":".join(["CD"] * 32)), "passive",
                             [("192.0.2.1", 40000, "udp")], 1, 1)


def _section_lines(text, mid):
    sections, current = {}, None
    for line in text.split("\r\n"):
        if line.startswith("m="):
            current = []
        if current is not None:
            current.append(line)
            if line.startswith("a=mid:"):
                sections[line[6:]] = current
    return sections[mid]


def test_a_received_simulcast_section_writes_rid_recv_lines_and_simulcast_recv():
    section = sdp.LocalSection("1", "video", "recvonly", [Codec(96, "VP8", 90000), Codec(97, "rtx", 90000, None, "apt=96")],
                               {"urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id": 10}, rids=["f", "h", "q"])
    text = sdp.write("answer", PARAMS, [section])["sdp"]
    lines = _section_lines(text, "1")
    rid_lines = [line for line in lines if line.startswith(("a=rid:", "a=simulcast:"))]
    assert rid_lines == ["a=rid:f recv", "a=rid:h recv", "a=rid:q recv", "a=simulcast:recv f;h;q"]
    assert not any(line.startswith("a=ssrc") for line in lines)
    # The browser's parser (through aiortc's here) reads it back; a=rid recv are no send RIDs.
    back = sdp.parse(text, "answer").sections[0]
    assert back.rids == [] and back.extensions == {"urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id": 10}


def test_a_section_without_rids_writes_no_simulcast():
    text = sdp.write("answer", PARAMS, [sdp.LocalSection("0", "video", "recvonly")])["sdp"]
    assert "a=rid:" not in text and "a=simulcast" not in text


def test_a_pulled_section_with_rtx_writes_the_fid_group_and_both_ssrcs():
    section = sdp.LocalSection("2", "video", "sendonly", ssrc=0x11223344, cname="cn", msid="sess track",
                               rtx_ssrc=0x55667788)
    text = sdp.write("offer", PARAMS, [section])["sdp"]
    lines = _section_lines(text, "2")
    media, rtx = 0x11223344, 0x55667788
    assert [line for line in lines if line.startswith("a=ssrc")] == [
        f"a=ssrc-group:FID {media} {rtx}",
        f"a=ssrc:{media} cname:cn", f"a=ssrc:{media} msid:sess track",
        f"a=ssrc:{rtx} cname:cn", f"a=ssrc:{rtx} msid:sess track",
    ]
    back = sdp.parse(text, "offer").sections[0]
    assert back.ssrcs == [media] and back.rtx_ssrcs == {media: rtx}


def test_a_pulled_section_without_rtx_writes_one_ssrc_and_no_group():
    section = sdp.LocalSection("2", "video", "sendonly", ssrc=7, cname="cn", msid="sess track")
    lines = _section_lines(sdp.write("offer", PARAMS, [section])["sdp"], "2")
    assert [line for line in lines if line.startswith("a=ssrc")] == ["a=ssrc:7 cname:cn", "a=ssrc:7 msid:sess track"]
