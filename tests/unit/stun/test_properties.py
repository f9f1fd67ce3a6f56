"""Property tests: no input makes the codec raise anything but StunError."""
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.stun import Attr, Message, StreamFramer, StunError, unpack_channel_data
from tests.unit.stun.test_message import EVERY_ATTRIBUTE
from tests.unit.stun.test_rfc5769 import LONG_TERM_REQUEST, REQUEST, RESPONSE_IPV4, RESPONSE_IPV6

VALID = [REQUEST, RESPONSE_IPV4, RESPONSE_IPV6, LONG_TERM_REQUEST,
         Message(3, 0, bytes(12), EVERY_ATTRIBUTE).encode(b"key", fingerprint=True),
         Message(3, 0, bytes(12), EVERY_ATTRIBUTE).encode(b"key", sha256=True)]


def _parse_or_stun_error(data):
    try:
        message = Message.parse(data)
    except StunError:
        return None
    message.check_integrity(b"key")
    message.encode(b"key", fingerprint=True)
    return message


@st.composite
def mutated(draw):
    """A valid message with bytes flipped, inserted, removed or its length field rewritten."""
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "length", "truncate"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "length" and len(data) >= 4:
            data[2:4] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


@settings(max_examples=3000)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_raise_only_stun_error(data):
    _parse_or_stun_error(data)


@settings(max_examples=3000)
@given(st.binary(max_size=200).map(lambda b: b"\x00\x01" + len(b).to_bytes(2, "big") + b"\x21\x12\xa4\x42" + b))
def test_arbitrary_bodies_behind_a_valid_header_raise_only_stun_error(data):
    _parse_or_stun_error(data)


@settings(max_examples=5000)
@given(mutated())
def test_mutated_valid_messages_raise_only_stun_error(data):
    _parse_or_stun_error(data)


@settings(max_examples=1000)
@given(st.lists(st.binary(max_size=64), max_size=10))
def test_framer_and_channel_data_raise_only_stun_error(chunks):
    framer = StreamFramer()
    try:
        for chunk in chunks:
            framer.feed(chunk)
            while (frame := framer.next()) is not None:
                if frame[0] >= 0x40:
                    unpack_channel_data(frame)
                else:
                    _parse_or_stun_error(frame)
    except StunError:
        pass


@given(st.lists(st.sampled_from(EVERY_ATTRIBUTE), max_size=12), st.binary(min_size=12, max_size=12),
       st.booleans(), st.booleans())
def test_encode_parse_round_trip(attributes, tid, sha256, fingerprint):
    wire = Message(9, 0, tid, attributes).encode(b"k", sha256=sha256, fingerprint=fingerprint)
    back = Message.parse(wire)
    assert [a for a in back.attributes if a[0] not in (Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256,
                                                       Attr.FINGERPRINT)] == attributes
    assert back.check_integrity(b"k") and back.fingerprinted == fingerprint
