"""The SFU core through the lab (harness.py), as its clients see it: the SDP it gives them and the
packets it sends them. Push, pull (SFU offer or client offer), renegotiation, closing, repointing,
keyframe requests, NACK/RTX, the RTCP of its timers and the idle sweep."""
import pytest
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPsfbPacket

from appliance.sfu.errors import SfuError
from appliance.sfu.sfu import IDLE_TIMEOUT

from .harness import VP8_KEY, Lab, audio, labels, picture, video


def call(pub_tracks=(audio("mic"), video("cam")), pulled=("cam", "mic"), connect=True):
    """A publisher of `pub_tracks`, a subscriber that pulled `pulled` (the SFU offered), both connected."""
    lab = Lab(now=10.0)
    pub, sub = lab.endpoint("pub"), lab.endpoint("sub")
    pub.push(*pub_tracks)
    sub.pull(pub, *pulled)
    if connect:
        pub.connect()
        sub.connect()
    return lab, pub, sub


def continuous(packets):
    seqs = [p.sequence_number for p in packets]
    return [(b - a) & 0xFFFF for a, b in zip(seqs, seqs[1:])] == [1] * (len(seqs) - 1)


# --- push ------------------------------------------------------------------------------------------


def test_a_push_is_answered_receive_only_and_publishes_its_tracks():
    lab = Lab()
    pub = lab.endpoint("pub")
    results = pub.push(audio("mic"), video("cam"))
    assert results == [{"trackName": "mic", "mid": "0", "kind": "audio"},
                       {"trackName": "cam", "mid": "1", "kind": "video"}]
    answer = pub.description
    assert [(m.kind, m.direction, m.rtp.muxId) for m in answer.media] == [("audio", "recvonly", "0"),
                                                                          ("video", "recvonly", "1")]
    assert "a=ice-lite" in pub.sdp and answer.media[0].dtls.role == "server"  # a=setup:passive
    assert [(c.ip, c.port) for c in answer.media[0].ice_candidates] == [("203.0.113.5", 40000)]
    assert [c.mimeType for c in answer.media[1].rtp.codecs][:1] == ["video/VP8"]
    port = pub.port_session
    assert (port.remote_ufrag, port.server, port.controlling) == (pub.ufrag, True, False)
    assert [t["status"] for t in pub.describe()["tracks"]] == ["active", "active"]


def test_a_repeated_track_name_is_refused_per_item():
    lab = Lab()
    pub = lab.endpoint("pub")
    pub.push(audio("mic"))
    (result,) = pub.push(audio("mic"))
    assert result["errorCode"] == "repeated_local_track_error" and result["mid"] == ""


def test_auto_discover_names_every_sending_section():
    lab = Lab()
    pub = lab.endpoint("pub")
    results = pub.push(audio("mic"), video("cam"), items=[], auto_discover=True)
    assert [(r["mid"], r["kind"]) for r in results] == [("0", "audio"), ("1", "video")]
    assert all(len(r["trackName"]) == 32 for r in results)


def test_the_sfu_offers_to_receive_a_track_and_publishes_it_on_the_answer():
    lab = Lab()
    pub, sub = lab.endpoint("pub"), lab.endpoint("sub")
    results = pub.offer_push(video("cam"))
    assert results == [{"trackName": "cam", "mid": "0"}]
    assert pub.description.media[0].direction == "recvonly"
    pub.connect()
    sub.pull(pub, "cam")
    sub.connect()
    camera = pub.sender("cam")
    camera.send(key=True)
    assert labels(sub.media("0")) == ["0.0", "0.1"]
    assert sub.media("0")[0].payload[6:6 + len(VP8_KEY)] == VP8_KEY


# --- pull ------------------------------------------------------------------------------------------


def test_a_pull_forwards_the_publishers_packets_on_the_subscribers_ssrc_and_payload_types():
    lab, pub, sub = call()
    camera, mic = pub.sender("cam"), pub.sender("mic")
    camera.send(key=True)
    camera.send()
    mic.send()
    got = sub.media("0")
    assert labels(got) == ["0.0", "0.1", "1.0", "1.1"]
    assert [p.payload for p in got] == [camera.sent[None, seq].payload for seq in range(3000, 3004)]
    vp8 = next(c.payloadType for c in sub.description.media[0].rtp.codecs if c.mimeType == "video/VP8")
    assert {p.payload_type for p in got} == {vp8} and continuous(got)
    assert [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in zip(got, got[1:])] == [0, 3000, 0]
    # The publisher's own extensions (mid, transport-wide numbers) end at the SFU; the leg numbers its own.
    assert all(p.extensions.mid is None for p in got)
    assert [p.extensions.transport_sequence_number for p in sub.rtp()] == [1, 2, 3, 4, 5]
    assert labels(sub.media("1")) == ["opus0.0"]


