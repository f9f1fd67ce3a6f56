"""Failover (issue 19) in the cluster's own harness: a connected PeerConnection whose media reaches
another box goes on there, with no new offer or answer: handed over with a fresh checkpoint by a
live box, or rebuilt from what the store's watches brought when its box died or stays silent. The
SRTP side (keys, rollover counters, SRTCP indices against real libsrtp) is
tests/unit/rtc/test_continuation.py; real browsers across real boxes are
tests/integration/test_failover_lab.py."""
from __future__ import annotations

import base64
import json

import pytest
from aiortc.rtp import RtcpPacket, RtcpPsfbPacket

from appliance.cluster.seal import Sealer, Unsealed
from appliance.cluster.store import SESSIONS
from appliance.sfu.continuation import MARGIN, RTCP_RATE, SEQ_RATE
from appliance.sfu.errors import SfuError

from ..sfu.harness import labels, video
from .harness import STORE_SEALER, Cluster
from .test_handover import move


def call(cluster: Cluster, pub_box: str = "a", sub_box: str = "c"):
    """A connected publisher of "cam" and a connected subscriber of it, pictures flowing."""
    pub = cluster[pub_box].endpoint("pub")
    pub.push(video("cam"))
    pub.connect()
    sub = cluster[sub_box].endpoint("sub")
    mid = sub.pull(pub, "cam")[0]["mid"]
    sub.connect()
    cluster.pump()
    pub.sender("cam").send(key=True)
    cluster.pump()
    assert labels(sub.media(mid)) == ["0.0", "0.1"]
    return pub, sub, mid


def checkpointed(cluster: Cluster) -> None:
    for box in cluster.boxes.values():
        if box.alive:
            box.checkpoints.tick(cluster.now)


def test_a_live_box_hands_a_connected_session_over_with_its_media_and_says_nothing_to_the_client():
    cluster = Cluster("a", "b", "c")
    a, b, c = cluster["a"], cluster["b"], cluster["c"]
    pub, sub, mid = call(cluster)
    old = pub.port_session
    highest = pub.session.tracks["cam"].streams[0].stats.max_seq  # the publisher's latest, as a saw it
    b.handover.stray("udp", b"srtp", pub.address, cluster.now)  # the router moved the client's flow to b
    cluster.pump()
    assert pub.id not in a.lab.sfu.sessions and old.removed and old.quietly  # no close_notify
    taken = b.lab.sfu.sessions[pub.id]
    keys, inbound, outbound, rtcp_sent = taken.port_session.resumed
    assert keys == old.keys and taken.port_session.addr == pub.address
    assert inbound == {pub.sender("cam").ssrc: highest}  # the publisher's stream, where a had it
    assert (b.handover.counters.carried_on, a.handover.counters.given) == (1, 1)
    assert b.reinjected == [("udp", b"srtp", pub.address)]
    # b asked the publisher for a picture at once, under a feedback SSRC its SRTCP never used.
    plis = [p for data in taken.port_session.rtcp for p in RtcpPacket.parse(data) if isinstance(p, RtcpPsfbPacket)]
    assert {p.media_ssrc for p in plis} == {pub.sender("cam").ssrc}
    assert plis[0].ssrc == taken.rtcp_ssrc and taken.rtcp_ssrc not in old.rtcp_sent
    move(pub, b)
    pub.sender("cam").send(key=True)
    cluster.pump()
    assert labels(sub.media(mid)) == ["0.0", "0.1", "1.0", "1.1"]
    assert c.trunks.describe()["receiving"][0]["from"] == "b"


def test_when_the_box_dies_another_carries_the_session_on_from_what_the_watches_brought():
    cluster = Cluster("a", "b", "c")
    b = cluster["b"]
    pub, sub, mid = call(cluster)
    checkpointed(cluster)
    keys = pub.port_session.keys
    cluster.kill("a")
    b.handover.stray("udp", b"srtp", pub.address, cluster.now)
    assert cluster.requests == [] or all(node != "a" for node, _, _ in cluster.requests)  # a is not asked
    taken = b.lab.sfu.sessions[pub.id]  # at once: nothing waited for the store
    # Generation 2: its box held it first, and the box the client's packets reach outranks any other
    # that carried it on unasked.
    assert taken.port_session.resumed[0] == keys and taken.generation == 2
    cluster.pump()  # b tells the boxes that received the tracks from a: c re-attaches at b
    move(pub, b)
    pub.sender("cam").send(key=True)
    cluster.pump()
    assert labels(sub.media(mid)) == ["0.0", "0.1", "1.0", "1.1"]
    assert cluster["c"].trunks.describe()["receiving"][0]["from"] == "b"
    assert cluster.sessions[pub.id].owner == "b" and cluster.sessions[pub.id].generation == 2


