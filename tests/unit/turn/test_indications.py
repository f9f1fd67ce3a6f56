"""Send indications on the relay hot path: the usual layouts are read without the full scan, and
read as the full scan reads them."""
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
