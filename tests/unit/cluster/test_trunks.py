"""Cascading trees per track (appliance/cluster/trunks.py) between boxes of an in-memory cluster with
real SRTP on the trunks: one copy per (track, box), repair per hop, keyframes aggregated per hop, the
tree deepening past the fan-out and repairing itself when a box dies, and the track's end reaching
every box."""
from __future__ import annotations

from appliance.cluster.trunk_port import TrunkPort
from appliance.cluster.trunks import GRACE, LAYER_GRACE, ORPHANED_FOR

from ..sfu.harness import audio, label, labels, video
from .harness import SECRET, STORE_SEALER, Cluster


def published(cluster: Cluster, box: str = "a", name: str = "cam", rids=()):
    pub = cluster[box].endpoint("pub")
    pub.push(video(name, rids=rids))
    pub.connect()
    return pub


def subscribed(cluster: Cluster, box: str, pub, name: str = "cam", who: str = "sub", simulcast=None):
    sub = cluster[box].endpoint(who)
    results = sub.pull(pub, name, simulcast=simulcast)
    assert "errorCode" not in results[0], results
    sub.connect()
    cluster.pump()
    return sub, results[0]["mid"]


def test_a_track_published_on_one_box_reaches_subscribers_on_another_as_one_copy():
    cluster = Cluster("a", "b")
    pub = published(cluster)
    subs = [subscribed(cluster, "b", pub, who=f"sub{i}") for i in range(3)]
    cam = pub.sender("cam")
    for frame in range(5):
        cam.send(key=frame == 0)
        cluster.pump()
    for sub, mid in subs:
        assert labels(sub.media(mid)) == [f"{n}.{p}" for n in range(5) for p in (0, 1)]
    # One copy crossed the backbone for three subscribers (and keyframe requests went upstream once).
    assert cluster["a"].sent_on_trunks == 10
    assert cluster["b"].trunks.describe()["receiving"] == [
        {"session": pub.id, "track": "cam", "from": "a", "legs": 3}]
    assert cluster["a"].trunks.describe()["sending"] == [{"session": pub.id, "track": "cam", "to": ["b"]}]


def test_a_track_no_box_publishes_is_not_found_and_another_apps_track_is_not_seen():
    cluster = Cluster("a", "b")
    pub = published(cluster)
    stranger = cluster["b"].endpoint("stranger", app="other-app")
    assert stranger.pull(pub, "cam")[0]["errorCode"] == "not_found_track_error"
    sub = cluster["b"].endpoint("sub")
    assert sub.pull(pub, "nothing")[0]["errorCode"] == "not_found_track_error"


def test_a_subscribers_nack_is_answered_by_its_own_box():
    cluster = Cluster("a", "b")
    pub = published(cluster)
    sub, mid = subscribed(cluster, "b", pub)
    cam = pub.sender("cam")
    cam.send(key=True)
    cluster.pump()
    first = sub.media(mid)[0]
    sub.nack(mid, [first.sequence_number])
    cluster.pump()
    assert [label(p) for p in sub.rtx(mid)] == ["0.0"]
    assert cluster["b"].lab.sfu.repair.counters.retransmitted == 1
    assert cluster["a"].lab.sfu.repair.counters.nacked_by_subscribers == 0
    assert pub.nacks() == []


def test_a_loss_on_the_trunk_is_nacked_once_by_the_receiving_box_and_repaired_there():
    cluster = Cluster("a", "b")
    pub = published(cluster)
    sub, mid = subscribed(cluster, "b", pub)
    cam = pub.sender("cam")
    cam.send(key=True)
    cluster.pump()
    dropped = []

    def lose_one(src: str, dst: str, data: bytes) -> bool:
        if src == "a" and 127 < data[0] < 192 and not 191 < data[1] < 224 and not dropped:
            dropped.append(data)
            return True
        return False

    cluster.lose = lose_one
    cam.send()
    cluster.pump()
    cluster.lose = lambda src, dst, data: False
    cam.send()
    cluster.pump()
    b, a = cluster["b"].lab.sfu.repair.counters, cluster["a"].lab.sfu.repair.counters
    assert b.nacked_upstream == 1  # b asked a once for the one packet lost on the trunk
    assert a.nacked_by_subscribers == 1 and a.retransmitted == 1  # a answered from its cache
    assert sorted(labels(sub.media(mid))) == ["0.0", "0.1", "1.0", "1.1", "2.0", "2.1"]
    assert sub.nacks() == [] and pub.nacks() == []  # the subscriber saw no loss; the publisher no NACK


