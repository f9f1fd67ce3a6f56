"""The SFU end to end without a network: a Chromium-like publisher pushes three simulcast layers
(RID header extensions, RTX with repaired-rid), subscribers pull one layer, switch layers at
keyframes and repair losses with NACKs. Time is driven explicitly."""
from aiortc.rtp import HeaderExtensions, RtpPacket

from appliance.sfu.streams import PACKET_OVERHEAD

from .harness import SSRCS, RTX_SSRCS, START_PICTURE, VP8_KEY, Lab, audio, labels, picture, video


def fields(packet):
    return packet.sequence_number, packet.timestamp, packet.ssrc, packet.payload_type, packet.payload


class World:
    """A publisher of Chrome's offer (mic on mid 0, cam with layers f, h, q on mid 1) and its subscribers."""

    def __init__(self, edit=None):
        self.lab = Lab()
        self.pub = self.lab.endpoint("pub", edit=edit)
        results = self.pub.push(audio("mic", ssrc=3735928559), video("cam", rids=("f", "h", "q")))
        assert [r.get("errorCode") for r in results] == [None, None]
        self.answer = self.pub.sdp
        self.track = self.pub.track("cam")
        self.publisher = self.pub.sender("cam")

    @property
    def sfu(self):
        return self.lab.sfu

    def subscribe(self, now, simulcast=None, rtx=True):
        """A WHEP-style player: its own receive-only video offer."""
        self.lab.at(now)
        sub = self.lab.endpoint("sub")
        results = sub.pull_offering(self.pub, "cam", simulcast=simulcast, rtx=rtx)
        assert results == [{"sessionId": self.pub.id, "trackName": "cam", "mid": "0"}]
        return sub

    def update(self, sub, rid, now):
        self.lab.at(now)
        return sub.update({"location": "remote", "mid": "0", "sessionId": self.pub.id, "trackName": "cam",
                           "simulcast": {"preferredRid": rid}})


def assert_continuous(received):
    seqs = [p.sequence_number for p in received]
    assert [(b - a) & 0xFFFF for a, b in zip(seqs, seqs[1:])] == [1] * (len(seqs) - 1), seqs
    stamps = [p.timestamp for p in received]
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
    answer = world.answer
    assert "a=rid:f recv\r\na=rid:h recv\r\na=rid:q recv\r\na=simulcast:recv f;h;q\r\n" in answer
    assert "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" in answer
    assert "a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id" in answer
    assert [s.rid for s in world.track.streams] == ["f", "h", "q"]
    assert all(s.ssrc is None for s in world.track.streams)
    world.publisher.tick(1.0, keys=("f", "h", "q"))
    assert {s.rid: s.ssrc for s in world.track.streams} == SSRCS
    mic = world.pub.track("mic").streams[0]
    assert world.pub.session.by_ssrc == {**{SSRCS[s.rid]: s for s in world.track.streams}, 3735928559: mic}
    assert world.sfu.ingest.unknown_ssrc == 0
    assert all(s.active(1.5) and not s.active(2.1) for s in world.track.streams)


def test_packets_without_ids_bind_through_their_ssrc_once_known():
    world = World()
    world.publisher.tick(1.0)
    before = world.track.stream("h").octets
    packet = world.publisher.frame_packets("h")[0]
    packet.extensions = HeaderExtensions()
    bare = world.pub.send_rtp(packet, 1.05, transport_cc=False)
    assert world.track.stream("h").octets == before + len(bare) + PACKET_OVERHEAD
    # An unknown SSRC without ids is not guessed into a simulcast track.
    packet.ssrc = 0x12345678
    world.pub.send_rtp(packet, 1.06, transport_cc=False)
    assert world.sfu.ingest.unknown_ssrc == 1