def test_a_subscriber_carried_on_sees_its_numbers_jump_past_what_the_dead_box_can_have_sent():
    cluster = Cluster("a", "b", "c")
    a, b = cluster["a"], cluster["b"]
    pub, sub, mid = call(cluster, pub_box="c", sub_box="a")
    for _ in range(3):
        pub.sender("cam").send()
        cluster.pump()
    before = sub.media(mid)
    a.lab.send_reports()
    reports = [p.ssrc for p in sub.sender_reports()]
    checkpointed(cluster)
    leg = a.lab.sfu.sessions[sub.id].legs[sub.ssrc(mid)]
    at_checkpoint = leg.last_seq
    cluster.advance(1.0)  # a sends on for a second after its checkpoint, then dies
    cluster.kill("a")
    b.handover.stray("udp", b"srtcp", sub.address, cluster.now)
    cluster.pump()
    move(sub, b)
    _, _, outbound, rtcp_sent = sub.port_session.resumed
    jump = int((1.0 + MARGIN) * SEQ_RATE)
    assert outbound[sub.ssrc(mid)] == leg.out_index + jump  # the SRTP index b protects from
    # Its sender reports' SRTCP index walked past all a can have sent.
    assert rtcp_sent == {sub.ssrc(mid): reports.count(sub.ssrc(mid)) + int((1.0 + MARGIN) * RTCP_RATE)}
    pub.sender("cam").send()  # not decodable for a receiver that lost what came before: held back
    pub.sender("cam").send(key=True)
    cluster.pump()
    after = sub.media(mid)
    assert labels(after) == ["5.0", "5.1"]
    assert after[0].ssrc == before[-1].ssrc
    assert (after[0].sequence_number - at_checkpoint) & 0xFFFF == jump + 1
    assert after[0].timestamp != before[-1].timestamp


def test_a_subscriber_taken_after_its_publisher_pulls_from_the_new_root_before_the_store_says_so():
    cluster = Cluster("a", "b", "c")
    b, c = cluster["b"], cluster["c"]
    pub, sub, mid = call(cluster, pub_box="a", sub_box="a")  # both on the box that dies
    checkpointed(cluster)
    cluster.kill("a")
    cluster.tracks_stalled = True  # the tracks bucket elects a new leader: c's record of cam waits
    c.handover.stray("udp", b"srtp", pub.address, cluster.now)
    cluster.pump()  # c tells b that cam's root is c now; b receives nothing of it yet
    b.handover.stray("udp", b"srtcp", sub.address, cluster.now)
    cluster.pump()
    assert b.trunks.describe()["receiving"][0]["from"] == "c"
    move(pub, c)
    move(sub, b)
    pub.sender("cam").send(key=True)
    cluster.pump()
    assert labels(sub.media(mid)) == ["1.0", "1.1"]


def test_a_remote_track_re_attaches_where_the_store_says_its_root_moved():
    cluster = Cluster("a", "b", "c")
    b, c = cluster["b"], cluster["c"]
    pub, sub, mid = call(cluster, pub_box="a", sub_box="b")
    checkpointed(cluster)
    cluster.kill("a")
    cluster.silent.add("b")  # c's word does not reach b: the store's record does
    c.handover.stray("udp", b"srtp", pub.address, cluster.now)
    cluster.pump()
    cluster.silent.clear()
    cluster.pump()
    assert b.trunks.describe()["receiving"][0]["from"] == "c"
    move(pub, c)
    pub.sender("cam").send(key=True)
    cluster.pump()
    assert labels(sub.media(mid)) == ["0.0", "0.1", "1.0", "1.1"]


def test_a_gone_boxs_other_sessions_are_carried_on_before_their_clients_speak():
    cluster = Cluster("a", "b", "c")
    b, c = cluster["b"], cluster["c"]
    pub, sub, mid = call(cluster, pub_box="a", sub_box="a")
    checkpointed(cluster)
    cluster.kill("a")
    c.handover.stray("udp", b"srtp", pub.address, cluster.now)  # only the publisher's client speaks
    cluster.pump()
    carrier = next(box for box in (b, c) if sub.id in box.lab.sfu.sessions)  # rendezvous hashing's pick
    assert carrier.lab.sfu.sessions[sub.id].port_session.addr == sub.address
    move(pub, c)
    move(sub, carrier)
    pub.sender("cam").send(key=True)
    cluster.pump()
    assert labels(sub.media(mid)) == ["1.0", "1.1"]  # sent before the subscriber's client said anything
    # Its packets reach the other box: that box asks the carrier, which every box heard of.
    other = c if carrier is b else b
    other.handover.stray("udp", b"srtcp", sub.address, cluster.now)
    cluster.pump()
    assert sub.id in other.lab.sfu.sessions and sub.id not in carrier.lab.sfu.sessions
    assert carrier.handover.counters.given == 1


