"""Just-in-time PeerConnections (appliance/cluster/handover.py): the box a client's first check
reaches takes the session from the box that served its API requests, rebuilt from its journal and
seed, and keeps what others pull of it."""
from __future__ import annotations

import base64

from appliance.cluster.handover import PER_SOURCE
from appliance.sfu.journal import MAX_BYTES

from ..sfu.harness import audio, labels, video
from .harness import Cluster

CLIENT = ("198.51.100.7", 50000)


def shape(session) -> list:
    """What a client negotiated with the session: its m-sections and what goes out on them."""
    return [(t.mid, t.role, t.section.kind, t.section.direction, t.section.ssrc, t.section.rtx_ssrc,
             [c.pt for c in t.section.codecs], sorted(t.section.extensions.items()),
             t.track.name if t.track else None) for t in session.transceivers]


def move(endpoint, box) -> None:
    """The client's PeerConnection now talks to `box` (its media reached it)."""
    endpoint.lab, endpoint.sfu = box.lab, box.lab.sfu
    endpoint.session = box.lab.sfu.sessions[endpoint.id]


def test_the_box_the_first_check_reaches_takes_the_session_as_it_was_negotiated():
    cluster = Cluster("a", "b")
    a, b = cluster["a"], cluster["b"]
    other = a.endpoint("other")
    other.push(video("screen"))
    other.connect()
    pub = a.endpoint("pub")
    pub.push(video("cam"), audio("mic"))
    pub.pull(other, "screen")
    pub.establish()
    negotiated = shape(pub.session)
    b.handover.stranger(pub.session.ufrag, "udp", b"the check", CLIENT, cluster.now)
    cluster.pump()
    assert pub.id not in a.lab.sfu.sessions
    taken = b.lab.sfu.sessions[pub.id]
    assert shape(taken) == negotiated
    assert (taken.ufrag, taken.pwd, taken.cname) == (pub.session.ufrag, pub.session.pwd, pub.session.cname)
    assert b.reinjected == [("udp", b"the check", CLIENT)]  # the held check goes to b's port
    assert cluster.sessions[pub.id].owner == "b"
    assert cluster["b"].trunks.records  # b publishes cam and mic now
    assert {r.owner for r in b.trunks.records.values() if r.session == pub.id} == {"b"}
    # Its pull of a track on a: b now receives "screen" over a trunk from a.
    assert [r["track"] for r in b.trunks.describe()["receiving"]] == ["screen"]
    assert (a.handover.counters.given, b.handover.counters.taken) == (1, 1)


def test_subscribers_of_a_moving_session_keep_receiving_its_tracks():
    cluster = Cluster("a", "b", "c")
    a, b, c = cluster["a"], cluster["b"], cluster["c"]
    pub = a.endpoint("pub")
    pub.push(video("cam"))
    local = a.endpoint("local")  # on the box the session leaves
    results = local.pull(pub, "cam")
    local.connect()
    far = c.endpoint("far")  # on a third box, receiving it from a
    far_mid = far.pull(pub, "cam")[0]["mid"]
    far.connect()
    cluster.pump()
    b.handover.stranger(pub.session.ufrag, "udp", b"check", CLIENT, cluster.now)
    cluster.pump()
    move(pub, b)
    pub.connect()
    pub.sender("cam").send(key=True)
    cluster.pump()
    assert labels(local.media(results[0]["mid"])) == ["0.0", "0.1"]
    assert labels(far.media(far_mid)) == ["0.0", "0.1"]
    assert c.trunks.describe()["receiving"][0]["from"] == "b"
    assert [t["status"] for t in local.describe()["tracks"]] == ["active"]


def test_a_session_in_its_dtls_handshake_stays_where_it_is():
    cluster = Cluster("a", "b")
    a, b = cluster["a"], cluster["b"]
    pub = a.endpoint("pub")
    pub.push(video("cam"))
    pub.port_session.dtls = "a handshake under way"
    b.handover.stranger(pub.session.ufrag, "udp", b"check", CLIENT, cluster.now)
    cluster.pump()
    assert pub.id in a.lab.sfu.sessions and pub.id not in b.lab.sfu.sessions
    assert b.reinjected == [] and b.handover.counters.refused == 1
    # Not asked again while refused: a client's retransmissions cost nothing.
    b.handover.stranger(pub.session.ufrag, "udp", b"check", CLIENT, cluster.now + 1)
    assert cluster.requests == []


def test_unknown_ufrags_cost_no_request_and_each_source_is_limited():
    cluster = Cluster("a", "b")
    a, b = cluster["a"], cluster["b"]
    b.handover.stranger("nobody", "udp", b"junk", CLIENT, cluster.now)
    assert cluster.requests == [] and b.handover.counters.unknown_ufrag == 1
    pubs = [a.endpoint(f"pub{i}") for i in range(int(PER_SOURCE) + 5)]
    for pub in pubs:
        pub.push(audio("mic"))
        b.handover.stranger(pub.session.ufrag, "udp", b"check", CLIENT, cluster.now)
    assert len(cluster.requests) == PER_SOURCE and b.handover.counters.limited == 5
    cluster.pump()
    b.handover.stranger(pubs[-1].session.ufrag, "udp", b"check", ("198.51.100.8", 1), cluster.now)
    cluster.pump()
    assert b.handover.counters.taken == PER_SOURCE + 1


def test_checks_held_while_the_session_comes_are_bounded_and_all_answered():
    cluster = Cluster("a", "b")
    a, b = cluster["a"], cluster["b"]
    pub = a.endpoint("pub")
    pub.push(audio("mic"))
    for i in range(12):
        b.handover.stranger(pub.session.ufrag, "udp", b"check %d" % i, CLIENT, cluster.now)
    assert len(cluster.requests) == 1
    cluster.pump()
    assert [data for _, data, _ in b.reinjected] == [b"check %d" % i for i in range(8)]
    assert b.handover.counters.limited == 4


def test_a_session_whose_journal_grew_too_large_is_not_moved():
    cluster = Cluster("a", "b")
    a, b = cluster["a"], cluster["b"]
    pub = a.endpoint("pub")
    pub.push(audio("mic"), items=[{"location": "local", "mid": "0", "trackName": "x" * (MAX_BYTES + 1)}])
    assert pub.session.journal is None
    b.handover.stranger(pub.session.ufrag, "udp", b"check", CLIENT, cluster.now)
    cluster.pump()
    assert pub.id in a.lab.sfu.sessions and b.handover.counters.refused == 1


def test_a_session_whose_box_died_before_it_connected_is_taken_from_the_store():
    cluster = Cluster("a", "b")
    a, b = cluster["a"], cluster["b"]
    pub = a.endpoint("pub")
    pub.push(video("cam"), audio("mic"))
    negotiated = shape(pub.session)
    assert b"a=ice-pwd" not in base64.b64decode(cluster.sessions[pub.id].state)  # sealed in the store
    cluster.kill("a")
    b.handover.stranger(pub.session.ufrag, "udp", b"check", CLIENT, cluster.now)
    cluster.pump()
    assert shape(b.lab.sfu.sessions[pub.id]) == negotiated
    assert cluster.sessions[pub.id].owner == "b" and b.reinjected == [("udp", b"check", CLIENT)]
