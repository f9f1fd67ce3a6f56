"""STUN messages (RFC 8489, RFC 5389): parse, inspect, verify, encode.

A parsed message keeps its received bytes, so MESSAGE-INTEGRITY is checked over the
message exactly as it arrived (with the length field adjusted), not over a re-encoding.
"""
from __future__ import annotations

import hmac
import os
import struct
from collections.abc import Iterable
from typing import Any

from .attributes import CODECS
from .error import StunError
from .integrity import fingerprint as crc_fingerprint
from .integrity import message_mac
from .registry import COMPREHENSION_OPTIONAL, HEADER_LENGTH, MAGIC_COOKIE, REASONS, Attr, Class, Method

_HEADER = struct.Struct(">HHI")
_FULL_HEADER = struct.Struct(">HHI12s")
_ATTR_HEAD = struct.Struct(">HH")
_U32 = struct.Struct(">I")
_PADDING = (b"", b"\x00\x00\x00", b"\x00\x00", b"\x00")

# Attributes the encoder computes itself rather than copying from `attributes`.
_COMPUTED = (Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256, Attr.FINGERPRINT)


def message_type(method: int, message_class: int) -> int:
    """The 14-bit type field: method bits M0-M11 interleaved with class bits C0, C1."""
    return (
        (method & 0x000F)
        | (method & 0x0070) << 1
        | (method & 0x0F80) << 2
        | (message_class & 1) << 4
        | (message_class & 2) << 7
    )


def split_type(mtype: int) -> tuple[int, int]:
    method = (mtype & 0x000F) | (mtype & 0x00E0) >> 1 | (mtype & 0x3E00) >> 2
    message_class = (mtype & 0x0010) >> 4 | (mtype & 0x0100) >> 7
    return method, message_class