def test_keyframe_requests_from_many_subscribers_reach_the_publisher_once_per_interval():
    cluster = Cluster("a", "b", "c")
    pub = published(cluster)
    subs = [subscribed(cluster, box, pub, who=f"{box}{i}") for box in ("b", "c") for i in range(3)]
    cam = pub.sender("cam")
    cam.send(key=True)
    cluster.pump()
    cluster.advance(1.0)
    before = len(pub.plis())
    for sub, mid in subs:
        sub.pli(mid, now=cluster.now)
    cluster.pump()
    assert len(pub.plis()) - before == 1


def test_past_the_fanout_the_tree_deepens_and_heals_when_a_middle_box_dies():
    cluster = Cluster("a", "b", "c", "d", fanout=2)
    pub = published(cluster)
    subs = {box: subscribed(cluster, box, pub, who=f"sub-{box}") for box in ("b", "c", "d")}
    sending = cluster["a"].trunks.describe()["sending"]
    assert sending[0]["to"] == ["b", "c"]  # the root serves two boxes; d was sent to one of them
    parent = cluster["d"].trunks.describe()["receiving"][0]["from"]
    assert parent in ("b", "c")
    cam = pub.sender("cam")
    cam.send(key=True)
    cluster.pump()
    sub_d, mid_d = subs["d"]
    assert labels(sub_d.media(mid_d)) == ["0.0", "0.1"]
    assert cluster["a"].sent_on_trunks == 4  # two boxes, two packets: d's copy came from its parent

    cluster.kill(parent)
    cluster.pump()
    # d re-attached at the root (the root now has room) and asked for a keyframe for its subscriber.
    assert cluster["d"].trunks.describe()["receiving"][0]["from"] == "a"
    plis = len(pub.plis())
    assert plis >= 1
    cam.send(key=True)
    cluster.pump()
    assert labels(sub_d.media(mid_d))[-2:] == ["1.0", "1.1"]
    # The subscriber's sequence numbers go on without a jump across the re-attachment.
    seqs = [p.sequence_number for p in sub_d.media(mid_d)]
    assert [(b - a) & 0xFFFF for a, b in zip(seqs, seqs[1:])] == [1, 1, 1]


def test_when_the_publisher_leaves_every_box_ends_the_track_for_its_subscribers():
    cluster = Cluster("a", "b")
    pub = published(cluster)
    sub, mid = subscribed(cluster, "b", pub)
    pub.sender("cam").send(key=True)
    cluster.pump()
    pub.leave()
    cluster.pump()
    assert sub.ssrc(mid) in sub.byes()
    assert [t["status"] for t in sub.describe()["tracks"]] == ["inactive"]
    assert cluster["b"].trunks.describe()["receiving"] == []


def test_when_the_root_box_dies_and_no_box_carries_its_session_on_its_tracks_end_on_other_boxes():
    cluster = Cluster("a", "b")
    pub = published(cluster)
    sub, mid = subscribed(cluster, "b", pub)
    cluster.kill("a")
    b = cluster["b"]
    assert sub.ssrc(mid) not in sub.byes() and b.trunks.remote  # another box may carry the publisher on
    b.lab.sweep(cluster.advance(ORPHANED_FOR + 1))
    assert sub.ssrc(mid) in sub.byes()
    assert b.trunks.remote == {}


def test_a_trunk_nobody_needs_is_released_after_a_grace_period():
    cluster = Cluster("a", "b")
    pub = published(cluster)
    sub, mid = subscribed(cluster, "b", pub)
    sub.close(mid, force=True)
    cluster["b"].lab.sweep(cluster.advance(1.0))
    assert cluster["b"].trunks.remote  # still there: a pull may come back at once
    cluster["b"].lab.sweep(cluster.advance(GRACE + 1.0))
    cluster.pump()
    assert cluster["b"].trunks.remote == {}
    assert cluster["a"].trunks.describe()["sending"] == []
    sent = cluster["a"].sent_on_trunks
    pub.sender("cam").send(key=True)
    cluster.pump()
    assert cluster["a"].sent_on_trunks == sent


