"""What Firefox offers differently: with max-bundle its second and later m-sections come as
`m=... 0 ...` with a=bundle-only inside the BUNDLE group (RFC 8843 6, JSEP 5.2.1), which are
accepted, not rejected; and a requested track whose m-section cannot carry it gets an error entry."""
import re

from .harness import Lab, audio, video


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
