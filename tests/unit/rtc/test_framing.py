"""RFC 4571 framing for ICE-TCP."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.rtc.framing import Rfc4571Framer, frame


def test_frames_split_across_and_within_chunks():
    stream = frame(b"stun") + frame(b"") + frame(b"\x80" * 300)
    framer = Rfc4571Framer()
    assert framer.feed(stream[:1]) == []
    assert framer.feed(stream[1:7]) == [b"stun"]
    assert framer.feed(stream[7:]) == [b"", b"\x80" * 300]


def test_a_packet_too_long_for_the_length_field_is_refused():
    with pytest.raises(ValueError):
        frame(bytes(0x10000))


@given(st.lists(st.binary(max_size=700), max_size=8), st.lists(st.integers(1, 400), max_size=20))
def test_any_chunking_gives_the_packets_back(packets, cuts):
    stream = b"".join(frame(p) for p in packets)
    framer = Rfc4571Framer()
    out, pos = [], 0
    for cut in cuts:
        out += framer.feed(stream[pos : pos + cut])
        pos += cut
    out += framer.feed(stream[pos:])
    assert out == packets


@given(st.binary(max_size=2000))
def test_arbitrary_streams_never_raise(data):
    Rfc4571Framer().feed(data)


def test_an_ice_tcp_reader_that_falls_behind_loses_packets_not_memory():
    from appliance.rtc.io import FramedSink

    class Transport:
        def __init__(self):
            self.buffered = 0

        def is_closing(self):
            return False

        def get_write_buffer_size(self):
            return self.buffered

        def write(self, data):
            self.buffered += len(data)

    transport = Transport()
    sink = FramedSink(transport)
    sent = refused = 0
    for _ in range(2000):
        try:
            sink.sendto(b"x" * 1200)
            sent += 1
        except BlockingIOError:
            refused += 1
    assert refused and transport.buffered <= FramedSink.MAX_BACKLOG + 1202
