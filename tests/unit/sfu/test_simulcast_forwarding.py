"""The SFU end to end without a network: a Chromium-like publisher pushes three simulcast layers
(RID header extensions, RTX with repaired-rid), subscribers pull one layer, switch layers at
keyframes and repair losses with NACKs. Time is driven explicitly."""
import re
import struct
from types import SimpleNamespace

from aiortc.rtcdtlstransport import RTCDtlsFingerprint

from appliance.sfu import feedback
from appliance.sfu.forward import payload_offset
from appliance.sfu.rtcp import keyframe_requests
from appliance.sfu.sfu import Sfu
from appliance.sfu.streams import PACKET_OVERHEAD

from .test_keyframe_detection import VP8_INTER, VP8_KEY
from .test_simulcast_sdp import CHROME_SIMULCAST_OFFER, FINGERPRINT, chrome_offer

MID_ID, RID_ID, REPAIRED_ID = 4, 10, 11  # the offer's extmap ids
VP8_PT, RTX_PT = 96, 97
SSRCS = {"f": 0x0F0F0F01, "h": 0x0F0F0F02, "q": 0x0F0F0F03}
RTX_SSRCS = {"f": 0x0E0E0E01, "h": 0x0E0E0E02, "q": 0x0E0E0E03}


class Port:
    """The media port, as far as the SFU uses it: sessions, and what it sends on each."""

    def __init__(self):
        self.context = SimpleNamespace(fingerprint=RTCDtlsFingerprint("sha-256", ":".join(["CD"] * 32)))
        self.rtp: list[tuple] = []
        self.rtcp: list[tuple] = []

    def add_session(self, handler, ufrag, pwd, **kwargs):
        return ("port", handler.id)

    def set_remote(self, *args):
        pass

    def remove_session(self, port_session):
        pass

    def send_rtp(self, port_session, packet):
        self.rtp.append((port_session, packet))
        return True

    def send_rtcp(self, port_session, packet):
        self.rtcp.append((port_session, packet))
        return True