def test_simulcast_layers_travel_on_the_trunk_and_each_box_chooses_per_subscriber():
    cluster = Cluster("a", "b")
    pub = published(cluster, rids=("f", "h", "q"))
    sub, mid = subscribed(cluster, "b", pub, simulcast={"preferredRid": "h"})
    cam = pub.sender("cam")
    # The publisher answers every keyframe request at once: each round's frames are keyframes.
    for _ in range(3):
        cam.tick(keys=("f", "h", "q"))
        cluster.pump()
        cluster["a"].lab.adapt(cluster.advance(0.1))
        cluster["b"].lab.adapt(cluster.now)
        cluster.pump()
    cam.tick(keys=("f", "h", "q"))
    cluster.pump()
    got = labels(sub.media(mid))
    assert got and all(name.startswith("h") for name in got)
    # Every layer crossed once, whichever one the box's subscribers take.
    assert {leg.stream.rid for legs in cluster["a"].trunks.children.values() for each in legs.values()
            for leg in each} == {"f", "h", "q"}


def test_audio_levels_cross_the_trunk():
    cluster = Cluster("a", "b")
    pub = cluster["a"].endpoint("pub")
    pub.push(audio("mic"))
    pub.connect()
    sub, mid = subscribed(cluster, "b", pub, name="mic")
    mic = pub.sender("mic")
    mic.level = 30
    mic.send()
    cluster.pump()
    assert [p.extensions.audio_level for p in sub.media(mid)] == [(True, 30)]


def test_trunk_packets_from_strangers_or_under_another_secret_are_dropped():
    cluster = Cluster("a", "b")
    pub = published(cluster)
    sub, mid = subscribed(cluster, "b", pub)
    b = cluster["b"]
    impostor = TrunkPort("a", cluster["a"].record.epoch, SECRET + " but not quite")
    peer = impostor.peer("b", b.record.epoch, b.addr)
    forged = peer.tx.protect(bytes([0x80, 96, 0, 1]) + bytes(8) + b"payload")
    b.port.datagram_received(forged, cluster["a"].addr, cluster.now)
    b.port.datagram_received(forged, ("198.51.100.9", 3480), cluster.now)
    assert b.port.peers["a"].counters.errors == 1 and b.port.unknown == 1
    assert sub.media(mid) == []


def test_the_store_hears_of_sessions_and_tracks_as_they_come_and_go():
    cluster = Cluster("a", "b")
    a = cluster["a"]
    pub = published(cluster)
    written = [(bucket, value is not None) for bucket, _, value in a.writes]
    # The session, its track, the session again once the push is in its journal, and once more when
    # its client's path is known (the record carries the address its media comes from).
    assert written == [("edgecall-sessions", True), ("edgecall-tracks", True), ("edgecall-sessions", True),
                       ("edgecall-sessions", True)]
    assert cluster.sessions[pub.id].path == STORE_SEALER.tag("%s %d" % pub.address, "path")
    a.checkpoints.tick(cluster.now)  # a connected session's media checkpoint
    assert a.writes[-1][:2] == ("edgecall-media", pub.id)
    pub.leave()
    written = [(bucket, value is not None) for bucket, _, value in a.writes[5:]]
    assert written == [("edgecall-tracks", False), ("edgecall-sessions", False), ("edgecall-media", False)]


def chat(cluster: Cluster, *boxes: str):
    """A publisher on box a with a local channel "chat", and a subscriber of it on each of `boxes`."""
    pub = cluster["a"].endpoint("pub")
    pub.push(data=True)
    pub.connect()
    pub.new_channels({"location": "local", "dataChannelName": "chat"})
    subs = []
    for box in boxes:
        sub = cluster[box].endpoint(f"sub-{box}")
        sub.establish()
        sub.connect()
        result = sub.new_channels({"location": "remote", "sessionId": pub.id, "dataChannelName": "chat"})
        assert "errorCode" not in result[0], result
        subs.append((sub, result[0]["id"]))
    cluster.pump()
    return pub, subs


def test_data_channel_messages_reach_subscribers_on_other_boxes_once_per_box():
    cluster = Cluster("a", "b", "c")
    pub, subs = chat(cluster, "b", "b", "c", "a")
    large = "x" * 200_000  # in pieces across the backbone
    for message in ("hello", b"\x00binary", "", large):
        pub.message(1, message)
    cluster.pump()
    for sub, channel_id in subs:
        assert sub.messages(channel_id) == ["hello", b"\x00binary", "", large]
    assert len(cluster["a"].channels.targets) == 2  # one relay per box, whatever its subscribers
    assert [d["status"] for d in subs[0][0].describe()["dataChannels"]][-1] == "active"


