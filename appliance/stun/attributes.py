"""Attribute values: from their bytes on the wire to Python values and back.

Addresses are `(host, port)` with the host spelled by `socket.inet_ntop`, the same
spelling asyncio reports for a received datagram, so both can key the same dicts.
Each codec takes the transaction ID because the XOR address types need it.
"""
from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Any

from .error import StunError
from .registry import FAMILY_IPV4, FAMILY_IPV6, MAGIC_COOKIE, Attr

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_ADDRESS_HEAD = struct.Struct(">xBH")
_ERROR_HEAD = struct.Struct(">xxBB")
_ADDRESS_ERROR_HEAD = struct.Struct(">BxBB")

# The port is XORed with the cookie's top 16 bits, an IPv4 address with the cookie,
# an IPv6 address with the cookie followed by the transaction ID (RFC 8489 14.2).
_XOR_PORT_AND_IPV4 = (MAGIC_COOKIE >> 16) << 32 | MAGIC_COOKIE
_XOR_PORT_AND_COOKIE = _XOR_PORT_AND_IPV4.to_bytes(6, "big")

Address = tuple[str, int]
Codec = tuple[Callable[[bytes, bytes], Any], Callable[[Any, bytes], bytes]]


def pack_address(address: Address) -> bytes:
    """The value of MAPPED-ADDRESS-style attributes for (host, port)."""
    host, port = address[0], address[1]
    if ":" in host:
        return _ADDRESS_HEAD.pack(FAMILY_IPV6, port) + socket.inet_pton(socket.AF_INET6, host)
    return _ADDRESS_HEAD.pack(FAMILY_IPV4, port) + socket.inet_pton(socket.AF_INET, host)


def unpack_address(value: bytes) -> Address:
    size = len(value)
    if size == 8 and value[1] == FAMILY_IPV4:
        host = socket.inet_ntop(socket.AF_INET, value[4:8])
    elif size == 20 and value[1] == FAMILY_IPV6:
        host = socket.inet_ntop(socket.AF_INET6, value[4:20])
    else:
        raise StunError(f"address of {size} bytes with family {value[1] if size > 1 else None}")
    return host, value[2] << 8 | value[3]


def xor_value(value: bytes, transaction_id: bytes) -> bytes:
    """XOR the port and address of an address value; applying it twice gives the value back."""
    size = len(value)
    if size == 8:
        tail = int.from_bytes(value[2:], "big") ^ _XOR_PORT_AND_IPV4
        return value[:2] + tail.to_bytes(6, "big")
    if size == 20:
        mask = int.from_bytes(_XOR_PORT_AND_COOKIE + transaction_id, "big")
        return value[:2] + (int.from_bytes(value[2:], "big") ^ mask).to_bytes(18, "big")
    raise StunError(f"XOR address of {size} bytes")


def _address(value: bytes, tid: bytes) -> Address:
    return unpack_address(value)


def _pack_address(address: Address, tid: bytes) -> bytes:
    return pack_address(address)


def _xor_address(value: bytes, tid: bytes) -> Address:
    return unpack_address(xor_value(value, tid))


def _pack_xor_address(address: Address, tid: bytes) -> bytes:
    return xor_value(pack_address(address), tid)


