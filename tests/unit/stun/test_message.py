"""Message codec: round trips, integrity as received, and the checks that refuse bad bytes."""
import hashlib
import hmac
import struct

import pytest

from appliance.stun import Attr, Class, Message, Method, StunError, long_term_key, message_type, split_type

TID = bytes(range(12))

EVERY_ATTRIBUTE = [
    (Attr.MAPPED_ADDRESS, ("192.0.2.7", 3478)),
    (Attr.XOR_MAPPED_ADDRESS, ("2001:db8::1", 65535)),
    (Attr.XOR_PEER_ADDRESS, ("198.51.100.9", 0)),
    (Attr.XOR_PEER_ADDRESS, ("2001:db8:ffff::ffff", 1)),
    (Attr.XOR_RELAYED_ADDRESS, ("203.0.113.1", 49152)),
    (Attr.USERNAME, "1700000000:alice"),
    (Attr.REALM, "edgecall"),
    (Attr.NONCE, "abc\u00e9"),
    (Attr.ERROR_CODE, (438, "Stale Nonce")),
    (Attr.UNKNOWN_ATTRIBUTES, (0x0031, 0x7FFF, 0x0002)),
    (Attr.SOFTWARE, "Edgecall"),
    (Attr.LIFETIME, 600),
    (Attr.CHANNEL_NUMBER, 0x4001),
    (Attr.DATA, b"\x00\x01\x02"),
    (Attr.REQUESTED_TRANSPORT, 17),
    (Attr.REQUESTED_ADDRESS_FAMILY, 2),
    (Attr.ADDITIONAL_ADDRESS_FAMILY, 2),
    (Attr.ADDRESS_ERROR_CODE, (2, 440, "Address Family not Supported")),
    (Attr.EVEN_PORT, True),
    (Attr.RESERVATION_TOKEN, b"12345678"),
    (Attr.DONT_FRAGMENT, True),
    (Attr.CONNECTION_ID, 0xDEADBEEF),
    (Attr.PRIORITY, 0x6E0001FF),
    (Attr.USE_CANDIDATE, True),
    (Attr.ICE_CONTROLLING, 2**64 - 1),
    (Attr.ICE_CONTROLLED, 1),
    (Attr.PASSWORD_ALGORITHMS, b"\x00\x02\x00\x00"),
    (Attr.USERHASH, bytes(32)),
    (Attr.RESPONSE_ORIGIN, ("::1", 5349)),
    (0x7F00, b"unknown, comprehension-required"),
    (0xC001, b"unknown, comprehension-optional"),
]


def test_every_attribute_round_trips():
    m = Message(Method.ALLOCATE, Class.REQUEST, TID, EVERY_ATTRIBUTE)
    back = Message.parse(m.encode())
    assert back.attributes == EVERY_ATTRIBUTE
    assert back.unknown == (0x7F00,)
    assert (back.method, back.message_class, back.transaction_id) == (Method.ALLOCATE, Class.REQUEST, TID)


@pytest.mark.parametrize("method", [m for m in Method] + [0xFFF])
@pytest.mark.parametrize("message_class", list(Class))
def test_message_type_round_trips(method, message_class):
    mtype = message_type(method, message_class)
    assert mtype & 0xC000 == 0
    assert split_type(mtype) == (method, message_class)


def test_known_message_types():
    assert message_type(Method.BINDING, Class.REQUEST) == 0x0001
    assert message_type(Method.BINDING, Class.SUCCESS) == 0x0101
    assert message_type(Method.ALLOCATE, Class.ERROR) == 0x0113
    assert message_type(Method.SEND, Class.INDICATION) == 0x0016
    assert message_type(Method.DATA, Class.INDICATION) == 0x0017
    assert message_type(Method.CONNECTION_ATTEMPT, Class.INDICATION) == 0x001C


def test_first_of_duplicate_attributes_wins_and_all_are_kept():
    m = Message.parse(Message(1, 0, TID, [(Attr.LIFETIME, 1), (Attr.LIFETIME, 2)]).encode())
    assert m.get(Attr.LIFETIME) == 1
    assert m.get_all(Attr.LIFETIME) == [1, 2]
    assert Attr.LIFETIME in m and Attr.DATA not in m


@pytest.mark.parametrize("sha256", [False, True])
def test_integrity_round_trip_and_tamper(sha256):
    key = long_term_key("user", "realm", "pass")
    wire = Message(Method.REFRESH, Class.REQUEST, TID, [(Attr.LIFETIME, 0)]).encode(key, sha256=sha256, fingerprint=True)
    m = Message.parse(wire)
    assert m.check_integrity(key) and m.uses_sha256 == sha256 and m.fingerprinted
    assert not m.check_integrity(b"other key")
    tampered = bytearray(wire)
    tampered[27] ^= 1  # inside LIFETIME; also breaks FINGERPRINT
    with pytest.raises(StunError):
        Message.parse(bytes(tampered))
    unsigned = Message.parse(Message(Method.REFRESH, Class.REQUEST, TID).encode())
    assert not unsigned.has_integrity and not unsigned.check_integrity(key)


def test_truncated_sha256_integrity_verifies():
    key = b"k"
    body = struct.pack(">HH", Attr.LIFETIME, 4) + struct.pack(">I", 60)
    length = len(body) + 4 + 16
    header = struct.pack(">HHI12s", 0x0004, length, 0x2112A442, TID)
    mac = hmac.new(key, header + body, hashlib.sha256).digest()[:16]
    m = Message.parse(header + body + struct.pack(">HH", Attr.MESSAGE_INTEGRITY_SHA256, 16) + mac)
    assert m.uses_sha256 and m.check_integrity(key)
    assert not m.check_integrity(b"x")


