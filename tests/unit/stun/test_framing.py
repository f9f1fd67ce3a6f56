"""ChannelData frames, the TCP/TLS stream framer and the RFC 7983 first-byte demux."""
import pytest

from appliance.stun import (
    Kind, Message, StreamFramer, StunError, classify, is_channel_number, pack_channel_data, unpack_channel_data,
)


def test_channel_data_round_trip_and_padding():
    assert pack_channel_data(0x4000, b"abcde") == b"\x40\x00\x00\x05abcde"
    assert pack_channel_data(0x4000, b"abcde", stream=True) == b"\x40\x00\x00\x05abcde\x00\x00\x00"
    assert pack_channel_data(0x4FFF, b"abcd", stream=True) == b"\x4f\xff\x00\x04abcd"
    assert unpack_channel_data(b"\x40\x01\x00\x02xy\x00\x00") == (0x4001, b"xy")
    assert unpack_channel_data(b"\x40\x01\x00\x00") == (0x4001, b"")


@pytest.mark.parametrize("frame", [b"", b"\x40\x00\x00", b"\x3f\xff\x00\x00", b"\x80\x00\x00\x00", b"\x40\x00\x00\x05abcd"])
def test_bad_channel_data_raises(frame):
    with pytest.raises(StunError):
        unpack_channel_data(frame)


def test_channel_numbers():
    assert is_channel_number(0x4000) and is_channel_number(0x4FFF) and is_channel_number(0x7FFF)
    assert not is_channel_number(0x3FFF) and not is_channel_number(0x8000)


def frames_of(framer, data):
    framer.feed(data)
    out = []
    while (frame := framer.next()) is not None:
        out.append(frame)
    return out


def test_framer_splits_a_stream_fed_byte_by_byte():
    stun = Message(1, 0, bytes(12)).encode(fingerprint=True)
    channel = pack_channel_data(0x4001, b"hello", stream=True)
    stream = stun + channel + pack_channel_data(0x4002, b"", stream=True) + stun
    framer = StreamFramer()
    frames = []
    for i in range(len(stream)):
        frames += frames_of(framer, stream[i : i + 1])
    assert frames == [stun, b"\x40\x01\x00\x05hello", b"\x40\x02\x00\x00", stun]
    assert framer.pending == 0


def test_framer_returns_all_frames_of_one_chunk_and_keeps_the_rest():
    channel = pack_channel_data(0x4001, b"abc", stream=True)
    framer = StreamFramer()
    assert frames_of(framer, channel * 3 + channel[:5]) == [channel[:7]] * 3
    assert framer.pending == 5
    assert frames_of(framer, channel[5:]) == [channel[:7]]


def test_framer_hands_over_the_rest_of_the_stream():
    stun = Message(11, 0, bytes(12)).encode()
    framer = StreamFramer()
    framer.feed(stun + b"raw peer bytes")
    assert framer.next() == stun
    assert framer.rest() == b"raw peer bytes"
    assert framer.pending == 0 and framer.next() is None


@pytest.mark.parametrize("garbage", [b"\x80\x00\x00\x00", b"\xff\xff\xff\xff", b"\x16\x03\x01\x02\x00"])
def test_framer_refuses_what_is_not_turn(garbage):
    with pytest.raises(StunError):
        frames_of(StreamFramer(), garbage)


def test_framer_refuses_unaligned_stun_length():
    with pytest.raises(StunError):
        frames_of(StreamFramer(), b"\x00\x01\x00\x03" + bytes(16))


@pytest.mark.parametrize(
    ("first", "kind"),
    [(0, Kind.STUN), (3, Kind.STUN), (4, Kind.UNKNOWN), (16, Kind.ZRTP), (19, Kind.ZRTP), (20, Kind.DTLS),
     (63, Kind.DTLS), (64, Kind.CHANNEL_DATA), (79, Kind.CHANNEL_DATA), (80, Kind.UNKNOWN), (127, Kind.UNKNOWN),
     (128, Kind.RTP), (191, Kind.RTP), (192, Kind.UNKNOWN), (255, Kind.UNKNOWN)],
)
def test_rfc7983_first_byte(first, kind):
    assert classify(bytes([first, 0])) == kind


def test_empty_packet_is_unknown():
    assert classify(b"") == Kind.UNKNOWN
