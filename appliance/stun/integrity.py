"""Keys and checksums: MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT."""
from __future__ import annotations

import hashlib
import hmac
import struct
import zlib

FINGERPRINT_XOR = 0x5354554E

_LENGTH = struct.Struct(">H")


def long_term_key(username: str, realm: str, password: str) -> bytes:
    """The long-term credential key, MD5(username:realm:password) (RFC 8489 9.2.2)."""
    text = f"{username}:{realm}:{password}".encode("utf-8")
    return hashlib.md5(text, usedforsecurity=False).digest()


def short_term_key(password: str) -> bytes:
    """The short-term credential key: the password itself (RFC 8489 9.1.1), as ICE uses it."""
    return password.encode("utf-8")


def message_mac(key: bytes, prefix: bytes | bytearray | memoryview, length: int, sha256: bool) -> bytes:
    """The HMAC over a message's bytes before its integrity attribute.

    `prefix` is the header and the attributes before MESSAGE-INTEGRITY(-SHA256);
    `length` is what the header's length field must say while hashing: the body up
    to and including the integrity attribute (RFC 8489 14.5 and 14.6).
    """
    view = memoryview(prefix)
    mac = hmac.new(key, digestmod=hashlib.sha256 if sha256 else hashlib.sha1)
    mac.update(view[:2])
    mac.update(_LENGTH.pack(length))
    mac.update(view[4:])
    return mac.digest()


def fingerprint(data: bytes | bytearray | memoryview) -> int:
    """CRC-32 of the message up to FINGERPRINT, XORed with 0x5354554e (RFC 8489 14.7)."""
    return zlib.crc32(data) ^ FINGERPRINT_XOR
