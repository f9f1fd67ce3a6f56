"""Send indications on the relay hot path: the usual layouts are read without the full scan, and
read as the full scan reads them."""
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.stun import Attr, Class, Message, Method
from appliance.turn import indications
from appliance.turn.indications import read_send
from tests.unit.turn.harness import PEER, PEER6

PEERS = st.sampled_from([PEER, PEER6, (PEER[0], 0)])
ATTRIBUTES = st.lists(
    st.one_of(
        st.tuples(st.just(Attr.XOR_PEER_ADDRESS), PEERS),
        st.tuples(st.just(Attr.DATA), st.binary(max_size=9)),
        st.tuples(st.just(Attr.DONT_FRAGMENT), st.just(True)),
    ),
    max_size=4,
)


def send(*attributes, fingerprint=False):
    return Message(Method.SEND, Class.INDICATION, None, list(attributes)).encode(fingerprint=fingerprint)


@pytest.mark.parametrize("fingerprint", [False, True])
@pytest.mark.parametrize("data_first", [False, True])  # coturn's order, and libwebrtc's
def test_the_usual_layouts_need_no_scan(monkeypatch, fingerprint, data_first):
    attributes = [(Attr.XOR_PEER_ADDRESS, PEER), (Attr.DATA, b"hello")]
    message = send(*(attributes[::-1] if data_first else attributes), fingerprint=fingerprint)
    expected = indications._read_any_send(message)
    monkeypatch.setattr(indications, "_read_any_send", None)  # calling it fails
    assert read_send(message) == expected


@given(ATTRIBUTES, st.booleans(), st.integers(0, 255), st.integers(0, 7))
def test_the_shortcut_reads_what_the_scan_reads(attributes, fingerprint, flip_at, bit):
    message = send(*attributes, fingerprint=fingerprint)
    flipped = bytearray(message)
    flipped[flip_at % len(flipped)] ^= 1 << bit
    for data in (message, bytes(flipped), message[:-1], message + bytes(4)):
        assert read_send(data) == indications._read_any_send(data)


@pytest.mark.parametrize("length", [0, 1, 2, 3, 4, 7, 9, 19])
def test_an_xor_peer_address_too_short_or_long_is_no_send_indication(length):
    # A flipped length bit made one 2 bytes long: reading its port raised IndexError in the relay path.
    attributes = struct.pack("!HH", Attr.XOR_PEER_ADDRESS, length) + bytes([0, 1, 0x12, 0x34]) * 5
    attributes = attributes[:4 + length] + bytes(-length % 4) + struct.pack("!HH", Attr.DATA, 5) + b"hello" + bytes(3)
    message = struct.pack("!HHI", 0x0016, len(attributes), 0x2112A442) + bytes(12) + attributes
    assert read_send(message) is None