def extension_block(*elements):
    body = b"".join(bytes([ext_id << 4 | len(data) - 1]) + data for ext_id, data in elements)
    body += b"\x00" * (-len(body) % 4)
    return struct.pack(">HH", 0xBEDE, len(body) // 4) + body


class Publisher:
    """Chromium's three VP8 layers: every frame of every layer is two packets; the first packets
    of each SSRC carry mid and rid (RFC 8852), as libwebrtc sends them until they are acknowledged."""

    def __init__(self, session):
        self.session = session
        self.seq = {"f": 1000, "h": 20000, "q": 65528}  # q wraps at its frame 4
        self.ts = {"f": 10_000, "h": 500_000, "q": 4_294_960_000}
        self.frame = {"f": 0, "h": 0, "q": 0}
        self.sent = {}  # (rid, seq) -> packet
        self.rtx_seq = 7

    def frame_packets(self, rid, key=False, with_ids=True):
        """The two packets of the rid's next frame: (start, continuation)."""
        number = self.frame[rid]
        self.frame[rid] += 1
        self.ts[rid] = (self.ts[rid] + 3000) & 0xFFFFFFFF
        packets = []
        for part in (0, 1):
            descriptor = bytes([0x90 if part == 0 else 0x80, 0xE0, 0x80 | number >> 8 & 0x7F, number & 0xFF, 0, 0x20])
            body = (VP8_KEY if key else VP8_INTER) if part == 0 else b""
            payload = descriptor + body + f"{rid}{number}.{part}".encode()
            ext = extension_block((MID_ID, b"1"), (RID_ID, rid.encode())) if with_ids else b""
            seq = self.seq[rid]
            self.seq[rid] = (seq + 1) & 0xFFFF
            first = 0x80 | (0x10 if ext else 0)
            packet = struct.pack(">BBHII", first, (0x80 if part else 0) | VP8_PT, seq, self.ts[rid], SSRCS[rid])
            packet += ext + payload
            self.sent[rid, seq] = packet
            packets.append(packet)
        return packets

    def send(self, rid, now, key=False, lose=()):
        """One frame of `rid` into the box, but the packets numbered in `lose` (0, 1)."""
        for part, packet in enumerate(self.frame_packets(rid, key)):
            if part not in lose:
                self.session.rtp(packet, now)

    def tick(self, now, keys=(), only=("f", "h", "q")):
        for rid in only:
            self.send(rid, now, key=rid in keys)

    def rtx(self, rid, seq):
        """The RTX packet (RFC 4588) that repairs `seq` of `rid`: repaired-rid, rtx pt, the OSN."""
        original = self.sent[rid, seq]
        offset = payload_offset(original)
        self.rtx_seq += 1
        ext = extension_block((MID_ID, b"1"), (REPAIRED_ID, rid.encode()))
        header = struct.pack(">BBHI", 0x90, (original[1] & 0x80) | RTX_PT, self.rtx_seq, int.from_bytes(original[4:8], "big"))
        return header + RTX_SSRCS[rid].to_bytes(4, "big") + ext + seq.to_bytes(2, "big") + original[offset:]


def subscriber_offer(rtx=True):
    """A receive-only video offer, as a WHEP-style player sends it."""
    return "\r\n".join([
        "v=0", "o=- 77 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0", "a=extmap-allow-mixed",
        "a=msid-semantic: WMS", "m=video 9 UDP/TLS/RTP/SAVPF 96" + (" 97" if rtx else ""), "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0", "a=ice-ufrag:SuB1", "a=ice-pwd:subscriberpasswordsubscriber",
        f"a=fingerprint:{FINGERPRINT}", "a=setup:actpass", "a=mid:0",
        "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid", "a=recvonly", "a=rtcp-mux", "a=rtcp-rsize",
        "a=rtpmap:96 VP8/90000", "a=rtcp-fb:96 ccm fir", "a=rtcp-fb:96 nack", "a=rtcp-fb:96 nack pli",
        *(["a=rtpmap:97 rtx/90000", "a=fmtp:97 apt=96"] if rtx else []), "",
    ])


class World:
    def __init__(self, offer=CHROME_SIMULCAST_OFFER):
        self.port = Port()
        self.sfu = Sfu(self.port, lambda: [], associate=None)
        self.pub = self.sfu.new_session("app", 0.0)
        self.answer, results = self.sfu.push(self.pub, offer, [{"location": "local", "mid": "1", "trackName": "cam"},
                                                               {"location": "local", "mid": "0", "trackName": "mic"}],
                                             False, 0.0)
        assert [r.get("errorCode") for r in results] == [None, None]
        self.track = self.pub.tracks["cam"]
        self.publisher = Publisher(self.pub)

    def subscribe(self, now, simulcast=None, rtx=True):
        session = self.sfu.new_session("app", now)
        item = {"location": "remote", "sessionId": self.pub.id, "trackName": "cam"}
        if simulcast is not None:
            item["simulcast"] = simulcast
        answer, results = self.sfu.pull_with_offer(session, subscriber_offer(rtx), [item], now)
        assert results == [{"sessionId": self.pub.id, "trackName": "cam", "mid": "0"}]
        session.answer = answer["sdp"]
        return session

    def received(self, session):
        """(seq, ts, ssrc, pt, payload) of each RTP packet sent to `session`, in order."""
        out = []
        for port_session, packet in self.port.rtp:
            if port_session == session.port_session:
                _, second, seq, ts, ssrc = struct.unpack(">BBHII", packet[:12])
                out.append((seq, ts, ssrc, second & 0x7F, packet[payload_offset(packet):]))
        return out

    def media(self, session):
        leg = session.transceiver("0").leg
        return [r for r in self.received(session) if r[2] == leg.ssrc]

    def rtcp_to_publisher(self):
        return [packet for port_session, packet in self.port.rtcp if port_session == self.pub.port_session]

    def plis(self):
        return [ssrc for packet in self.rtcp_to_publisher() for ssrc in keyframe_requests(packet)]

    def nacked(self):
        return [(ssrc, seqs) for packet in self.rtcp_to_publisher() for ssrc, seqs in feedback.nacks(packet)]


def labels(received):
    """What each forwarded packet was: its rid, frame number and part, from the end of its payload."""
    out = []
    for *_, payload in received:
        found = re.search(rb"([fhq][0-9]+\.[01])$", payload)
        assert found, payload
        out.append(found.group(1).decode())
    return out


def assert_continuous(received):
    seqs = [r[0] for r in received]
    assert [(b - a) & 0xFFFF for a, b in zip(seqs, seqs[1:])] == [1] * (len(seqs) - 1), seqs
    stamps = [r[1] for r in received]
    assert all((b - a) & 0xFFFFFFFF < 0x80000000 for a, b in zip(stamps, stamps[1:])), stamps


def receiving(rid, rtx=True):
    """A world whose subscriber, pinned to `rid`, receives it from a keyframe at 1.033 on."""
    world = World()
    world.publisher.tick(1.0, keys=("f", "h", "q"))
    sub = world.subscribe(1.01, {"preferredRid": rid}, rtx)
    world.publisher.tick(1.033, keys=(rid,))
    return world, world.publisher, sub


def test_the_publisher_is_answered_with_simulcast_recv_and_its_layers_bind_by_rid():
    world = World()
    answer = world.answer["sdp"]
    assert "a=rid:f recv\r\na=rid:h recv\r\na=rid:q recv\r\na=simulcast:recv f;h;q\r\n" in answer
    assert "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" in answer
    assert "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id" in answer
    assert [s.rid for s in world.track.streams] == ["f", "h", "q"]
    assert all(s.ssrc is None for s in world.track.streams)
    world.publisher.tick(1.0, keys=("f", "h", "q"))
    assert {s.rid: s.ssrc for s in world.track.streams} == SSRCS
    mic = world.pub.tracks["mic"].streams[0]
    assert world.pub.by_ssrc == {**{SSRCS[s.rid]: s for s in world.track.streams}, 3735928559: mic}
    assert world.sfu.ingest.unknown_ssrc == 0
    assert all(s.active(1.5) and not s.active(2.1) for s in world.track.streams)


def test_packets_without_ids_bind_through_their_ssrc_once_known():
    world = World()
    world.publisher.tick(1.0)
    before = world.track.stream("h").octets
    packet = world.publisher.frame_packets("h")[0]
    bare = bytes([packet[0] & ~0x10 & 0xFF]) + packet[1:12] + packet[payload_offset(packet):]
    world.pub.rtp(bare, 1.05)
    assert world.track.stream("h").octets == before + len(bare) + PACKET_OVERHEAD
    # An unknown SSRC without ids is not guessed into a simulcast track.
    stranger = bare[:8] + (0x12345678).to_bytes(4, "big") + bare[12:]
    world.pub.rtp(stranger, 1.06)
    assert world.sfu.ingest.unknown_ssrc == 1


def test_a_subscriber_gets_only_its_preferred_layer_from_a_keyframe_on():
    world = World()
    pub = world.publisher
    pub.tick(1.0, keys=("f", "h", "q"))
    pub.tick(1.03)
    sub = world.subscribe(1.05, {"preferredRid": "h"})
    leg = sub.transceiver("0").leg
    assert leg.target is world.track.stream("h") and leg.stream is None
    assert set(world.plis()) == {SSRCS["h"]}  # the new subscriber's keyframe, on its layer only
    assert world.received(sub) == []
    pub.tick(1.066)  # no keyframe yet: nothing
    assert world.received(sub) == []
    pub.tick(1.1, keys=("h",))
    pub.tick(1.133)
    pub.tick(1.166, keys=("f", "q"))
    got = world.media(sub)
    assert labels(got) == ["h3.0", "h3.1", "h4.0", "h4.1", "h5.0", "h5.1"]
    assert got[0][4][6:6 + len(VP8_KEY)] == VP8_KEY
    assert_continuous(got)
    assert {r[3] for r in got} == {96}
    assert "a=ssrc-group:FID" in sub.answer and f"a=ssrc:{leg.ssrc} cname:" in sub.answer


def test_a_layer_switch_happens_at_the_new_layers_keyframe_with_continuous_numbers():
    world, pub, sub = receiving("h")
    pub.tick(1.066)
    results = world.sfu.update(sub, [{"location": "remote", "mid": "0", "sessionId": world.pub.id,
                                      "trackName": "cam", "simulcast": {"preferredRid": "q"}}], 1.07)
    assert results == [{"mid": "0", "sessionId": world.pub.id, "trackName": "cam"}]
    assert world.plis()[-1] == SSRCS["q"]
    pub.tick(1.1)  # q's next frame is no keyframe: h goes on
    pub.tick(1.133, keys=("f",))
    pub.tick(1.166, keys=("q",))  # the switch
    pub.tick(1.2, keys=("h",))
    got = world.media(sub)
    # Each tick sends f, h, then q: h's frame 5 still goes out, q's frame 5 starts with a keyframe.
    assert labels(got) == ["h1.0", "h1.1", "h2.0", "h2.1", "h3.0", "h3.1", "h4.0", "h4.1", "h5.0", "h5.1",
                           "q5.0", "q5.1", "q6.0", "q6.1"]
    assert got[10][4][6:6 + len(VP8_KEY)] == VP8_KEY
    assert 0 < (got[10][1] - got[9][1]) & 0xFFFFFFFF <= 90000  # the timestamp moves on a little
    assert_continuous(got)
    assert len({r[2] for r in got}) == 1  # one SSRC throughout
    assert world.sfu.switcher.counters.layer_switches == 2  # onto h, then onto q
    leg = sub.transceiver("0").leg
    assert leg.stream is world.track.stream("q") and leg.target is None
    assert leg not in world.track.stream("h").legs and world.track.stream("q").legs == [leg]


def answer_to(offer):
    """A browser's answer to an SFU offer: receive what it sends, with the client's ICE and DTLS."""
    lines = []
    for line in offer.split("\r\n"):
        if line.startswith(("a=ice-lite", "a=candidate", "a=end-of-candidates", "a=ssrc")):
            continue
        line = {"a=sendonly": "a=recvonly", "a=setup:actpass": "a=setup:active"}.get(line, line)
        if line.startswith("a=ice-ufrag:"):
            line = "a=ice-ufrag:SuB2"
        elif line.startswith("a=ice-pwd:"):
            line = "a=ice-pwd:anothersubscriberpassword"
        elif line.startswith("a=fingerprint:"):
            line = f"a=fingerprint:{FINGERPRINT}"
        lines.append(line)
    return "\r\n".join(lines)


def test_a_pull_answered_by_renegotiate_starts_at_its_layers_keyframe():
    world = World()
    pub = world.publisher
    pub.tick(1.0, keys=("f", "h", "q"))
    sub = world.sfu.new_session("app", 1.01)
    offer, results = world.sfu.pull(sub, [{"location": "remote", "sessionId": world.pub.id, "trackName": "cam",
                                           "simulcast": {"preferredRid": "q"}}], 1.01)
    assert results[0]["mid"] == "0" and results[0]["simulcast"] == {"preferredRid": "q"}
    pub.tick(1.033, keys=("q",))  # before the answer: nobody to forward to
    world.sfu.renegotiate(sub, answer_to(offer["sdp"]), 1.04)
    leg = sub.transceiver("0").leg
    assert leg.target is world.track.stream("q") and leg.port_session == sub.port_session
    assert SSRCS["q"] in world.plis()
    pub.tick(1.066, keys=("h",))
    pub.tick(1.1, keys=("q",))
    pub.tick(1.133)
    got = world.media(sub)
    assert labels(got) == ["q3.0", "q3.1", "q4.0", "q4.1"]
    assert_continuous(got)
    nack_from(world, sub, [got[0][0]], 1.14)
    rtx = [r for r in world.received(sub) if r[2] == leg.rtx_ssrc]
    assert len(rtx) == 1 and rtx[0][4][2:] == got[0][4]


def test_a_switch_across_the_wrap_of_the_new_layer():
    world, pub, sub = receiving("f")
    world.sfu.update(sub, [{"location": "remote", "mid": "0", "sessionId": world.pub.id, "trackName": "cam",
                            "simulcast": {"preferredRid": "q"}}], 1.04)
    for i in range(4):  # q's numbers cross 65535 -> 0
        pub.tick(1.066 + i / 30, keys=("q",) if i == 1 else ())
    got = world.media(sub)
    assert labels(got) == ["f1.0", "f1.1", "f2.0", "f2.1", "f3.0", "f3.1", "q3.0", "q3.1", "q4.0", "q4.1",
                           "q5.0", "q5.1"]
    assert pub.seq["q"] < 10  # it did wrap
    assert_continuous(got)


def test_an_rtx_packet_for_a_packet_the_box_lost_is_unwrapped_and_forwarded():
    world, pub, sub = receiving("h")
    lost = pub.seq["h"] + 1
    pub.send("h", 1.066, lose=(1,))  # the continuation packet of frame h2 is lost on the way in
    pub.tick(1.1, only=("h",))
    assert world.nacked() == [(SSRCS["h"], [lost])]
    pub.session.rtp(pub.rtx("h", lost), 1.15)
    got = world.media(sub)
    assert labels(got) == ["h1.0", "h1.1", "h2.0", "h3.0", "h3.1", "h2.1"]
    assert got[-1][0] == (got[2][0] + 1) & 0xFFFF  # in the gap it left
    assert got[-1][1] == got[2][1] and got[-1][3] == 96
    stream = world.track.stream("h")
    assert stream.rtx_ssrc == RTX_SSRCS["h"] and world.pub.rtx_by_ssrc == {RTX_SSRCS["h"]: stream}
    cached, original = stream.cache.get(lost, 1.2), pub.sent["h", lost]
    # The original header (the extensions are the RTX packet's: repaired-rid, which no leg forwards).
    assert cached[:12] == original[:12] and cached[payload_offset(cached):] == original[payload_offset(original):]
    # A second copy (a late RTX, or a padding probe repeating it) is not forwarded again.
    pub.session.rtp(pub.rtx("h", lost), 1.16)
    assert len(world.media(sub)) == len(got)


def test_rtx_copies_of_packets_the_box_has_are_dropped():
    world = World()
    pub = world.publisher
    pub.tick(1.0, keys=("h",), only=("h",))
    sub = world.subscribe(1.01, {"preferredRid": "h"})
    pub.tick(1.033, keys=("h",), only=("h",))
    before = world.media(sub)
    pub.session.rtp(pub.rtx("h", pub.seq["h"] - 1), 1.04)
    assert world.media(sub) == before and len(before) == 2


def nack_from(world, sub, out_seqs, now):
    leg = sub.transceiver("0").leg
    sub.rtcp(feedback.nack(0x5B5B5B5B, leg.ssrc, out_seqs), now)


def test_a_subscribers_nack_is_answered_from_the_cache_as_rtx():
    world, pub, sub = receiving("h")
    pub.tick(1.066)
    got = world.media(sub)
    leg = sub.transceiver("0").leg
    assert leg.rtx_ssrc is not None and f"a=ssrc-group:FID {leg.ssrc} {leg.rtx_ssrc}" in sub.answer
    wanted = got[1]  # h1.1
    nack_from(world, sub, [wanted[0]], 1.08)
    rtx = [r for r in world.received(sub) if r[2] == leg.rtx_ssrc]
    assert len(rtx) == 1
    _, ts, _, pt, payload = rtx[0]
    assert pt == 97 and ts == wanted[1]
    assert payload[:2] == wanted[0].to_bytes(2, "big") and payload[2:] == wanted[4]
    assert world.sfu.repair.counters.retransmitted == 1
    assert world.nacked() == []  # nothing went to the publisher


def test_without_rtx_the_answer_is_the_packet_again():
    world = World()
    pub = world.publisher
    pub.tick(1.0, keys=("h",), only=("h",))
    sub = world.subscribe(1.01, {"preferredRid": "h"}, rtx=False)
    pub.tick(1.033, keys=("h",), only=("h",))
    first = world.media(sub)[0]
    nack_from(world, sub, [first[0]], 1.05)
    assert world.media(sub)[-1] == first and len(world.received(sub)) == 3


def test_a_lost_packet_is_nacked_upstream_once_whatever_the_number_of_subscribers():
    world = World()
    pub = world.publisher
    pub.tick(1.0, keys=("f", "h", "q"))
    subs = [world.subscribe(1.01, {"preferredRid": "h"}), world.subscribe(1.012, {"preferredRid": "h"})]
    pub.tick(1.033, keys=("h",))
    lost = pub.seq["h"]
    pub.send("h", 1.066, lose=(0,))  # the start of frame h2
    for sub in subs:
        got = world.media(sub)
        assert labels(got) == ["h1.0", "h1.1", "h2.1"]
        gap = (got[1][0] + 1) & 0xFFFF
        nack_from(world, sub, [gap], 1.07)
        nack_from(world, sub, [gap], 1.075)
    pub.tick(1.1)
    assert world.nacked() == [(SSRCS["h"], [lost])]
    assert world.sfu.repair.counters.nacked_upstream == 1 and world.sfu.repair.counters.not_cached == 4
    pub.session.rtp(pub.rtx("h", lost), 1.11)
    for sub in subs:
        got = world.media(sub)
        assert labels(got) == ["h1.0", "h1.1", "h2.1", "h3.0", "h3.1", "h2.0"]
        assert got[-1][0] == (got[1][0] + 1) & 0xFFFF
    # Once recovered, a NACK of it is answered from the cache.
    sub = subs[0]
    leg = sub.transceiver("0").leg
    nack_from(world, sub, [world.media(sub)[-1][0]], 1.13)
    assert [r for r in world.received(sub) if r[2] == leg.rtx_ssrc][-1][4][2:] == world.media(sub)[-1][4]
    assert world.nacked() == [(SSRCS["h"], [lost])]


def test_an_unanswered_upstream_nack_is_retried_after_a_round_trip_not_per_packet():
    world = World()
    pub = world.publisher
    pub.tick(1.0, keys=("h",), only=("h",))
    lost = pub.seq["h"]
    pub.send("h", 1.02, lose=(0,))
    for i in range(5):  # packets in the next 0.1 s: no repeat
        pub.tick(1.03 + i * 0.02, only=("h",))
    assert world.nacked() == [(SSRCS["h"], [lost])]
    pub.tick(1.2, only=("h",))  # 1.5 round trips (initially 0.1 s) later
    assert world.nacked() == [(SSRCS["h"], [lost])] * 2


def test_simulcast_declared_without_the_rid_extension():
    # An offer with a=simulcast but no rid extmap: the box cannot tell the layers apart.
    offer = "\r\n".join(line for line in chrome_offer().split("\r\n") if "rtp-stream-id" not in line)
    world = World(offer)
    assert world.track.rids == []
    assert "a=simulcast" not in world.answer["sdp"]


def test_a_new_simulcast_subscriber_costs_one_keyframe_request():
    world = World()
    world.publisher.tick(1.0, keys=("f", "h", "q"))
    world.subscribe(1.05, {"preferredRid": "h"})
    assert world.plis() == [SSRCS["h"]]