def test_the_audio_level_is_forwarded_under_the_subscribers_id_and_reported():
    lab, pub, sub = call()
    mic = pub.sender("mic")
    mic.level = 42
    mic.send()
    (packet,) = sub.media("1")
    assert packet.extensions.audio_level == (True, 42)
    assert next(t for t in pub.describe()["tracks"] if t["trackName"] == "mic")["audioLevel"] == -42


def test_a_pull_into_the_clients_own_offer():
    lab = Lab()
    pub, player = lab.endpoint("pub"), lab.endpoint("player")
    pub.push(video("cam"))
    results = player.pull_offering(pub, "cam")
    assert results == [{"sessionId": pub.id, "trackName": "cam", "mid": "0"}]
    media = player.description.media[0]
    assert media.direction == "sendonly" and player.rtx_ssrc("0") is not None
    pub.sender("cam").send(key=True)
    assert labels(player.media("0")) == ["0.0", "0.1"]


def test_a_third_party_session_controls_ice_toward_the_client():
    lab = Lab()
    pub, relay = lab.endpoint("pub"), lab.endpoint("relay", thirdparty=True)
    pub.push(video("cam"))
    relay.pull_offering(pub, "cam")
    assert "a=ice-lite" not in relay.sdp
    assert relay.port_session.controlling and relay.port_session.checks == [(relay.ufrag, [])]


def test_a_missing_track_is_an_item_error():
    lab = Lab()
    pub, sub = lab.endpoint("pub"), lab.endpoint("sub")
    pub.push(video("cam"))
    (result,) = sub.pull(pub, "nope")
    assert result["errorCode"] == "not_found_track_error" and sub.pending_offer is None


def test_connecting_asks_the_publisher_for_a_keyframe_for_each_video_leg():
    lab, pub, sub = call(connect=False)
    pub.connect()
    pub.clear()
    sub.connect()
    assert pub.plis() == [pub.sender("cam").ssrc]


# --- renegotiation ---------------------------------------------------------------------------------


def test_an_sfu_offer_waits_for_its_answer_and_nothing_is_forwarded_before():
    lab = Lab()
    pub, sub = lab.endpoint("pub"), lab.endpoint("sub")
    pub.push(video("cam"), video("screen"))
    sub.pull(pub, "cam", answer=False)
    with pytest.raises(SfuError) as refused:
        sub.pull(pub, "screen")
    assert (refused.value.status, refused.value.code) == (406, "invalid_session_description")
    camera = pub.sender("cam")
    camera.send(key=True)
    assert sub.rtp() == []
    sub.renegotiate()
    camera.send(key=True)
    assert labels(sub.media("0")) == ["1.0", "1.1"]
    with pytest.raises(SfuError) as nothing:
        sub.sfu.renegotiate(sub.session, sub.answer(sub.sdp), lab.now)
    assert nothing.value.status == 400


def test_an_answer_that_rejects_a_pulled_section_ends_it():
    lab = Lab()
    pub = lab.endpoint("pub")
    sub = lab.endpoint("sub", edit=lambda text: text.replace("m=video 9 ", "m=video 0 "))
    pub.push(video("cam"))
    sub.pull(pub, "cam")
    assert [t["status"] for t in sub.describe()["tracks"]] == ["inactive"]
    pub.sender("cam").send(key=True)
    assert sub.rtp() == []


def test_the_port_learns_the_clients_ice_and_dtls_from_its_first_description():
    lab = Lab()
    sub = lab.endpoint("sub")
    pub = lab.endpoint("pub")
    pub.push(audio("mic"))
    sub.pull(pub, "mic", answer=False)
    port = sub.port_session
    assert port.remote_ufrag is None and port.server is None  # the SFU offered actpass
    sub.renegotiate()
    assert port.remote_ufrag == sub.ufrag and port.server is True  # Chrome answers a=setup:active


