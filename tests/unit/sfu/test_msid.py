"""A track pulled twice into one session: each m-section gets an msid of its own (Chrome refuses a
description in which two m-sections share one: "Duplicate a=msid lines detected")."""
from .harness import Lab, audio, video


def test_a_track_pulled_twice_gets_two_msids_and_both_legs_forward():
    lab = Lab(now=10.0)
    pub, sub = lab.endpoint("pub"), lab.endpoint("sub")
    pub.push(audio("mic"), video("cam"))
    first = sub.pull(pub, "cam")
    second = sub.pull(pub, "cam")
    offered = [media.msid for media in sub.description.media]
    assert len(offered) == len(set(offered)) == 2, offered
    assert offered[0] == f"{pub.id} cam" and offered[1] == f"{pub.id} cam-{second[0]['mid']}"
    assert first[0]["mid"] != second[0]["mid"]
    pub.connect()
    sub.connect()
    pub.sender("cam").send(key=True)
    assert sub.media(first[0]["mid"]) and sub.media(second[0]["mid"])
