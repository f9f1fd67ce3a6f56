"""A session's m-sections follow the browser's m-lines, which a browser recycles (JSEP 5.2.2)."""
from appliance.sfu.sdp import LocalSection
from appliance.sfu.session import CallSession, Transceiver


def session_with(*mids: str) -> CallSession:
    session = CallSession("s", "app", 0.0, owner=None)
    for mid in mids:
        session.add(Transceiver(LocalSection(mid, "audio", "recvonly"), "push"))
    return session


def test_a_recycled_m_line_takes_the_stopped_transceivers_place():
    session = session_with("0", "1", "2")
    session.transceivers[1].closed = True
    session.add(Transceiver(LocalSection("3", "video", "recvonly"), "push"))  # the offer's new mid
    gone = session.follow(["0", "3", "2"])
    assert [t.mid for t in gone] == ["1"]
    assert [t.mid for t in session.transceivers] == ["0", "3", "2"]
    assert session.next_mid() == "4"  # the recycled mid is never given out again
    assert session.transceiver("1") is gone[0]


def test_an_offer_that_lists_a_mid_the_session_does_not_know_changes_nothing():
    session = session_with("0", "1")
    assert session.follow(["0", "9"]) == []
    assert [t.mid for t in session.transceivers] == ["0", "1"]


def test_the_same_order_keeps_every_transceiver():
    session = session_with("0", "1")
    assert session.follow(["0", "1"]) == [] and [t.mid for t in session.transceivers] == ["0", "1"]


def test_an_sfu_offer_takes_a_rejected_m_line_before_growing():
    session = session_with("0", "1", "2")
    closed_unnegotiated, rejected = session.transceivers[0], session.transceivers[1]
    closed_unnegotiated.closed = True  # stopped by a forced close: the client still has it
    rejected.closed, rejected.section.rejected = True, True  # a client offer showed it stopped
    assert session.free_line() == 1
    new = session.add(Transceiver(LocalSection(session.next_mid(), "video", "sendonly"), "pull"), recycle=True)
    assert [t.mid for t in session.transceivers] == ["0", "3", "2"] and new.mid == "3"
    assert session.free_line() is None
    session.add(Transceiver(LocalSection(session.next_mid(), "video", "sendonly"), "pull"), recycle=True)
    assert [t.mid for t in session.transceivers] == ["0", "3", "2", "4"]
    session.add(Transceiver(LocalSection(session.next_mid(), "audio", "recvonly"), "push"))  # a client's: appended
    assert [t.mid for t in session.transceivers][-1] == "5"