def test_of_two_boxes_that_carried_one_session_on_the_one_its_client_reaches_keeps_it_at_once():
    cluster = Cluster("a", "b", "c")
    b, c = cluster["b"], cluster["c"]
    pub, _, _ = call(cluster, sub_box="b")
    checkpointed(cluster)
    cluster.kill("a")
    cluster.sessions_stalled = True  # the sessions bucket elects a leader: only words over NATS core get through
    for box in (b, c):
        box.handover.box_lost("a", cluster.now)  # both heard a is gone: one of them carries pub on unasked
    carrier, other = (b, c) if pub.id in b.lab.sfu.sessions else (c, b)
    assert pub.id in carrier.lab.sfu.sessions
    other.handover.carriers.clear()  # the word that the carrier carries it is still on its way
    other.handover.stray("udp", b"srtp", pub.address, cluster.now)  # the client's packets reach the other
    cluster.pump()
    assert pub.id in other.lab.sfu.sessions and pub.id not in carrier.lab.sfu.sessions
    assert carrier.handover.counters.lost == 1


def test_a_box_that_handed_its_publisher_on_pulls_the_track_from_the_new_root_before_the_store_says_so():
    cluster = Cluster("a", "b", "c")
    b, c = cluster["b"], cluster["c"]
    pub, sub, _ = call(cluster, pub_box="b", sub_box="a")
    checkpointed(cluster)
    cluster.tracks_stalled = True  # c's record of cam waits for the bucket's new leader
    c.handover.stray("udp", b"srtp", pub.address, cluster.now)  # the routers moved the publisher's flow to c
    cluster.pump()
    cluster.kill("a")
    b.handover.stray("udp", b"srtcp", sub.address, cluster.now)  # and the subscriber's, from dead a, to b
    cluster.pump()
    assert sub.id in b.lab.sfu.sessions and b.handover.counters.refused == 0
    assert b.trunks.describe()["receiving"][0]["from"] == "c"


def test_a_stale_record_of_the_old_owner_does_not_take_the_session_back():
    cluster = Cluster("a", "b", "c")
    a, b = cluster["a"], cluster["b"]
    pub, _, _ = call(cluster, sub_box="c")
    checkpointed(cluster)
    stale = cluster.sessions[pub.id].encode()
    cluster.kill("a")
    b.handover.stray("udp", b"srtp", pub.address, cluster.now)
    cluster.pump()
    a.write(SESSIONS, pub.id, stale)  # a's last write, delivered late by the watch
    cluster.pump()
    assert pub.id in b.lab.sfu.sessions and b.handover.counters.lost == 0


def test_a_live_box_that_does_not_answer_lets_go_once_the_taker_writes_the_session():
    cluster = Cluster("a", "b", "c")
    a, b = cluster["a"], cluster["b"]
    pub, _, _ = call(cluster)
    checkpointed(cluster)
    cluster.silent.add("a")  # cut off: its membership has not expired yet
    b.handover.stray("udp", b"srtp", pub.address, cluster.now)
    cluster.pump()
    assert pub.id in b.lab.sfu.sessions and pub.id not in a.lab.sfu.sessions
    assert a.handover.counters.lost == 1 and a.lab.port.sessions[0].quietly


def test_media_from_an_address_no_session_has_costs_nothing():
    cluster = Cluster("a", "b")
    b = cluster["b"]
    b.handover.stray("udp", b"srtp", ("203.0.113.9", 1234), cluster.now)
    assert cluster.requests == [] and b.handover.counters.asked == 0


def test_nothing_the_store_holds_of_a_session_opens_without_the_cluster_secret():
    cluster = Cluster("a", "b")
    pub, _, _ = call(cluster, sub_box="b")
    checkpointed(cluster)
    sealed = cluster["b"].checkpoints.sealed[pub.id]
    keys = pub.port_session.keys
    for secret in (keys.rx, keys.tx, base64.b64encode(keys.rx), base64.b64encode(keys.tx)):
        assert secret not in sealed
    with pytest.raises(Unsealed):
        Sealer("another cluster's secret", "store").open(sealed, f"edgecall-media/{pub.id}")
    opened = json.loads(STORE_SEALER.open(sealed, f"edgecall-media/{pub.id}"))
    assert base64.b64decode(opened["keys"]["rx"]) == keys.rx
    # The session's record names its app and box; its ICE ufrag and its client's address are tags.
    record = json.loads(cluster.sessions[pub.id].encode())
    shown = json.dumps({k: v for k, v in record.items() if k != "state"})
    assert pub.session.ufrag not in shown and pub.address[0] not in shown and pub.session.pwd not in shown


def test_a_session_carried_on_refuses_data_channels_it_could_never_open():
    """Its SCTP association rode the DTLS association that stayed on the failed box: channels asked
    of it would stay "connecting" forever, so the API says why and where to open them instead."""
    cluster = Cluster("a", "b", "c")
    b = cluster["b"]
    pub, _, _ = call(cluster)
    b.handover.stray("udp", b"srtp", pub.address, cluster.now)
    cluster.pump()
    move(pub, b)
    for ask in (lambda: pub.new_channels({"location": "local", "dataChannelName": "chat"}), pub.establish):
        with pytest.raises(SfuError) as refused:
            ask()
        assert refused.value.code == "transport_unavailable_error" and "new session" in str(refused.value)
    assert not list(b.lab.sfu.sessions[pub.id].datachannels)
