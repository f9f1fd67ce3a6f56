"""The work of one description: milliseconds for `push`, `pull_with_offer` and `renegotiate` on
descriptions of a size (1x) and of twice and four times it, each against the same shape at 1x: a
ratio near 2 and 4 is linear work, near 4 and 16 quadratic. 1x is about the largest description the
limits accept (sdp.MAX_SECTIONS, sdp.MAX_SDP_BYTES); the limits are lifted for 2x and 4x, so the
figures show the work itself. Then the figures of the issue: the largest offer accepted and the
time to refuse one of 10,000 m-sections.

    .venv/bin/python -m tests.bench offers
"""
from __future__ import annotations

import gc
import time
from types import SimpleNamespace

from aiortc.rtcdtlstransport import RTCDtlsFingerprint

from appliance.sfu import sdp
from appliance.sfu.errors import SfuError
from appliance.sfu.sfu import Sfu

FINGERPRINT = "sha-256 " + ":".join(["AB"] * 32)
TRANSPORT = ["c=IN IP4 0.0.0.0", "a=rtcp:9 IN IP4 0.0.0.0", "a=ice-ufrag:Yq1Z", "a=ice-pwd:8WT9V2dSqkzP4Xv2+bWQ3bGx",
             "a=ice-options:trickle", f"a=fingerprint:{FINGERPRINT}", "a=setup:actpass"]
AUDIO_EXTENSIONS = ["urn:ietf:params:rtp-hdrext:ssrc-audio-level",
                    "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
                    "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
                    "urn:ietf:params:rtp-hdrext:sdes:mid"]
