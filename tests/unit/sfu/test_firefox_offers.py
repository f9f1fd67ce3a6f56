"""What Firefox offers differently: with max-bundle its second and later m-sections come as
`m=... 0 ...` with a=bundle-only inside the BUNDLE group (RFC 8843 6, JSEP 5.2.1), which are
accepted, not rejected; a requested track whose m-section cannot carry it gets an error entry;
Opus with stereo=1; simulcast with directions on the rid extensions and an a=ssrc line per layer."""
import re

from .harness import RTX_SSRCS, SSRCS, Lab, audio, labels, video


def bundle_only(offer: str) -> str:
    """The offer as Firefox writes it with max-bundle: every m-section after the first on port 0, bundle-only."""
    head, first, *rest = re.split(r"(?=\r\nm=)", offer)
    rest = [re.sub(r"^\r\nm=(\w+) 9 ", r"\r\nm=\1 0 ", s).replace("\r\na=mid:", "\r\na=bundle-only\r\na=mid:", 1)
            for s in rest]
    return "".join([head, first, *rest])


def test_bundle_only_sections_are_accepted_and_answered_bundled():
    lab = Lab()
    pub = lab.endpoint("pub")
    pub.push(audio("mic"))  # negotiates the session; the next offer adds video the Firefox way
    offer = bundle_only(pub.offer_with(video("cam")))
    assert "m=video 0 " in offer and "a=bundle-only" in offer
    answer, results = lab.sfu.push(pub.session, offer, [{"location": "local", "mid": "1", "trackName": "cam"}],
                                   False, lab.now)
    assert results == [{"trackName": "cam", "mid": "1", "kind": "video"}]
    video_line = next(line for line in answer["sdp"].split("\r\n") if line.startswith("m=video"))
    assert video_line.split()[1] == "9"  # bundled, not rejected
    assert "a=group:BUNDLE 0 1" in answer["sdp"]


def test_a_requested_track_on_a_section_that_does_not_send_gets_an_error_entry():
    lab = Lab()
    pub = lab.endpoint("pub")
    offer = pub.offer_with(audio("mic"), video("cam"))
    offer = offer.replace("a=sendonly\r\na=msid", "a=recvonly\r\na=msid", 1)  # the first one: mic
    items = [{"location": "local", "mid": "0", "trackName": "mic"}, {"location": "local", "mid": "1", "trackName": "cam"}]
    _, results = lab.sfu.push(pub.session, offer, items, False, lab.now)
    assert [r["trackName"] for r in results] == ["mic", "cam"] or [r["trackName"] for r in results] == ["cam", "mic"]
    mic = next(r for r in results if r["trackName"] == "mic")
    assert mic["errorCode"] == "invalid_params" and "mid 0" in mic["errorDescription"] and mic["mid"] == ""


# Firefox ESR 153's lines where they differ from Chromium's, as it wrote them in the lab (tests/e2e/test_simulcast.py).
FIREFOX_OPUS = "a=fmtp:111 maxplaybackrate=48000;stereo=1;useinbandfec=1"
FIREFOX_LAYERS = [line for rid in ("f", "h", "q") for line in (
    f"a=ssrc:{SSRCS[rid]} cname:{{firefox}}", f"a=ssrc:{RTX_SSRCS[rid]} cname:{{firefox}}",
    f"a=ssrc-group:FID {SSRCS[rid]} {RTX_SSRCS[rid]}")]


def firefox_shaped(offer: str) -> str:
    """The harness's (Chromium's) offer as Firefox writes it: bundle-only m-sections, Opus's
    receive parameters, rid and repaired-rid extensions declared send-only and, besides the
    a=rid and a=simulcast lines, every layer's SSRC and RTX SSRC."""
    offer = bundle_only(offer).replace("a=fmtp:111 minptime=10;useinbandfec=1", FIREFOX_OPUS)
    offer = re.sub(r"a=extmap:(\d+) (urn:ietf:params:rtp-hdrext:sdes:(repaired-)?rtp-stream-id)",
                   r"a=extmap:\1/sendonly \2", offer)
    simulcast = "a=simulcast:send f;h;q\r\n"
    return offer.replace(simulcast, simulcast + "".join(f"{line}\r\n" for line in FIREFOX_LAYERS))


def opus_fmtp(description: str) -> str:
    """The Opus parameters of `description` (whatever its payload type)."""
    pt = re.search(r"a=rtpmap:(\d+) opus/", description)[1]
    return re.search(rf"a=fmtp:{pt} (.*)\r\n", description)[1]


def test_opus_stereo_offered_is_not_answered_back():
    """Firefox offers stereo=1 (it can play stereo): the answer asked its publisher for stereo, which
    its Opus sends at 64 kbit/s instead of 32, from a mono microphone (in the lab: more than an
    80 kbit/s link carried, where Chromium's audio fits)."""
    lab = Lab()
    pub = lab.endpoint("pub", edit=firefox_shaped)
    pub.push(audio("mic"))
    assert FIREFOX_OPUS in pub.offer()
    assert opus_fmtp(pub.sdp) == "maxplaybackrate=48000;useinbandfec=1"
    sub = lab.endpoint("sub")
    sub.pull(pub, "mic")
    assert "stereo" not in opus_fmtp(sub.sdp)


def test_firefox_simulcast_layers_bind_by_rid_and_repair_through_rtx():
    lab = Lab()
    pub = lab.endpoint("pub", edit=firefox_shaped)
    results = pub.push(audio("mic"), video("cam", rids=("f", "h", "q")))
    assert [r.get("errorCode") for r in results] == [None, None]
    offer = pub.offer()
    assert "a=extmap:10/sendonly urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" in offer
    assert f"a=ssrc-group:FID {SSRCS['q']} {RTX_SSRCS['q']}" in offer and "m=video 0 " in offer
    assert "a=simulcast:recv f;h;q" in pub.sdp and "m=video 9 " in pub.sdp
    track = pub.track("cam")
    camera = pub.sender("cam")
    camera.tick(1.0, keys=("f", "h", "q"))
    assert {s.rid: s.ssrc for s in track.streams} == SSRCS
    sub = lab.endpoint("sub")
    (pulled,) = sub.pull(pub, "cam", simulcast={"preferredRid": "h"})
    camera.tick(1.033, keys=("h",))
    lost = camera.seq["h"] + 1
    camera.send("h", 1.066, lose=(1,))
    camera.tick(1.1)
    assert pub.nacks() == [(SSRCS["h"], [lost])]
    camera.send_rtx("h", lost, 1.15)
    assert labels(sub.media(pulled["mid"])) == ["h1.0", "h1.1", "h2.0", "h3.0", "h3.1", "h2.1"]
    assert track.stream("h").rtx_ssrc == RTX_SSRCS["h"] and lab.sfu.ingest.unknown_ssrc == 0
