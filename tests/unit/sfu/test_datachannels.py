"""The sans-I/O rules of data channels: stream ids, and the checks of a datachannels/new batch."""
import pytest

from appliance.sfu.datachannels import (
    MAX_ID, SERVER_EVENTS_ID, ChannelRequest, DataChannel, SessionChannels, batch_location, describe, parse_request,
)
from appliance.sfu.errors import ItemError, SfuError
from appliance.sfu.session import CallSession


def test_ids_follow_the_dtls_role_parity_and_are_never_reused():
    channels = SessionChannels()
    # RFC 8832 6: the DTLS server's channels are odd, so the client's in-band (even) ones never collide.
    assert channels.allocate(dtls_server=True) == 1
    channels.add(DataChannel(None, 1, "a", "local"))
    assert channels.allocate(dtls_server=True) == 3
    # As the DTLS client, even ids, with 0 kept for server-events.
    assert channels.allocate(dtls_server=False) == 2
    closed = channels.add(DataChannel(None, 3, "b", "local"))
    closed.closed = True
    assert channels.allocate(dtls_server=True) == 5  # a closed channel's stream may still be resetting
    assert SERVER_EVENTS_ID == 0 and channels.get(1).name == "a" and channels.get("1") is None


def test_ids_run_out_at_the_top_of_the_stream_space():
    channels = SessionChannels()
    channels.by_id = dict.fromkeys(range(1, MAX_ID + 1, 2))
    with pytest.raises(ItemError):
        channels.allocate(dtls_server=True)


def test_local_lookup_skips_closed_and_remote_channels():
    channels = SessionChannels()
    old = channels.add(DataChannel(None, 1, "chat", "local", closed=True))
    channels.add(DataChannel(None, 3, "chat", "remote", source=old))
    assert channels.local("chat") is None
    new = channels.add(DataChannel(None, 5, "chat", "local"))
    assert channels.local("chat") is new


@pytest.mark.parametrize("items", [
    [],
    [{"location": "local", "dataChannelName": "a"}, {"location": "remote", "dataChannelName": "b", "sessionId": "s"}],
    [{"location": "elsewhere", "dataChannelName": "a"}],
    ["local"],
])
def test_a_batch_is_all_local_or_all_remote(items):
    with pytest.raises(SfuError) as error:
        batch_location(items)
    assert error.value.code == "invalid_params"


def test_batch_location():
    assert batch_location([{"location": "remote"}, {"location": "remote"}]) == "remote"


def test_parse_request_defaults_and_options():
    assert parse_request({"location": "local", "dataChannelName": "a"}) == ChannelRequest("a", "local")
    request = parse_request({"location": "remote", "dataChannelName": "a", "sessionId": "s", "ordered": False,
                             "maxPacketLifeTime": 500, "canReply": True})
    assert request == ChannelRequest("a", "remote", "s", False, None, 500, True)
    assert request.result(4) == {"dataChannelName": "a", "location": "remote", "sessionId": "s", "id": 4}


@pytest.mark.parametrize("item, code", [
    ({"location": "local"}, "invalid_params"),
    ({"location": "local", "dataChannelName": ""}, "invalid_params"),
    ({"location": "remote", "dataChannelName": "a"}, "invalid_params"),  # no sessionId
    ({"location": "local", "dataChannelName": "a", "ordered": "yes"}, "decoding_error"),
    ({"location": "local", "dataChannelName": "a", "canReply": True}, "invalid_params"),
    ({"location": "local", "dataChannelName": "a", "maxRetransmits": 1, "maxPacketLifeTime": 1}, "invalid_params"),
    ({"location": "local", "dataChannelName": "a", "maxRetransmits": -1}, "invalid_params"),
    ({"location": "local", "dataChannelName": "a", "maxRetransmits": True}, "invalid_params"),
    ({"location": "local", "dataChannelName": "a", "maxPacketLifeTime": 70000}, "invalid_params"),
    ({"location": "remote", "dataChannelName": "a", "sessionId": "s", "waitForAck": "yes"}, "decoding_error"),
    ({"location": "local", "dataChannelName": "a", "waitForAck": True}, "invalid_params"),
])
def test_parse_request_errors(item, code):
    with pytest.raises(ItemError) as error:
        parse_request(item)
    assert error.value.code == code


def test_describe_and_ended():
    source = DataChannel(CallSession("pub", "app", 0.0, owner=None), 1, "chat", "local")
    subscriber = DataChannel(None, 3, "chat", "remote", source=source)
    assert describe(subscriber, "active") == {"location": "remote", "dataChannelName": "chat", "id": 3,
                                              "status": "active", "sessionId": "pub"}
    assert not subscriber.ended
    source.closed = True
    assert subscriber.ended and not subscriber.closed