def test_a_subscriber_gets_only_its_preferred_layer_from_a_keyframe_on():
    world = World()
    pub = world.publisher
    pub.tick(1.0, keys=("f", "h", "q"))
    pub.tick(1.03)
    sub = world.subscribe(1.05, {"preferredRid": "h"})
    leg = sub.leg("0")
    assert leg.target is world.track.stream("h") and leg.stream is None
    assert set(world.pub.plis()) == {SSRCS["h"]}  # the new subscriber's keyframe, on its layer only
    assert sub.rtp() == []
    pub.tick(1.066)  # no keyframe yet: nothing
    assert sub.rtp() == []
    pub.tick(1.1, keys=("h",))
    pub.tick(1.133)
    pub.tick(1.166, keys=("f", "q"))
    got = sub.media("0")
    assert labels(got) == ["h3.0", "h3.1", "h4.0", "h4.1", "h5.0", "h5.1"]
    assert got[0].payload[6:6 + len(VP8_KEY)] == VP8_KEY
    assert_continuous(got)
    assert {p.payload_type for p in got} == {96}
    assert "a=ssrc-group:FID" in sub.sdp and f"a=ssrc:{leg.ssrc} cname:" in sub.sdp


def test_a_layer_switch_happens_at_the_new_layers_keyframe_with_continuous_numbers():
    world, pub, sub = receiving("h")
    pub.tick(1.066)
    results = world.update(sub, "q", 1.07)
    assert results == [{"mid": "0", "sessionId": world.pub.id, "trackName": "cam"}]
    assert world.pub.plis()[-1] == SSRCS["q"]
    pub.tick(1.1)  # q's next frame is no keyframe: h goes on
    pub.tick(1.133, keys=("f",))
    pub.tick(1.166, keys=("q",))  # the switch
    pub.tick(1.2, keys=("h",))
    got = sub.media("0")
    # Each tick sends f, h, then q: h's frame 5 still goes out, q's frame 5 starts with a keyframe.
    assert labels(got) == ["h1.0", "h1.1", "h2.0", "h2.1", "h3.0", "h3.1", "h4.0", "h4.1", "h5.0", "h5.1",
                           "q5.0", "q5.1", "q6.0", "q6.1"]
    assert got[10].payload[6:6 + len(VP8_KEY)] == VP8_KEY
    assert 0 < (got[10].timestamp - got[9].timestamp) & 0xFFFFFFFF <= 90000  # the timestamp moves on a little
    assert_continuous(got)
    assert len({p.ssrc for p in got}) == 1  # one SSRC throughout
    assert world.sfu.switcher.counters.layer_switches == 2  # onto h, then onto q
    leg = sub.leg("0")
    assert leg.stream is world.track.stream("q") and leg.target is None
    assert leg not in world.track.stream("h").legs and world.track.stream("q").legs == [leg]


def test_a_pull_answered_by_renegotiate_starts_at_its_layers_keyframe():
    world = World()
    pub = world.publisher
    pub.tick(1.0, keys=("f", "h", "q"))
    world.lab.at(1.01)
    sub = world.lab.endpoint("sub")
    results = sub.pull(world.pub, "cam", simulcast={"preferredRid": "q"}, answer=False)
    assert results[0]["mid"] == "0" and results[0]["simulcast"] == {"preferredRid": "q"}
    pub.tick(1.033, keys=("q",))  # before the answer: nobody to forward to
    world.lab.at(1.04)
    sub.renegotiate()
    leg = sub.leg("0")
    assert leg.target is world.track.stream("q") and leg.subscriber.port_session == sub.port_session
    assert SSRCS["q"] in world.pub.plis()
    pub.tick(1.066, keys=("h",))
    pub.tick(1.1, keys=("q",))
    pub.tick(1.133)
    got = sub.media("0")
    assert labels(got) == ["q3.0", "q3.1", "q4.0", "q4.1"]
    assert_continuous(got)
    sub.nack("0", [got[0].sequence_number], 1.14)
    rtx = sub.rtx("0")
    assert len(rtx) == 1 and rtx[0].payload[2:] == got[0].payload


def test_a_switch_across_the_wrap_of_the_new_layer():
    world, pub, sub = receiving("f")
    world.update(sub, "q", 1.04)
    for i in range(4):  # q's numbers cross 65535 -> 0
        pub.tick(1.066 + i / 30, keys=("q",) if i == 1 else ())
    got = sub.media("0")
    assert labels(got) == ["f1.0", "f1.1", "f2.0", "f2.1", "f3.0", "f3.1", "q3.0", "q3.1", "q4.0", "q4.1",
                           "q5.0", "q5.1"]
    assert pub.seq["q"] < 10  # it did wrap
    assert_continuous(got)


