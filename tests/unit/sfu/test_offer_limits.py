"""Issue 12, item 2: one description must not hold the box. An offer past the limits is refused
before it is read, with a 400 that names the limit; the work of every accepted one grows linearly
with its size, counted in lines of Python executed (the same on every run, unlike time)."""
import sys

import pytest

from appliance.sfu import sdp
from appliance.sfu.errors import SfuError

from .harness import FINGERPRINT, TRANSPORT, Lab, chrome_offer

HEAD = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuvwx",
        f"a=fingerprint:{FINGERPRINT}", "a=setup:actpass"]
VALID_PTS = [pt for pt in range(128) if not 72 <= pt <= 76]


def offer(sections, head=HEAD):
    return "\r\n".join(head + [line for section in sections for line in section]) + "\r\n"


def tiny(count, first=0, extra=()):
    """The attack's m-sections: each as short as one can be (issue 12: 28,000 of them in 773 KB)."""
    return [["m=audio 9 X 111", f"a=mid:{n}", *extra] for n in range(first, first + count)]


def audio(mid, direction="sendonly", ssrc=None):
    return ["m=audio 9 UDP/TLS/RTP/SAVPF 111", *TRANSPORT, f"a=mid:{mid}", f"a={direction}", "a=rtcp-mux",
            "a=rtpmap:111 opus/48000/2", "a=rtcp-fb:111 transport-cc", "a=fmtp:111 minptime=10;useinbandfec=1",
            *([f"a=ssrc:{ssrc} cname:x"] if ssrc else [])]


def make_sfu():
    return Lab().sfu


def push(sfu, text, items=(), auto_discover=True):
    session = sfu.new_session("app", 0.0)
    return session, sfu.push(session, text, list(items), auto_discover, 0.0)


def refused(call):
    with pytest.raises(SfuError) as caught:
        call()
    return caught.value


# --- the limits --------------------------------------------------------------------------------------


def test_an_offer_of_10000_m_sections_is_refused_before_it_is_read(monkeypatch):
    monkeypatch.setattr(sdp, "_read_section", lambda *args: pytest.fail("the offer was read"))
    sfu = make_sfu()
    session = sfu.new_session("app", 0.0)
    error = refused(lambda: sfu.push(session, offer(tiny(10_000)), [], True, 0.0))
    assert (error.status, error.code) == (400, "invalid_params")
    assert "10000 m-sections" in error.description and f"at most {sdp.MAX_SECTIONS}" in error.description
    assert session.transceivers == [] and session.port_session is None


def test_an_sdp_past_its_size_limit_is_refused_before_it_is_read(monkeypatch):
    monkeypatch.setattr(sdp, "_read_section", lambda *args: pytest.fail("the offer was read"))
    text = offer([audio("0")], HEAD + ["a=x-filler:" + "x" * sdp.MAX_SDP_BYTES])
    error = refused(lambda: push(make_sfu(), text))
    assert (error.status, error.code) == (400, "payload_too_large")
    assert f"at most {sdp.MAX_SDP_BYTES} bytes" in error.description


def padded(sections, size):
    """`sections` with a filler attribute in the first, making the SDP exactly `size` bytes."""
    text = offer(sections)
    filler = "a=x-filler:"
    pad = size - len(text) - len(filler) - 2
    first = sections[0] + [filler + "x" * pad]
    return offer([first] + sections[1:])


def test_the_largest_offer_is_accepted_and_one_more_section_or_byte_is_not():
    sections = [audio(str(n), ssrc=1000 + n) for n in range(sdp.MAX_SECTIONS)]
    largest = padded(sections, sdp.MAX_SDP_BYTES)
    assert len(largest) == sdp.MAX_SDP_BYTES and largest.count("\nm=") == sdp.MAX_SECTIONS
    session, (answer, results) = push(make_sfu(), largest)
    assert len(results) == sdp.MAX_SECTIONS and not any("errorCode" in r for r in results)
    assert answer["sdp"].count("\nm=audio 9 ") == sdp.MAX_SECTIONS  # every one accepted, none rejected
    assert refused(lambda: push(make_sfu(), padded(sections, sdp.MAX_SDP_BYTES + 1))).code == "payload_too_large"
    one_more = padded(sections + [audio(str(sdp.MAX_SECTIONS))], sdp.MAX_SDP_BYTES)
    assert refused(lambda: push(make_sfu(), one_more)).code == "invalid_params"


def test_a_session_never_holds_more_m_sections_than_a_description_may():
    """Its every description lists them all: an answer of the client would be refused otherwise."""
    sfu = make_sfu()
    publisher, _ = push(sfu, chrome_offer(), [{"location": "local", "mid": "0", "trackName": "mic"}], False)
    session, _ = push(sfu, offer(tiny(sdp.MAX_SECTIONS - 1)))
    items = [{"location": "remote", "sessionId": publisher.id, "trackName": "mic"}] * 2
    offered, results = sfu.pull(session, items, 0.0)
    assert "errorCode" not in results[0]
    assert results[1]["errorCode"] == "invalid_params" and f"at most {sdp.MAX_SECTIONS}" in results[1]["errorDescription"]
    assert offered["sdp"].count("\nm=") == sdp.MAX_SECTIONS
    # A client offer with a new section (Chrome gives a recycled m-section a new mid) is refused whole.
    other, _ = push(sfu, offer(tiny(sdp.MAX_SECTIONS)))
    error = refused(lambda: sfu.push(other, offer(tiny(sdp.MAX_SECTIONS - 1) + tiny(1, sdp.MAX_SECTIONS + 7)),
                                     [], True, 0.0))
    assert error.code == "invalid_params" and f"{sdp.MAX_SECTIONS + 1} m-sections" in error.description
    _, results = sfu.offer_push(other, [{"location": "local", "trackName": "cam", "kind": "video"}], 0.0)
    assert results[0]["errorCode"] == "invalid_params"