# --- closing ---------------------------------------------------------------------------------------


def test_a_publisher_closing_its_track_ends_its_subscribers_legs():
    lab, pub, sub = call()
    camera = pub.sender("cam")
    camera.send(key=True)
    leg_ssrc = sub.ssrc("0")
    assert pub.close("1") == [{"mid": "1"}]
    assert pub.description.media[1].port == 0
    assert sub.byes() == [leg_ssrc]
    assert [t["status"] for t in sub.describe()["tracks"]] == ["inactive", "active"]
    before = len(sub.rtp())
    camera.send(key=True)
    assert len(sub.rtp()) == before
    other = lab.endpoint("other")
    assert other.pull(pub, "cam")[0]["errorCode"] == "not_found_track_error"
    assert pub.close("1")[0]["errorCode"] == "close_track_error"


def test_a_subscriber_closing_a_pulled_track_stops_it_and_its_m_line_is_reused():
    lab, pub, sub = call()
    camera = pub.sender("cam")
    camera.send(key=True)
    assert sub.close("0") == [{"mid": "0"}]
    before = len(sub.rtp())
    camera.send(key=True)
    assert len(sub.rtp()) == before
    # The next pull takes the rejected m-line, under a new mid: the description does not grow.
    assert sub.pull(pub, "cam")[0]["mid"] == "2"
    assert [m.rtp.muxId for m in sub.description.media] == ["2", "1"]
    camera.send(key=True)
    assert labels(sub.media("2")) == ["2.0", "2.1"]


def test_a_pushed_m_line_recycled_by_the_browser_keeps_the_browsers_order():
    """Chrome gives a stopped transceiver's m-line to the next one under a new mid; the SFU's next
    offer to that session lists the m-lines in the browser's order (Chrome refuses any other)."""
    lab = Lab()
    pub, other = lab.endpoint("pub"), lab.endpoint("other")
    other.push(audio("voice"))
    pub.push(audio("mic"), video("cam"))
    pub.close("1")
    assert pub.push(video("screen")) == [{"trackName": "screen", "mid": "2", "kind": "video"}]
    assert [m.rtp.muxId for m in pub.description.media] == ["0", "2"]
    pub.pull(other, "voice")
    assert [m.rtp.muxId for m in pub.description.media] == ["0", "2", "3"]


def test_a_forced_close_needs_no_renegotiation():
    lab, pub, sub = call()
    assert sub.close("0", force=True) == [{"mid": "0"}]
    assert [t["status"] for t in sub.describe()["tracks"]] == ["inactive", "active"]


def test_a_session_that_ends_leaves_its_subscribers_a_bye():
    lab, pub, sub = call()
    pub.leave()
    assert pub.port_session.removed and pub.id not in lab.sfu.sessions
    assert sorted(sub.byes()) == sorted([sub.ssrc("0"), sub.ssrc("1")])


# --- update ----------------------------------------------------------------------------------------


def test_update_points_a_pulled_leg_at_another_track_with_continuous_numbers():
    lab, pub, sub = call(pub_tracks=(video("cam"),), pulled=("cam",))
    pub2 = lab.endpoint("pub2")
    pub2.push(video("cam"))
    pub2.connect()
    pub.sender("cam").send(key=True)
    pub2.clear()
    results = sub.update({"location": "remote", "mid": "0", "sessionId": pub2.id, "trackName": "cam"})
    assert results == [{"mid": "0", "sessionId": pub2.id, "trackName": "cam"}]
    assert pub2.plis() == [pub2.sender("cam").ssrc]
    pub.sender("cam").send()  # no longer forwarded
    pub2.sender("cam").send(key=True)
    got = sub.media("0")
    assert labels(got) == ["0.0", "0.1", "0.0", "0.1"] and continuous(got)
    # As sent, but for its VP8 picture numbers: they continue the first track's (appliance/sfu/vp8.py).
    assert got[2].payload[5:] == pub2.sender("cam").sent[None, 3000].payload[5:]
    assert picture(got[2]) == tuple(n + 1 for n in picture(got[1]))


# --- keyframes and retransmissions ------------------------------------------------------------------