VIDEO_EXTENSIONS = ["urn:ietf:params:rtp-hdrext:toffset", *AUDIO_EXTENSIONS[1:], "urn:3gpp:video-orientation",
                    "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
                    "http://www.webrtc.org/experiments/rtp-hdrext/video-content-type",
                    "http://www.webrtc.org/experiments/rtp-hdrext/video-timing",
                    "http://www.webrtc.org/experiments/rtp-hdrext/color-space",
                    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
                    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"]
# Chrome's video codecs, each followed by its RTX format: (name, fmtp).
VIDEO_CODECS = [("VP8", ""), ("VP9", "profile-id=0"), ("VP9", "profile-id=2"), ("VP9", "profile-id=1"),
                ("VP9", "profile-id=3"), *[("H264", f"level-asymmetry-allowed=1;packetization-mode={m};"
                                                  f"profile-level-id={p}")
                                           for p in ("42001f", "42e01f", "4d001f", "f4001f", "64001f") for m in (1, 0)],
                ("AV1", "level-idx=5;profile=0;tier=0"), ("AV1", "level-idx=5;profile=1;tier=0"), ("red", "")]
VIDEO_FEEDBACK = ["goog-remb", "transport-cc", "ccm fir", "nack", "nack pli"]


def audio_section(mid: str, direction: str, ssrc: int) -> list[str]:
    """Chrome's audio m-section."""
    return ["m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126", *TRANSPORT, f"a=mid:{mid}",
            *[f"a=extmap:{i} {uri}" for i, uri in enumerate(AUDIO_EXTENSIONS, 1)], f"a={direction}",
            f"a=msid:stream-{mid} track-{mid}", "a=rtcp-mux", "a=rtpmap:111 opus/48000/2",
            "a=rtcp-fb:111 transport-cc", "a=fmtp:111 minptime=10;useinbandfec=1", "a=rtpmap:63 red/48000/2",
            "a=fmtp:63 111/111", "a=rtpmap:9 G722/8000", "a=rtpmap:0 PCMU/8000", "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:13 CN/8000", "a=rtpmap:110 telephone-event/48000", "a=rtpmap:126 telephone-event/8000",
            f"a=ssrc:{ssrc} cname:4TOk42mSjXCkVIa6", f"a=ssrc:{ssrc} msid:stream-{mid} track-{mid}"]


def video_section(mid: str, direction: str, ssrc: int) -> list[str]:
    """Chrome's video m-section: 21 codecs and their RTX formats."""
    pts = list(range(96, 128)) + list(range(35, 45))
    lines = []
    for n, (name, fmtp) in enumerate(VIDEO_CODECS):
        pt, rtx = pts[2 * n], pts[2 * n + 1]
        lines += [f"a=rtpmap:{pt} {name}/90000", *[f"a=rtcp-fb:{pt} {fb}" for fb in VIDEO_FEEDBACK]]
        lines += [f"a=fmtp:{pt} {fmtp}"] if fmtp else []
        lines += [f"a=rtpmap:{rtx} rtx/90000", f"a=fmtp:{rtx} apt={pt}"]
    return [f"m=video 9 UDP/TLS/RTP/SAVPF {' '.join(map(str, pts[:2 * len(VIDEO_CODECS)]))}", *TRANSPORT,
            f"a=mid:{mid}", *[f"a=extmap:{i} {uri}" for i, uri in enumerate(VIDEO_EXTENSIONS, 1)], f"a={direction}",
            f"a=msid:stream-{mid} track-{mid}", "a=rtcp-mux", "a=rtcp-rsize", *lines,
            f"a=ssrc-group:FID {ssrc} {ssrc + 1}", f"a=ssrc:{ssrc} cname:4TOk42mSjXCkVIa6",
            f"a=ssrc:{ssrc + 1} cname:4TOk42mSjXCkVIa6"]


def description(sections: list[list[str]]) -> str:
    mids = " ".join(line[6:] for section in sections for line in section if line.startswith("a=mid:"))
    head = ["v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0", f"a=group:BUNDLE {mids}",
            "a=extmap-allow-mixed", "a=msid-semantic: WMS *"]
    return "\r\n".join(head + [line for section in sections for line in section]) + "\r\n"


def chrome(count: int, direction: str, first: int = 0) -> str:
    """`count` m-sections as Chrome writes them, audio and video in turn."""
    return description([(audio_section if n % 2 == 0 else video_section)(str(n), direction, 1000 + 2 * n)
                        for n in range(first, first + count)])


def tiny(count: int) -> str:
    """The attack of issue 12: as many m-sections as fit, each as short as one can be."""
    head = ["v=0", "o=- 1 1 IN IP4 0.0.0.0", "s=-", "t=0 0", "a=ice-ufrag:abcd", "a=ice-pwd:abcdefghijklmnopqrstuvwx",
            f"a=fingerprint:{FINGERPRINT}", "a=setup:actpass"]
    return "\r\n".join(head + [line for n in range(count) for line in ("m=audio 9 X 0", f"a=mid:{n}")]) + "\r\n"


def lines(count: int, line: str) -> str:
    """One video m-section carrying `count` copies of an attribute line (what aiortc's parser scans per line)."""
    section = video_section("0", "sendonly", 1000)
    return description([section + [line.format(n=n) for n in range(count)]])


class _Port:
    context = SimpleNamespace(fingerprint=RTCDtlsFingerprint("sha-256", ":".join(["CD"] * 32)))

    def add_session(self, handler, *args, **kwargs):
        return ("port", handler.id)

    def set_remote(self, *args):
        pass

    def remove_session(self, *args):
        pass

    def send_rtp(self, *args):
        return True

    def send_rtcp(self, *args):
        return True


def _sfu() -> Sfu:
    return Sfu(_Port(), lambda: [], associate=None)


def _publisher(sfu: Sfu, tracks: int):
    session = sfu.new_session("app", 0.0)
    _, results = sfu.push(session, chrome(tracks, "sendonly"), [], True, 0.0)
    return session, [r["trackName"] for r in results]


def push(offer: str):
    """A push of every sending section (autoDiscover) of `offer`: (seconds, outcome)."""
    sfu = _sfu()
    session = sfu.new_session("app", 0.0)
    return _timed(lambda: sfu.push(session, offer, [], True, 0.0))


def pull_with_offer(offer: str):
    """64 tracks (the most one call takes) into a WHEP-style offer of receiving sections."""
    sfu = _sfu()
    publisher, names = _publisher(sfu, 64)
    session = sfu.new_session("app", 0.0)
    items = [{"location": "remote", "sessionId": publisher.id, "trackName": name} for name in names]
    return _timed(lambda: sfu.pull_with_offer(session, offer, items, 0.0))


def renegotiate(count: int):
    """The answer to an SFU offer that adds 64 pulled tracks to a session of `count` m-sections."""
    sfu = _sfu()
    publisher, names = _publisher(sfu, 64)
    session = sfu.new_session("app", 0.0)
    sfu.push(session, chrome(count - 64, "sendonly"), [], True, 0.0)
    items = [{"location": "remote", "sessionId": publisher.id, "trackName": name} for name in names]
    sfu.pull(session, items, 0.0)
    answer = description([(audio_section if n % 2 == 0 else video_section)(str(n), "recvonly" if n >= count - 64
                                                                             else "sendonly", 5000 + 2 * n)
                          for n in range(count)])
    return _timed(lambda: sfu.renegotiate(session, answer, 0.0)), answer


def _timed(call) -> tuple[float, str]:
    """The seconds `call` takes with the garbage collector paused (a full collection costs what the
    whole process holds, not what the call does), and how it ended."""
    gc.collect()
    gc.disable()
    start = time.perf_counter()
    try:
        call()
        outcome = "accepted"
    except SfuError as e:
        outcome = f"{e.status} {e.code}: {e.description}"
    finally:
        seconds = time.perf_counter() - start
        gc.enable()
    return seconds, outcome


def _best(run, repeats: int = 3) -> tuple[float, str]:
    return min((run() for _ in range(repeats)), key=lambda r: r[0])


def _limits(sections: int, size: int) -> None:
    sdp.MAX_SECTIONS, sdp.MAX_SDP_BYTES = sections, size


def main() -> None:
    sections, size = sdp.MAX_SECTIONS, sdp.MAX_SDP_BYTES
    audio_video = len(chrome(2, "sendonly"))
    pairs = min(sections, size // audio_video * 2) // 2 * 2 - 2  # Chrome sections that fit both limits
    shapes = [
        ("push: Chrome sections", pairs, lambda n: push(chrome(n, "sendonly"))),
        ("push: tiny sections", sections, lambda n: push(tiny(n))),
        ("pull_with_offer: Chrome", pairs, lambda n: pull_with_offer(chrome(n, "recvonly"))),
        ("renegotiate: Chrome", pairs, lambda n: renegotiate(n)[0]),
        ("push: a=rtcp-fb:* lines", 20_000, lambda n: push(lines(n, "a=rtcp-fb:* nack"))),
        ("push: a=ssrc lines", 20_000, lambda n: push(lines(n, "a=ssrc:{n} cname:x"))),
        ("push: a=fmtp lines", 20_000, lambda n: push(lines(n, "a=fmtp:96 x={n}"))),
    ]
    print(f"limits: {sections} m-sections, {size} bytes; 2x and 4x lift them")
    for label, count, run in shapes:
        _limits(sections, size)
        base, outcome = _best(lambda: run(count))
        figures = [f"1x {count} ({base * 1000:.1f} ms, {outcome[:40]})"]
        _limits(10**9, 10**12)
        for factor in (2, 4):
            seconds, _ = _best(lambda: run(count * factor))
            figures.append(f"{factor}x {seconds * 1000:.1f} ms ({seconds / base:.1f})")
        print(f"{label:26} " + "  ".join(figures))
    _limits(sections, size)
    largest = chrome(pairs, "sendonly")
    seconds, outcome = _best(lambda: push(largest))
    print(f"largest offer accepted: {pairs} Chrome m-sections, {len(largest)} bytes: {seconds * 1000:.1f} ms "
          f"({outcome})")
    attack = tiny(10_000)
    seconds, outcome = _best(lambda: push(attack))
    print(f"10,000 tiny m-sections, {len(attack)} bytes: refused in {seconds * 1000:.3f} ms ({outcome})")
