"""Send and Data indications on the relay hot path, without building a `Message`.

A Send indication is read with a few struct unpacks when laid out as clients usually
send it (an IPv4 XOR-PEER-ADDRESS and DATA in either order, then perhaps FINGERPRINT),
else with one scan over its attributes; a Data indication is written with one struct
pack. Only XOR-PEER-ADDRESS and DATA matter in either.
"""
from __future__ import annotations

import socket
import struct
import zlib

from appliance.stun import COMPREHENSION_OPTIONAL, MAGIC_COOKIE, Attr, pack_address, xor_value
from appliance.stun.attributes import CODECS
from appliance.stun.channeldata import PADDING
from appliance.stun.integrity import FINGERPRINT_XOR

SEND_INDICATION = 0x0016
DATA_INDICATION = 0x0017

# Plain ints: comparing with IntEnum members costs a method call per attribute.
_XOR_PEER_ADDRESS = int(Attr.XOR_PEER_ADDRESS)
_DATA = int(Attr.DATA)
_FINGERPRINT = int(Attr.FINGERPRINT)

_HEAD = struct.Struct(">HHI")
_ATTR = struct.Struct(">HH")
_U32 = struct.Struct(">I")
_FIRST = struct.Struct(">HHI12xHH")  # the header, then the first attribute's type and length
_PEER_THEN_ATTR = struct.Struct(">xBH4sHH")  # an IPv4 XOR-PEER-ADDRESS's value, the next attribute's type and length
_PEER = struct.Struct(">HHxBH4s")  # an IPv4 XOR-PEER-ADDRESS attribute
_FINGERPRINT_ATTR = struct.Struct(">HHI")
_DATA_V4 = struct.Struct(">HHI12sHHHH4sHH")
_DATA_V6 = struct.Struct(">HHI12sHHHH16sHH")
_PORT_XOR = MAGIC_COOKIE >> 16


def read_send(data: bytes) -> tuple[bytes | str, int, int, int] | None:
    """(peer, peer port, start, end) of DATA in a Send indication, or None to drop it.

    An IPv4 peer comes back as its XORed 4 address bytes, which do not depend on the
    transaction ID (see `Permission.xor_address`), so nothing is decoded per packet;
    an IPv6 peer comes back as its address text. Dropped: a malformed message, one
    without XOR-PEER-ADDRESS or DATA, one with an unknown comprehension-required
    attribute (RFC 8489 6.3.2) or a bad FINGERPRINT.
    """
    size = len(data)
    if size >= 36:
        mtype, length, cookie, type1, length1 = _FIRST.unpack_from(data)
        if mtype == SEND_INDICATION and cookie == MAGIC_COOKIE and length + 20 == size:
            if type1 == _XOR_PEER_ADDRESS and length1 == 8:  # libwebrtc's order
                family, port, address, type2, length2 = _PEER_THEN_ATTR.unpack_from(data, 24)
                if family == 1 and type2 == _DATA and _nothing_or_fingerprint(data, 36 + ((length2 + 3) & ~3)):
                    return address, port ^ _PORT_XOR, 36, 36 + length2
            elif type1 == _DATA:  # coturn's
                after = 24 + ((length1 + 3) & ~3)
                if after + 12 <= size:
                    type2, length2, family, port, address = _PEER.unpack_from(data, after)
                    if type2 == _XOR_PEER_ADDRESS and length2 == 8 and family == 1 and _nothing_or_fingerprint(
                            data, after + 12):
                        return address, port ^ _PORT_XOR, 24, 24 + length1
    return _read_any_send(data)


def _nothing_or_fingerprint(data: bytes, pos: int) -> bool:
    """Whether the message ends at `pos` or with a good FINGERPRINT there. False for anything
    else, which the full scan then reads."""
    size = len(data)
    if pos == size:
        return True
    if pos + 8 != size:
        return False
    atype, alen, crc = _FINGERPRINT_ATTR.unpack_from(data, pos)
    # A copy of a short message costs less than a memoryview of it.
    return atype == _FINGERPRINT and alen == 4 and crc == zlib.crc32(data[:pos]) ^ FINGERPRINT_XOR


def _read_any_send(data: bytes) -> tuple[bytes | str, int, int, int] | None:
    size = len(data)
    if size < 20:
        return None
    mtype, length, cookie = _HEAD.unpack_from(data)
    if mtype != SEND_INDICATION or cookie != MAGIC_COOKIE or length + 20 != size or length & 3:
        return None
    peer = None
    start = end = -1
    pos = 20
    while pos < size:
        atype, alen = _ATTR.unpack_from(data, pos)
        value_at = pos + 4
        following = value_at + ((alen + 3) & ~3)
        if following > size:
            return None
        if atype == _XOR_PEER_ADDRESS:
            if peer is None:
                peer = data[value_at : value_at + alen]
        elif atype == _DATA:
            if start < 0:
                start, end = value_at, value_at + alen
        elif atype == _FINGERPRINT:
            if following != size or alen != 4:
                return None
            if _U32.unpack_from(data, value_at)[0] != zlib.crc32(memoryview(data)[:pos]) ^ FINGERPRINT_XOR:
                return None
        elif atype < COMPREHENSION_OPTIONAL and atype not in CODECS:
            return None
        pos = following
    if peer is None or start < 0:
        return None
    size = len(peer)
    if not (size == 8 and peer[1] == 1 or size == 20 and peer[1] == 2):
        return None  # another family, or a length that holds no address (one too short even for its port)
    port = (peer[2] << 8 | peer[3]) ^ _PORT_XOR
    if size == 8:
        return peer[4:], port, start, end
    return socket.inet_ntop(socket.AF_INET6, xor_value(peer, data[8:20])[4:]), port, start, end


def xor_peer_address(host: str, transaction_id: bytes) -> bytes:
    """The XORed address bytes of `host` for Data indications sent with `transaction_id`."""
    return xor_value(pack_address((host, 0)), transaction_id)[4:]


def pack_data(transaction_id: bytes, xor_address: bytes, port: int, data: bytes) -> bytes:
    """A Data indication carrying `data` from the peer at (`xor_address`, `port`)."""
    size = len(data)
    padded = (size + 3) & ~3
    if len(xor_address) == 4:
        head = _DATA_V4.pack(DATA_INDICATION, 16 + padded, MAGIC_COOKIE, transaction_id,
                             Attr.XOR_PEER_ADDRESS, 8, 1, port ^ _PORT_XOR, xor_address, Attr.DATA, size)
    else:
        head = _DATA_V6.pack(DATA_INDICATION, 28 + padded, MAGIC_COOKIE, transaction_id,
                             Attr.XOR_PEER_ADDRESS, 20, 2, port ^ _PORT_XOR, xor_address, Attr.DATA, size)
    return head + data + PADDING[size & 3] if size & 3 else head + data