class Message:
    """One STUN message: method, class, transaction ID and attributes in order.

    `attributes` is a list of `(type, value)`; values are decoded as `attributes.CODECS`
    says, and unknown types are kept as raw bytes. After parsing, `unknown` lists the
    comprehension-required types this codec does not know (the 420 answer).
    """

    __slots__ = (
        "method", "message_class", "transaction_id", "attributes", "unknown",
        "fingerprinted", "_raw", "_integrity_at", "_sha256_at",
    )

    def __init__(
        self,
        method: int,
        message_class: int,
        transaction_id: bytes | None = None,
        attributes: Iterable[tuple[int, Any]] = (),
    ) -> None:
        self.method = method
        self.message_class = message_class
        self.transaction_id = os.urandom(12) if transaction_id is None else transaction_id
        self.attributes: list[tuple[int, Any]] = list(attributes)
        self.unknown: tuple[int, ...] = ()
        self.fingerprinted = False
        self._raw = b""
        self._integrity_at: int | None = None
        self._sha256_at: int | None = None

    # --- reading -----------------------------------------------------------------

    def get(self, attr: int, default: Any = None) -> Any:
        """The first value of `attr`: later duplicates are ignored (RFC 8489 14)."""
        for atype, value in self.attributes:
            if atype == attr:
                return value
        return default

    def get_all(self, attr: int) -> list[Any]:
        return [value for atype, value in self.attributes if atype == attr]

    def __contains__(self, attr: int) -> bool:
        return any(atype == attr for atype, _ in self.attributes)

    def add(self, attr: int, value: Any = True) -> Message:
        self.attributes.append((attr, value))
        return self

    @property
    def has_integrity(self) -> bool:
        return self._integrity_at is not None or self._sha256_at is not None

    @property
    def uses_sha256(self) -> bool:
        """Whether the received message carried MESSAGE-INTEGRITY-SHA256 (answer in kind)."""
        return self._sha256_at is not None

    def check_integrity(self, key: bytes) -> bool:
        """Verify the received message's integrity attribute with `key`.

        MESSAGE-INTEGRITY-SHA256 is checked when present, else MESSAGE-INTEGRITY; a
        message with neither fails.
        """
        if self._sha256_at is not None:
            at, attr, sha256 = self._sha256_at, Attr.MESSAGE_INTEGRITY_SHA256, True
        elif self._integrity_at is not None:
            at, attr, sha256 = self._integrity_at, Attr.MESSAGE_INTEGRITY, False
        else:
            return False
        received = self.get(attr)
        expected = message_mac(key, memoryview(self._raw)[:at], at - HEADER_LENGTH + 4 + len(received), sha256)
        return hmac.compare_digest(expected[: len(received)], received)

    # --- answering ----------------------------------------------------------------

    def success(self, *attributes: tuple[int, Any]) -> Message:
        return Message(self.method, Class.SUCCESS, self.transaction_id, attributes)

    def error(self, code: int, *attributes: tuple[int, Any], reason: str | None = None) -> Message:
        error = (Attr.ERROR_CODE, (code, REASONS.get(code, "Error") if reason is None else reason))
        return Message(self.method, Class.ERROR, self.transaction_id, (error, *attributes))

    # --- wire format ----------------------------------------------------------------

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> Message:
        """Parse one whole message; anything malformed raises `StunError`.

        Checks the header (zero top bits, magic cookie, length), every attribute's
        bounds and known values, and FINGERPRINT when present. Attributes after
        MESSAGE-INTEGRITY other than MESSAGE-INTEGRITY-SHA256 and FINGERPRINT, and any
        after MESSAGE-INTEGRITY-SHA256 other than FINGERPRINT, are ignored (RFC 8489 14.5).
        """
        if not isinstance(data, bytes):
            data = bytes(data)
        size = len(data)
        if size < HEADER_LENGTH:
            raise StunError(f"{size} bytes is shorter than a STUN header")
        mtype, length, cookie = _HEADER.unpack_from(data)
        if mtype & 0xC000:
            raise StunError("the top two bits of a STUN message are not zero")
        if cookie != MAGIC_COOKIE:
            raise StunError("no magic cookie")
        if length & 3 or length + HEADER_LENGTH != size:
            raise StunError(f"length field {length} does not fit a {size}-byte message")
        message = cls(*split_type(mtype), data[8:20])
        message._raw = data
        tid = message.transaction_id
        attributes = message.attributes
        unknown = []
        pos = HEADER_LENGTH
        while pos < size:
            atype, alen = _ATTR_HEAD.unpack_from(data, pos)
            start = pos + 4
            end = start + alen
            following = (end + 3) & ~3
            if following > size:
                raise StunError(f"attribute 0x{atype:04x} runs past the end of the message")
            value: Any = data[start:end]
            if atype == Attr.FINGERPRINT:
                if following != size:
                    raise StunError("FINGERPRINT is not the last attribute")
                if alen != 4 or _U32.unpack(value)[0] != crc_fingerprint(data[:pos]):
                    raise StunError("FINGERPRINT does not match")
                message.fingerprinted = True
                attributes.append((atype, _U32.unpack(value)[0]))
            elif message._sha256_at is not None or (
                message._integrity_at is not None and atype != Attr.MESSAGE_INTEGRITY_SHA256
            ):
                pass
            else:
                codec = CODECS.get(atype)
                if codec is not None:
                    value = codec[0](value, tid)
                elif atype < COMPREHENSION_OPTIONAL:
                    unknown.append(atype)
                if atype == Attr.MESSAGE_INTEGRITY:
                    message._integrity_at = pos
                elif atype == Attr.MESSAGE_INTEGRITY_SHA256:
                    message._sha256_at = pos
                attributes.append((atype, value))
            pos = following
        message.unknown = tuple(unknown)
        return message

    def encode(self, key: bytes | None = None, *, sha256: bool = False, fingerprint: bool = False) -> bytes:
        """The message's bytes, signed with `key` when given, with FINGERPRINT when asked.

        Integrity and fingerprint attributes in `attributes` are not copied: they are
        computed here, in the order RFC 8489 requires.
        """
        tid = self.transaction_id
        parts: list[bytes] = []
        for atype, value in self.attributes:
            if atype in _COMPUTED:
                continue
            codec = CODECS.get(atype)
            data = codec[1](value, tid) if codec is not None else bytes(value)
            parts += (_ATTR_HEAD.pack(atype, len(data)), data, _PADDING[len(data) & 3])
        out = bytearray(_FULL_HEADER.pack(message_type(self.method, self.message_class), 0, MAGIC_COOKIE, tid))
        out += b"".join(parts)
        if key is not None:
            attr, size = (Attr.MESSAGE_INTEGRITY_SHA256, 32) if sha256 else (Attr.MESSAGE_INTEGRITY, 20)
            mac = message_mac(key, out, len(out) - HEADER_LENGTH + 4 + size, sha256)
            out += _ATTR_HEAD.pack(attr, size) + mac
        if fingerprint:
            struct.pack_into(">H", out, 2, len(out) - HEADER_LENGTH + 8)
            out += _ATTR_HEAD.pack(Attr.FINGERPRINT, 4) + _U32.pack(crc_fingerprint(out))
        struct.pack_into(">H", out, 2, len(out) - HEADER_LENGTH)
        return bytes(out)

    def __repr__(self) -> str:
        method = _name(Method, self.method)
        klass = _name(Class, self.message_class)
        attrs = ", ".join(f"{_name(Attr, t)}={v!r}" for t, v in self.attributes)
        return f"Message({method} {klass} {self.transaction_id.hex()} [{attrs}])"


def _name(enum: Any, value: int) -> str:
    try:
        return enum(value).name
    except ValueError:
        return f"0x{value:04x}"
