"""STUN: the message codec (RFC 8489/5389), integrity and fingerprint, ChannelData
framing, the TCP/TLS stream framer and the RFC 7983 first-byte demultiplexer.

Pure functions and classes, no I/O; the TURN server and the ICE-lite responder share them.
"""
from .attributes import pack_address, unpack_address, xor_value
from .channeldata import CHANNEL_FIRST, CHANNEL_LAST, is_channel_number, pack_channel_data, unpack_channel_data
from .demux import Kind, classify
from .error import StunError
from .framing import StreamFramer
from .integrity import fingerprint, long_term_key, short_term_key
from .message import Message, message_type, split_type
from .registry import (
    COMPREHENSION_OPTIONAL, FAMILY_IPV4, FAMILY_IPV6, HEADER_LENGTH, MAGIC_COOKIE, REASONS, TRANSPORT_TCP, TRANSPORT_UDP, Attr, Class, Method,
)

__all__ = [
    "Attr", "CHANNEL_FIRST", "CHANNEL_LAST", "COMPREHENSION_OPTIONAL", "Class", "FAMILY_IPV4", "FAMILY_IPV6", "HEADER_LENGTH", "Kind",
    "MAGIC_COOKIE", "Message", "Method", "REASONS", "StreamFramer", "StunError", "TRANSPORT_TCP", "TRANSPORT_UDP",
    "classify", "fingerprint", "is_channel_number", "long_term_key", "message_type", "pack_address",
    "pack_channel_data", "short_term_key", "split_type", "unpack_address", "unpack_channel_data", "xor_value",
]