def _text(value: bytes, tid: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise StunError("text attribute that is not UTF-8") from None


def _pack_text(text: str, tid: bytes) -> bytes:
    return text.encode("utf-8")


def _raw(value: bytes, tid: bytes) -> bytes:
    return value


def _pack_raw(value: bytes, tid: bytes) -> bytes:
    return bytes(value)


def _sized(*sizes: int) -> Callable[[bytes, bytes], bytes]:
    def decode(value: bytes, tid: bytes) -> bytes:
        if len(value) not in sizes:
            raise StunError(f"attribute of {len(value)} bytes, expected {sizes}")
        return value

    return decode


def _unsigned(layout: struct.Struct) -> Codec:
    """The codec of an unsigned integer filling the whole value (LIFETIME, PRIORITY, ...)."""

    def decode(value: bytes, tid: bytes) -> int:
        if len(value) != layout.size:
            raise StunError(f"{8 * layout.size}-bit attribute of {len(value)} bytes")
        return layout.unpack(value)[0]

    def encode(number: int, tid: bytes) -> bytes:
        return layout.pack(number)

    return decode, encode


def _leading_u16(value: bytes, tid: bytes) -> int:
    # CHANNEL-NUMBER: 16 bits then 16 reserved bits.
    if len(value) != 4:
        raise StunError(f"CHANNEL-NUMBER of {len(value)} bytes")
    return value[0] << 8 | value[1]


def _pack_leading_u16(number: int, tid: bytes) -> bytes:
    return _U16.pack(number) + b"\x00\x00"


def _leading_byte(value: bytes, tid: bytes) -> int:
    # REQUESTED-TRANSPORT and the address-family attributes: one byte then 24 reserved bits.
    if len(value) != 4:
        raise StunError(f"one-byte attribute of {len(value)} bytes")
    return value[0]


def _pack_leading_byte(number: int, tid: bytes) -> bytes:
    return bytes((number, 0, 0, 0))


def _flag(value: bytes, tid: bytes) -> bool:
    if value:
        raise StunError("flag attribute with a value")
    return True


def _pack_flag(flag: bool, tid: bytes) -> bytes:
    return b""


def _even_port(value: bytes, tid: bytes) -> bool:
    # One byte whose top bit asks to reserve the next port too.
    if len(value) != 1:
        raise StunError(f"EVEN-PORT of {len(value)} bytes")
    return bool(value[0] & 0x80)


def _pack_even_port(reserve: bool, tid: bytes) -> bytes:
    return b"\x80" if reserve else b"\x00"


def _error_code(value: bytes, tid: bytes) -> tuple[int, str]:
    if len(value) < 4:
        raise StunError("ERROR-CODE shorter than 4 bytes")
    hundreds, rest = _ERROR_HEAD.unpack_from(value)
    hundreds &= 0x07
    if not 3 <= hundreds <= 6 or rest > 99:
        raise StunError(f"ERROR-CODE class {hundreds} number {rest}")
    return hundreds * 100 + rest, _text(value[4:], tid)


def _pack_error_code(error: tuple[int, str], tid: bytes) -> bytes:
    code, reason = error
    return _ERROR_HEAD.pack(code // 100, code % 100) + reason.encode("utf-8")


def _address_error_code(value: bytes, tid: bytes) -> tuple[int, int, str]:
    if len(value) < 4:
        raise StunError("ADDRESS-ERROR-CODE shorter than 4 bytes")
    family, hundreds, rest = _ADDRESS_ERROR_HEAD.unpack_from(value)
    hundreds &= 0x07
    if not 3 <= hundreds <= 6 or rest > 99:
        raise StunError(f"ADDRESS-ERROR-CODE class {hundreds} number {rest}")
    return family, hundreds * 100 + rest, _text(value[4:], tid)


def _pack_address_error_code(error: tuple[int, int, str], tid: bytes) -> bytes:
    family, code, reason = error
    return _ADDRESS_ERROR_HEAD.pack(family, code // 100, code % 100) + reason.encode("utf-8")


def _unknown_attributes(value: bytes, tid: bytes) -> tuple[int, ...]:
    if len(value) % 2:
        raise StunError("UNKNOWN-ATTRIBUTES of odd length")
    return struct.unpack(f">{len(value) // 2}H", value)


def _pack_unknown_attributes(types: tuple[int, ...], tid: bytes) -> bytes:
    return struct.pack(f">{len(types)}H", *types)


def _integrity_sha256(value: bytes, tid: bytes) -> bytes:
    # RFC 8489 14.6: may be truncated to 16 bytes, in steps of 4.
    if not 16 <= len(value) <= 32 or len(value) % 4:
        raise StunError(f"MESSAGE-INTEGRITY-SHA256 of {len(value)} bytes")
    return value


_ADDRESS: Codec = (_address, _pack_address)
_XOR_ADDRESS: Codec = (_xor_address, _pack_xor_address)
_TEXT: Codec = (_text, _pack_text)
_RAW: Codec = (_raw, _pack_raw)
_U32_CODEC = _unsigned(_U32)
_U64_CODEC = _unsigned(_U64)
_BYTE: Codec = (_leading_byte, _pack_leading_byte)
_FLAG: Codec = (_flag, _pack_flag)

CODECS: dict[int, Codec] = {
    Attr.MAPPED_ADDRESS: _ADDRESS,
    Attr.USERNAME: _TEXT,
    Attr.MESSAGE_INTEGRITY: (_sized(20), _pack_raw),
    Attr.ERROR_CODE: (_error_code, _pack_error_code),
    Attr.UNKNOWN_ATTRIBUTES: (_unknown_attributes, _pack_unknown_attributes),
    Attr.CHANNEL_NUMBER: (_leading_u16, _pack_leading_u16),
    Attr.LIFETIME: _U32_CODEC,
    Attr.XOR_PEER_ADDRESS: _XOR_ADDRESS,
    Attr.DATA: _RAW,
    Attr.REALM: _TEXT,
    Attr.NONCE: _TEXT,
    Attr.XOR_RELAYED_ADDRESS: _XOR_ADDRESS,
    Attr.REQUESTED_ADDRESS_FAMILY: _BYTE,
    Attr.EVEN_PORT: (_even_port, _pack_even_port),
    Attr.REQUESTED_TRANSPORT: _BYTE,
    Attr.DONT_FRAGMENT: _FLAG,
    Attr.MESSAGE_INTEGRITY_SHA256: (_integrity_sha256, _pack_raw),
    Attr.PASSWORD_ALGORITHM: _RAW,
    Attr.USERHASH: _RAW,
    Attr.XOR_MAPPED_ADDRESS: _XOR_ADDRESS,
    Attr.RESERVATION_TOKEN: (_sized(8), _pack_raw),
    Attr.PRIORITY: _U32_CODEC,
    Attr.USE_CANDIDATE: _FLAG,
    Attr.CONNECTION_ID: _U32_CODEC,
    Attr.ADDITIONAL_ADDRESS_FAMILY: _BYTE,
    Attr.ADDRESS_ERROR_CODE: (_address_error_code, _pack_address_error_code),
    Attr.PASSWORD_ALGORITHMS: _RAW,
    Attr.ALTERNATE_DOMAIN: _TEXT,
    Attr.ICMP: _RAW,
    Attr.SOFTWARE: _TEXT,
    Attr.ALTERNATE_SERVER: _ADDRESS,
    Attr.FINGERPRINT: _U32_CODEC,
    Attr.ICE_CONTROLLED: _U64_CODEC,
    Attr.ICE_CONTROLLING: _U64_CODEC,
    Attr.RESPONSE_ORIGIN: _ADDRESS,
    Attr.OTHER_ADDRESS: _ADDRESS,
}