def test_a_data_channel_of_no_box_is_not_found_and_its_end_reaches_every_box():
    cluster = Cluster("a", "b")
    pub, [(sub, channel_id)] = chat(cluster, "b")
    stranger = cluster["b"].endpoint("stranger")
    stranger.establish()
    missing = stranger.new_channels({"location": "remote", "sessionId": pub.id, "dataChannelName": "nope"})
    assert missing[0]["errorCode"] == "not_found_track_error"
    pub.close_channels(1)
    cluster.pump()
    assert channel_id in sub.association.closed
    assert cluster["b"].channels.stand_ins == {} and cluster["a"].channels.targets == {}
    last = [value for bucket, _, value in cluster["a"].writes if bucket == "edgecall-tracks"][-1]
    assert last is None


def test_a_new_subscriber_on_another_box_gets_its_keyframe_without_waiting_for_the_interval():
    cluster = Cluster("a", "b")
    pub = published(cluster)
    first, _ = subscribed(cluster, "b", pub, who="first")
    pub.sender("cam").send(key=True)
    cluster.pump()
    cluster.advance(0.1)  # within the interval of the first subscriber's keyframe request
    before = len(pub.plis())
    subscribed(cluster, "b", pub, who="second")
    forced = len(pub.plis())
    assert forced > before  # the new subscriber's request went up the tree as FIR
    cluster.advance(0.05)
    first.pli("0", now=cluster.now)  # an ordinary request inside the interval stays held back
    cluster.pump()
    assert len(pub.plis()) == forced


def trunk_layers(cluster: Cluster, box: str = "b") -> list[str]:
    """The layers box a sends `box` over the trunk."""
    return sorted(leg.preferences["preferredRid"] for legs in cluster["a"].trunks.children.values()
                  for leg in legs.get(box, []))


def test_a_trunk_carries_the_simulcast_layers_its_boxs_subscribers_need():
    cluster = Cluster("a", "b")
    pub = published(cluster, rids=("f", "h", "q"))
    subscribed(cluster, "b", pub, simulcast={"preferredRid": "h"})
    cam = pub.sender("cam")

    def rounds(count: int, step: float) -> None:
        for _ in range(count):
            cam.tick(keys=("f", "h", "q"))
            cluster.pump()
            cluster["a"].lab.adapt(cluster.advance(step))
            cluster["b"].lab.adapt(cluster.now)
            cluster.pump()

    rounds(3, 0.1)
    assert trunk_layers(cluster) == ["f", "h", "q"]  # all at first: the subscriber's layer is not chosen yet
    rounds(2, LAYER_GRACE / 2 + 0.5)
    assert trunk_layers(cluster) == ["h"]  # what no subscriber of b wanted for a while stopped crossing
    kept = next(leg for legs in cluster["a"].trunks.children.values() for leg in legs["b"])
    second, mid = subscribed(cluster, "b", pub, who="second", simulcast={"preferredRid": "f"})
    rounds(3, 0.1)
    assert trunk_layers(cluster) == ["f", "h"]
    assert kept in cluster["a"].trunks.children[pub.track("cam")]["b"]  # h went on, its numbering unbroken
    assert labels(second.media(mid)) and all(name.startswith("f") for name in labels(second.media(mid)))
    # A subscriber that follows its bandwidth needs every layer's rate: all cross again.
    subscribed(cluster, "b", pub, who="third")
    rounds(1, 0.1)
    assert trunk_layers(cluster) == ["f", "h", "q"]


def test_a_subscriber_allowed_to_reply_reaches_the_publisher_on_another_box():
    cluster = Cluster("a", "b")
    pub, [(sub, channel_id)] = chat(cluster, "b")
    assert sub.update_channels({"id": channel_id, "canReply": True})[0]["canReply"] is True
    sub.message(channel_id, "from b")
    cluster.pump()
    assert pub.messages(1) == ["from b"]
    other = cluster["b"].endpoint("other")
    other.establish()
    other.connect()
    [result] = other.new_channels({"location": "remote", "sessionId": pub.id, "dataChannelName": "chat"})
    other.message(result["id"], "not allowed to reply")
    cluster.pump()
    assert pub.messages(1) == ["from b"]