def test_vp8_picture_ids_and_tl0picidx_go_on_across_layer_switches():
    """The harness's layers count their pictures apart, as browsers' do, and h to q goes back: a
    receiver would drop q's keyframe (it decoded past that id) and take q's next frames for
    continuous with h's pictures of the same ids (vp8.py)."""
    world, pub, sub = receiving("h")
    pub.tick(1.066)
    world.update(sub, "q", 1.07)
    pub.tick(1.1, keys=("q",))
    pub.tick(1.133)
    world.update(sub, "f", 1.14)
    pub.tick(1.166, keys=("f",))
    got = sub.media("0")
    # Each tick sends f, h, then q: h's frame 3 still goes out before q's keyframe.
    assert labels(got) == ["h1.0", "h1.1", "h2.0", "h2.1", "h3.0", "h3.1", "q3.0", "q3.1", "q4.0", "q4.1",
                           "f5.0", "f5.1"]
    # The first layer's numbers go out as they are (h's frame 1), then one picture after the other.
    first = START_PICTURE["h"] + 1
    assert [picture(p) for p in got] == [(first + i // 2, (first + i // 2) & 0xFF) for i in range(len(got))]


def test_an_rtx_packet_for_a_packet_the_box_lost_is_unwrapped_and_forwarded():
    world, pub, sub = receiving("h")
    lost = pub.seq["h"] + 1
    pub.send("h", 1.066, lose=(1,))  # the continuation packet of frame h2 is lost on the way in
    pub.tick(1.1, only=("h",))
    assert world.pub.nacks() == [(SSRCS["h"], [lost])]
    pub.send_rtx("h", lost, 1.15)
    got = sub.media("0")
    assert labels(got) == ["h1.0", "h1.1", "h2.0", "h3.0", "h3.1", "h2.1"]
    assert got[-1].sequence_number == (got[2].sequence_number + 1) & 0xFFFF  # in the gap it left
    assert got[-1].timestamp == got[2].timestamp and got[-1].payload_type == 96
    stream = world.track.stream("h")
    assert stream.rtx_ssrc == RTX_SSRCS["h"] and world.pub.session.rtx_by_ssrc == {RTX_SSRCS["h"]: stream}
    cached, original = RtpPacket.parse(stream.cache.get(lost, 1.2)), pub.sent["h", lost]
    # The original header (the extensions are the RTX packet's: repaired-rid, which no leg forwards).
    assert fields(cached) == fields(original) and cached.marker == original.marker
    # A second copy (a late RTX, or a padding probe repeating it) is not forwarded again.
    pub.send_rtx("h", lost, 1.16)
    assert len(sub.media("0")) == len(got)


def test_rtx_copies_of_packets_the_box_has_are_dropped():
    world = World()
    pub = world.publisher
    pub.tick(1.0, keys=("h",), only=("h",))
    sub = world.subscribe(1.01, {"preferredRid": "h"})
    pub.tick(1.033, keys=("h",), only=("h",))
    before = [fields(p) for p in sub.media("0")]
    pub.send_rtx("h", pub.seq["h"] - 1, 1.04)
    assert [fields(p) for p in sub.media("0")] == before and len(before) == 2


def test_a_subscribers_nack_is_answered_from_the_cache_as_rtx():
    world, pub, sub = receiving("h")
    pub.tick(1.066)
    got = sub.media("0")
    leg = sub.leg("0")
    assert leg.rtx_ssrc is not None and f"a=ssrc-group:FID {leg.ssrc} {leg.rtx_ssrc}" in sub.sdp
    wanted = got[1]  # h1.1
    sub.nack("0", [wanted.sequence_number], 1.08)
    rtx = sub.rtx("0")
    assert len(rtx) == 1
    assert rtx[0].payload_type == 97 and rtx[0].timestamp == wanted.timestamp
    assert rtx[0].payload[:2] == wanted.sequence_number.to_bytes(2, "big") and rtx[0].payload[2:] == wanted.payload
    assert world.sfu.repair.counters.retransmitted == 1
    assert world.pub.nacks() == []  # nothing went to the publisher


def test_a_retransmission_after_a_switch_carries_the_picture_as_renumbered():
    world, pub, sub = receiving("h")
    world.update(sub, "q", 1.04)
    pub.tick(1.066, keys=("q",))
    got = sub.media("0")
    assert labels(got) == ["h1.0", "h1.1", "h2.0", "h2.1", "q2.0", "q2.1"]
    assert picture(got[-1]) == tuple(n + 1 for n in picture(got[-3])) != picture(pub.sent["q", pub.seq["q"] - 1])
    sub.nack("0", [got[-1].sequence_number], 1.08)
    (rtx,) = sub.rtx("0")
    assert rtx.payload[2:] == got[-1].payload


def test_without_rtx_the_answer_is_the_packet_again():
    world = World()
    pub = world.publisher
    pub.tick(1.0, keys=("h",), only=("h",))
    sub = world.subscribe(1.01, {"preferredRid": "h"}, rtx=False)
    pub.tick(1.033, keys=("h",), only=("h",))
    first = sub.media("0")[0]
    sub.nack("0", [first.sequence_number], 1.05)
    assert fields(sub.media("0")[-1]) == fields(first) and len(sub.rtp()) == 3


def test_a_lost_packet_is_nacked_upstream_once_whatever_the_number_of_subscribers():
    world = World()
    pub = world.publisher
    pub.tick(1.0, keys=("f", "h", "q"))
    subs = [world.subscribe(1.01, {"preferredRid": "h"}), world.subscribe(1.012, {"preferredRid": "h"})]
    pub.tick(1.033, keys=("h",))
    lost = pub.seq["h"]
    pub.send("h", 1.066, lose=(0,))  # the start of frame h2
    for sub in subs:
        got = sub.media("0")
        assert labels(got) == ["h1.0", "h1.1", "h2.1"]
        gap = (got[1].sequence_number + 1) & 0xFFFF
        sub.nack("0", [gap], 1.07)
        sub.nack("0", [gap], 1.075)
    pub.tick(1.1)
    assert world.pub.nacks() == [(SSRCS["h"], [lost])]
    assert world.sfu.repair.counters.nacked_upstream == 1 and world.sfu.repair.counters.not_cached == 4
    pub.send_rtx("h", lost, 1.11)
    for sub in subs:
        got = sub.media("0")
        assert labels(got) == ["h1.0", "h1.1", "h2.1", "h3.0", "h3.1", "h2.0"]
        assert got[-1].sequence_number == (got[1].sequence_number + 1) & 0xFFFF
    # Once recovered, a NACK of it is answered from the cache.
    sub = subs[0]
    sub.nack("0", [sub.media("0")[-1].sequence_number], 1.13)
    assert sub.rtx("0")[-1].payload[2:] == sub.media("0")[-1].payload
    assert world.pub.nacks() == [(SSRCS["h"], [lost])]


def test_an_unanswered_upstream_nack_is_retried_after_a_round_trip_not_per_packet():
    world = World()
    pub = world.publisher
    pub.tick(1.0, keys=("h",), only=("h",))
    lost = pub.seq["h"]
    pub.send("h", 1.02, lose=(0,))
    for i in range(5):  # packets in the next 0.1 s: no repeat
        pub.tick(1.03 + i * 0.02, only=("h",))
    assert world.pub.nacks() == [(SSRCS["h"], [lost])]
    pub.tick(1.2, only=("h",))  # 1.5 round trips (initially 0.1 s) later
    assert world.pub.nacks() == [(SSRCS["h"], [lost])] * 2


def test_simulcast_declared_without_the_rid_extension():
    # An offer with a=simulcast but no rid extmap: the box cannot tell the layers apart.
    world = World(edit=lambda text: "\r\n".join(line for line in text.split("\r\n") if "rtp-stream-id" not in line))
    assert world.track.rids == []
    assert "a=simulcast" not in world.answer


def test_a_new_simulcast_subscriber_costs_one_keyframe_request():
    world = World()
    world.publisher.tick(1.0, keys=("f", "h", "q"))
    world.subscribe(1.05, {"preferredRid": "h"})
    assert world.pub.plis() == [SSRCS["h"]]
