"""Data channels through the lab: the m=application a session negotiates, the SCTP association the
SFU asks its shell for once that is agreed and DTLS is up, and the relaying between channels
(CALLS_API.md 1.3 and 4). The association is the lab's recording one; aiortc's SCTP under the real
one is exercised by tests/integration/test_datachannels.py."""
import pytest

from appliance.sfu.datachannels import ACK_TIMEOUT
from appliance.sfu.errors import SfuError

from .harness import Lab, audio


def chat():
    """A publisher with a local channel "chat" (its own offer carried the m=application) and a
    subscriber that established server-events (the SFU offered it) and subscribed to "chat"."""
    lab = Lab(now=5.0)
    pub, sub = lab.endpoint("pub"), lab.endpoint("sub")
    pub.push(data=True)
    pub.connect()
    assert pub.new_channels({"location": "local", "dataChannelName": "chat"}) == [
        {"dataChannelName": "chat", "location": "local", "id": 1}]
    assert sub.establish() == {"dataChannelName": "server-events", "id": 0}
    sub.connect()
    assert sub.new_channels({"location": "remote", "sessionId": pub.id, "dataChannelName": "chat"}) == [
        {"dataChannelName": "chat", "location": "remote", "sessionId": pub.id, "id": 1}]
    return lab, pub, sub


def test_the_association_starts_once_the_m_application_is_agreed_and_dtls_is_up():
    lab = Lab()
    pub = lab.endpoint("pub")
    pub.push(data=True)
    assert "m=application 9 UDP/DTLS/SCTP webrtc-datachannel" in pub.sdp
    pub.new_channels({"location": "local", "dataChannelName": "early"})
    assert pub.association is None
    pub.connect()
    association = pub.association
    assert (association.remote_port, association.max_message_size) == (5000, 262144)
    assert list(association.channels) == [1]  # a channel made before it started is opened on it
    pub.send_data(b"sctp")
    assert association.packets == [b"sctp"]


def test_an_sfu_offered_m_application_waits_for_the_answer():
    lab = Lab()
    sub = lab.endpoint("sub")
    sub.establish(answer=False)
    assert sub.description.media[0].kind == "application"
    sub.connect()
    assert sub.association is None
    sub.send_data(b"sctp")
    assert lab.sfu.channels.dropped == 1
    sub.renegotiate()
    assert sub.association is not None and list(sub.association.channels) == [0]
    with pytest.raises(SfuError) as again:
        sub.establish()
    assert again.value.code == "decoding_error"


def test_establish_on_the_clients_offer():
    lab = Lab()
    pub, sub = lab.endpoint("pub"), lab.endpoint("sub")
    pub.push(audio("mic"))
    with pytest.raises(SfuError) as refused:
        lab.sfu.establish(pub.session, pub.offer(), lab.now)
    assert refused.value.status == 400 and "m=application" in refused.value.description
    assert sub.establish(offer=True) == {"dataChannelName": "server-events", "id": 0}
    assert [(m.kind, m.port) for m in sub.description.media] == [("application", 9)]


def test_a_publishers_messages_reach_its_subscribers_in_order():
    lab, pub, sub = chat()
    other = lab.endpoint("other")
    other.establish()
    other.connect()
    other.new_channels({"location": "remote", "sessionId": pub.id, "dataChannelName": "chat"})
    for message in ("hello", b"\x00binary", ""):
        pub.message(1, message)
    assert sub.messages(1) == other.messages(1) == ["hello", b"\x00binary", ""]
    assert [d["status"] for d in sub.describe()["dataChannels"]] == ["active", "active"]


def test_only_the_subscriber_granted_can_reply_reaches_the_publisher():
    lab, pub, sub = chat()
    sub.message(1, "unasked")
    assert pub.messages() == [] and lab.sfu.channels.dropped == 1
    assert sub.update_channels({"id": 1, "canReply": True}) == [
        {"id": 1, "dataChannelName": "chat", "location": "remote", "sessionId": pub.id, "canReply": True}]
    sub.message(1, "reply")
    assert pub.messages(1) == ["reply"]


def test_a_wait_for_ack_channel_starts_at_the_first_message_which_is_consumed():
    lab, pub, sub = chat()
    (acked,) = sub.new_channels({"location": "remote", "sessionId": pub.id, "dataChannelName": "chat",
                                 "waitForAck": True})
    pub.message(1, "before")
    assert sub.messages(acked["id"]) == [] and sub.messages(1) == ["before"]
    sub.message(acked["id"], "ack")
    pub.message(1, "after")
    assert sub.messages(acked["id"]) == ["after"] and pub.messages() == []


def test_a_wait_for_ack_channel_without_its_ack_ends():
    lab, pub, sub = chat()
    (acked,) = sub.new_channels({"location": "remote", "sessionId": pub.id, "dataChannelName": "chat",
                                 "waitForAck": True})
    lab.run_timers(5.0 + ACK_TIMEOUT + 5.0)
    assert acked["id"] in sub.association.closed and 1 not in sub.association.closed


def test_closing_the_publishers_channel_ends_its_subscribers():
    lab, pub, sub = chat()
    assert pub.close_channels(1, 9) == [{"id": 1}, {"id": 9, "errorCode": "close_track_error",
                                                    "errorDescription": "DataChannel doesn't exist or was already closed"}]
    assert pub.association.closed == [1] and sub.association.closed == [1]
    chat_channel = next(d for d in sub.describe()["dataChannels"] if d["dataChannelName"] == "chat")
    assert chat_channel["status"] == "inactive"


def test_a_session_that_ends_stops_its_association_and_its_subscribers_channels():
    lab, pub, sub = chat()
    association = pub.association
    pub.leave()
    assert association.stopped and sub.association.closed == [1]
