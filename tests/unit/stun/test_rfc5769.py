"""The RFC 5769 test vectors, byte for byte."""
from appliance.stun import Attr, Class, Message, Method, long_term_key, short_term_key

PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt"
TRANSACTION_ID = bytes.fromhex("b7e7a701bc34d686fa87dfae")

# 2.1 Sample Request
REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "80220010" "5354554e207465737420636c69656e74"
    "00240004" "6e0001ff"
    "80290008" "932ff9b151263b36"
    "00060009" "6576746a3a68367659202020"
    "00080014" "9aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004" "e57a3bcf"
)

# 2.2 Sample IPv4 Response
RESPONSE_IPV4 = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b" "7465737420766563746f7220"
    "00200008" "0001a147e112a643"
    "00080014" "2b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004" "c07d4c96"
)

# 2.3 Sample IPv6 Response
RESPONSE_IPV6 = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b" "7465737420766563746f7220"
    "00200014" "0002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014" "a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004" "c8fb0b4c"
)

# 2.4 Sample Request with Long-Term Authentication
LONG_TERM_REQUEST = bytes.fromhex(
    "000100602112a44278ad3433c6ad72c029da412e"
    "00060012" "e3839ee38388e383aae38383e382afe382b90000"
    "0015001c" "662f2f3439396b39353464364f4c33346f4c39465354767936347341"
    "0014000b" "6578616d706c652e6f726700"
    "00080014" "f67024656dd64a3e02b8e0712e85c9a28ca89666"
)


def test_sample_request():
    m = Message.parse(REQUEST)
    assert (m.method, m.message_class, m.transaction_id) == (Method.BINDING, Class.REQUEST, TRANSACTION_ID)
    assert m.get(Attr.SOFTWARE) == "STUN test client"
    assert m.get(Attr.PRIORITY) == 0x6E0001FF
    assert m.get(Attr.ICE_CONTROLLED) == 0x932FF9B151263B36
    assert m.get(Attr.USERNAME) == "evtj:h6vY"
    assert m.fingerprinted
    assert m.check_integrity(short_term_key(PASSWORD))
    assert not m.check_integrity(short_term_key(PASSWORD + "x"))
    assert m.unknown == ()


def test_sample_ipv4_response():
    m = Message.parse(RESPONSE_IPV4)
    assert (m.method, m.message_class) == (Method.BINDING, Class.SUCCESS)
    assert m.get(Attr.SOFTWARE) == "test vector"
    assert m.get(Attr.XOR_MAPPED_ADDRESS) == ("192.0.2.1", 32853)
    assert m.fingerprinted and m.check_integrity(short_term_key(PASSWORD))


def test_sample_ipv6_response():
    m = Message.parse(RESPONSE_IPV6)
    assert m.get(Attr.XOR_MAPPED_ADDRESS) == ("2001:db8:1234:5678:11:2233:4455:6677", 32853)
    assert m.fingerprinted and m.check_integrity(short_term_key(PASSWORD))


def test_sample_long_term_request():
    m = Message.parse(LONG_TERM_REQUEST)
    username = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
    assert m.get(Attr.USERNAME) == username
    assert m.get(Attr.NONCE) == "f//499k954d6OL34oL9FSTvy64sA"
    assert m.get(Attr.REALM) == "example.org"
    assert not m.fingerprinted
    # The password after SASLprep ("The\u00adM\u00aatr\u2168" becomes "TheMatrIX").
    assert m.check_integrity(long_term_key(username, "example.org", "TheMatrIX"))
    assert not m.check_integrity(long_term_key(username, "example.org", "thematrix"))


def test_long_term_request_reencodes_to_the_same_bytes():
    # The other vectors pad with spaces where the encoder pads with zeros, and their
    # HMACs cover the padding; this one pads with zeros.
    m = Message.parse(LONG_TERM_REQUEST)
    key = long_term_key(m.get(Attr.USERNAME), "example.org", "TheMatrIX")
    assert m.encode(key) == LONG_TERM_REQUEST