def test_integrity_covers_the_received_bytes_and_ignores_attributes_after_it():
    key = b"secret"
    signed = Message(Method.ALLOCATE, Class.REQUEST, TID, [(Attr.USERNAME, "u")]).encode(key)
    # Append an attribute after MESSAGE-INTEGRITY and fix the header length: the MAC
    # must still verify (computed with the length up to MESSAGE-INTEGRITY), and the
    # trailing attribute must be ignored.
    extra = struct.pack(">HHI", Attr.LIFETIME, 4, 99)
    wire = bytearray(signed + extra)
    struct.pack_into(">H", wire, 2, len(wire) - 20)
    m = Message.parse(bytes(wire))
    assert m.check_integrity(key)
    assert Attr.LIFETIME not in m


def test_integrity_uses_the_padding_bytes_as_received():
    # Non-zero padding is legal; the MAC covers it, so re-encoding would not verify.
    key = b"secret"
    body = struct.pack(">HH", Attr.USERNAME, 1) + b"u" + b"   "
    header = struct.pack(">HHI12s", 0x0003, len(body) + 24, 0x2112A442, TID)
    mac = hmac.new(key, header + body, hashlib.sha1).digest()
    m = Message.parse(header + body + struct.pack(">HH", Attr.MESSAGE_INTEGRITY, 20) + mac)
    assert m.get(Attr.USERNAME) == "u"
    assert m.check_integrity(key)


def test_error_and_success_builders():
    request = Message(Method.ALLOCATE, Class.REQUEST, TID)
    error = Message.parse(request.error(437, (Attr.SOFTWARE, "x")).encode())
    assert error.message_class == Class.ERROR and error.transaction_id == TID
    assert error.get(Attr.ERROR_CODE) == (437, "Allocation Mismatch")
    ok = request.success((Attr.LIFETIME, 5))
    assert ok.message_class == Class.SUCCESS and ok.get(Attr.LIFETIME) == 5
    assert "ALLOCATE" in repr(ok) and "LIFETIME" in repr(ok)
    assert "0x0fff" in repr(Message(0xFFF, Class.REQUEST, TID, [(0x7F00, b"")]))


def _header(mtype=0x0001, length=0, cookie=0x2112A442):
    return struct.pack(">HHI12s", mtype, length, cookie, TID)


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        _header()[:19],
        _header(mtype=0x8001),  # top bits set
        _header(cookie=0),  # RFC 3489 message without the magic cookie
        _header(length=4),  # length says more than there is
        _header(length=2) + b"\x00\x00",  # length not a multiple of 4
        _header(length=4) + struct.pack(">HH", Attr.USERNAME, 8),  # attribute runs past the end
        _header(length=8) + struct.pack(">HHI", Attr.LIFETIME, 3, 0),  # wrong size for a 32-bit value
        _header(length=8) + struct.pack(">HH", Attr.USERNAME, 2) + b"\xff\xfe\x00\x00",  # not UTF-8
        _header(length=8) + struct.pack(">HH", Attr.XOR_PEER_ADDRESS, 4) + b"\x00\x03\x00\x00",  # family 3
        _header(length=12) + struct.pack(">HH", Attr.XOR_PEER_ADDRESS, 8) + b"\x00\x02" + bytes(6),  # v6 family, v4 size
        _header(length=8) + struct.pack(">HH", Attr.ERROR_CODE, 4) + b"\x00\x00\x07\x00",  # class 7
        _header(length=8) + struct.pack(">HH", Attr.ERROR_CODE, 4) + b"\x00\x00\x04\x64",  # number 100
        _header(length=4) + struct.pack(">HH", Attr.ERROR_CODE, 0),
        _header(length=4) + struct.pack(">HH", Attr.ADDRESS_ERROR_CODE, 0),
        _header(length=8) + struct.pack(">HH", Attr.ADDRESS_ERROR_CODE, 4) + b"\x02\x00\x02\x00",  # class 2
        _header(length=8) + struct.pack(">HH", Attr.ICE_CONTROLLING, 4) + bytes(4),
        _header(length=8) + struct.pack(">HH", Attr.CHANNEL_NUMBER, 2) + bytes(4),
        _header(length=8) + struct.pack(">HH", Attr.UNKNOWN_ATTRIBUTES, 3) + bytes(4),  # odd
        _header(length=8) + struct.pack(">HH", Attr.DONT_FRAGMENT, 1) + bytes(4),  # flag with a value
        _header(length=8) + struct.pack(">HH", Attr.EVEN_PORT, 2) + bytes(4),
        _header(length=8) + struct.pack(">HH", Attr.MESSAGE_INTEGRITY_SHA256, 4) + bytes(4),
        _header(length=16) + struct.pack(">HHI", Attr.FINGERPRINT, 4, 0) + struct.pack(">HHI", Attr.LIFETIME, 4, 0),
        _header(length=8) + struct.pack(">HHI", Attr.FINGERPRINT, 4, 0),  # wrong CRC
    ],
)
def test_malformed_messages_raise_stun_error(wire):
    with pytest.raises(StunError):
        Message.parse(wire)


def test_parse_accepts_memoryview_and_bytearray():
    wire = Message(1, 0, TID, [(Attr.SOFTWARE, "x")]).encode(fingerprint=True)
    assert Message.parse(memoryview(wire)).get(Attr.SOFTWARE) == "x"
    assert Message.parse(bytearray(wire)).fingerprinted