def test_a_subscribers_pli_reaches_the_publisher_on_the_stream_it_forwards():
    lab, pub, sub = call()
    pub.clear()
    lab.advance(1.0)
    sub.pli("0")
    assert pub.plis() == [pub.sender("cam").ssrc]
    # A keyframe request for a leg of another session is not this session's to make.
    intruder = lab.endpoint("intruder")
    intruder.pull(pub, "cam")
    pub.clear()
    lab.advance(1.0)
    intruder.send_rtcp(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=sub.ssrc("0")))
    assert pub.plis() == []


def test_a_subscribers_nack_is_answered_from_the_cache_on_its_rtx_stream():
    lab, pub, sub = call()
    camera = pub.sender("cam")
    camera.send(key=True)
    camera.send()
    wanted = sub.media("0")[1]
    sub.nack("0", [wanted.sequence_number])
    (rtx,) = sub.rtx("0")
    assert rtx.payload == wanted.sequence_number.to_bytes(2, "big") + wanted.payload
    assert rtx.timestamp == wanted.timestamp
    apt = {c.payloadType: c.parameters.get("apt") for c in sub.description.media[0].rtp.codecs}
    assert apt[rtx.payload_type] == wanted.payload_type
    # Asked again within a round trip: the first copy may still be on its way.
    sub.nack("0", [wanted.sequence_number])
    assert len(sub.rtx("0")) == 1 and lab.sfu.repair.counters.retransmitted == 1
    assert pub.nacks() == []


def test_a_loss_on_the_way_in_is_nacked_upstream_and_its_retransmission_forwarded():
    lab, pub, sub = call()
    camera = pub.sender("cam")
    camera.send(key=True)
    lost = camera.seq[None]
    camera.send(lose=(0,))
    camera.send()
    assert pub.nacks() == [(camera.ssrc, [lost])]
    camera.send_rtx(None, lost)  # its RTX SSRC is known from the offer's FID group
    got = sub.media("0")
    assert labels(got) == ["0.0", "0.1", "1.1", "2.0", "2.1", "1.0"]
    assert got[-1].sequence_number == (got[1].sequence_number + 1) & 0xFFFF


def test_a_packet_transport_feedback_shows_lost_is_resent_without_a_nack():
    lab, pub, sub = call(pub_tracks=(video("cam"),), pulled=("cam",))
    camera = pub.sender("cam")
    camera.send(key=True)
    camera.send()
    first = sub.media("0")[0]
    sub.transport_report(lost={first.extensions.transport_sequence_number})
    (rtx,) = sub.rtx("0")
    assert rtx.payload == first.sequence_number.to_bytes(2, "big") + first.payload
    assert lab.sfu.repair.counters.resent_unasked == 1


def test_a_subscribers_receiver_report_sets_its_legs_loss():
    lab, pub, sub = call()
    sub.receiver_report("0", fraction_lost=64)
    assert sub.leg("0").loss == 0.25


# --- timers -----------------------------------------------------------------------------------------


def test_reports_go_out_on_the_timer():
    lab, pub, sub = call()
    camera = pub.sender("cam")
    camera.send(key=True)
    camera.send()
    lab.run_timers(11.0)
    (report,) = [r for r in sub.sender_reports() if r.ssrc == sub.ssrc("0")]
    assert report.sender_info.packet_count == 4
    assert report.sender_info.rtp_timestamp == sub.media("0")[-1].timestamp
    (receiver,) = pub.receiver_reports()
    assert [b.ssrc for b in receiver.reports] == [camera.ssrc]
    feedback = pub.transport_feedback()
    assert [seq for report in feedback for seq, _ in report.packets] == [1, 2, 3, 4]


def test_a_session_that_never_connects_is_swept():
    lab, pub, sub = call(connect=False)
    lab.run_timers(10.0 + IDLE_TIMEOUT + 5.0)
    assert lab.sfu.sessions == {} and pub.port_session.removed and sub.port_session.removed


def test_a_track_without_media_is_closed_after_the_idle_timeout():
    lab, pub, sub = call(pub_tracks=(video("cam"),), pulled=("cam",))
    pub.sender("cam").send(key=True)
    lab.run_timers(10.0 + IDLE_TIMEOUT + 5.0)
    assert [t["status"] for t in pub.describe()["tracks"]] == ["inactive"]
    assert sub.byes() == [sub.ssrc("0")]
    assert pub.id in lab.sfu.sessions