def test_simulcast_layers_past_the_limit_are_refused():
    rids = [f"r{n}" for n in range(sdp.MAX_LAYERS + 1)]
    text = chrome_offer(f"a=simulcast:send {';'.join(rids)}", rids=rids)
    error = refused(lambda: push(make_sfu(), text))
    assert error.code == "invalid_params" and f"at most {sdp.MAX_LAYERS}" in error.description
    assert len(sdp.parse(chrome_offer("a=simulcast:send " + ";".join(rids[:-1]), rids=rids[:-1]), "offer")
               .sections[1].rids) == sdp.MAX_LAYERS


def test_two_m_sections_with_one_mid_are_refused():
    error = refused(lambda: push(make_sfu(), offer([audio("0"), audio("0")])))
    assert error.code == "invalid_session_description" and "both have a=mid:0" in error.description


def test_numbers_past_what_python_converts_are_a_400_not_a_500():
    text = offer([audio("0") + ["a=ssrc:" + "9" * 5000 + " cname:x"]])
    assert refused(lambda: push(make_sfu(), text)).code == "invalid_session_description"


# --- linear work -------------------------------------------------------------------------------------


def operations(action) -> int:
    """The lines of Python `action` executes, each loop iteration again, and the calls it makes."""
    count = 0

    def trace(frame, event, arg):
        nonlocal count
        count += 1
        return trace

    before = sys.gettrace()  # a coverage tracer, if any, goes on afterwards
    sys.settrace(trace)
    try:
        action()
    finally:
        sys.settrace(before)
    return count


def assert_linear(work, n):
    """Going from 2n to 4n costs twice what going from n to 2n did: linear (quadratic work makes it four times)."""
    small, double, quadruple = work(n), work(2 * n), work(4 * n)
    assert quadruple - double <= 2.4 * (double - small), (small, double, quadruple)


def test_a_push_costs_the_same_per_m_section():
    assert_linear(lambda n: operations(lambda: push(make_sfu(), offer(tiny(n)))), 100)
    assert_linear(lambda n: operations(lambda: push(make_sfu(), offer(tiny(n, extra=["a=sendonly"])))), 100)
    # m=application sections: the first carries the data channels, each other one is rejected.
    def application(n):
        return [["m=application 9 UDP/DTLS/SCTP webrtc-datachannel", f"a=mid:d{m}", "a=sctp-port:5000"]
                for m in range(n)]
    assert_linear(lambda n: operations(lambda: push(make_sfu(), offer(tiny(n) + application(n)))), 50)


@pytest.mark.parametrize("line", [
    "a=ssrc:{n} cname:x",
    "a=rtpmap:{pt} VP8/90000\r\na=fmtp:{pt} x={n}",
    "a=rtpmap:{pt} VP8/90000\r\na=rtcp-fb:* nack\r\na=rtcp-fb:{pt} nack pli",
    "a=rid:r{n} recv",
    "a=candidate:{n} 1 udp {n} 192.0.2.1 {pt} typ host",
    "a=extmap:{pt} urn:x-{n}",
])
def test_a_push_costs_the_same_per_line_of_any_kind(line):
    def text(n):
        lines = [line.format(n=n, pt=VALID_PTS[n % len(VALID_PTS)]) for n in range(n)]
        return offer([audio("0") + "\r\n".join(lines).split("\r\n")])
    assert_linear(lambda n: operations(lambda: push(make_sfu(), text(n))), 250)


def test_a_pull_into_a_client_offer_costs_the_same_per_m_section():
    def work(n):
        sfu = make_sfu()
        publisher, _ = push(sfu, offer([audio(str(m)) for m in range(64)]))
        items = [{"location": "remote", "sessionId": publisher.id, "trackName": t} for t in publisher.tracks]
        session = sfu.new_session("app", 0.0)
        text = offer(tiny(n, extra=["a=recvonly", "a=rtpmap:111 opus/48000/2"]))
        return operations(lambda: sfu.pull_with_offer(session, text, items, 0.0))
    assert_linear(work, 100)


def test_a_renegotiation_costs_the_same_per_m_section():
    def work(n):
        sfu = make_sfu()
        publisher, _ = push(sfu, offer([audio(str(m)) for m in range(64)]))
        session, _ = push(sfu, offer(tiny(n)))
        items = [{"location": "remote", "sessionId": publisher.id, "trackName": t} for t in publisher.tracks]
        sfu.pull(session, items, 0.0)
        answer = offer(tiny(n) + [audio(str(m), "recvonly") for m in range(n, n + 64)])
        return operations(lambda: sfu.renegotiate(session, answer, 0.0))
    assert_linear(work, 100)
