"""RTP header extensions the SFU carries from publishers to subscribers (RFC 8285, one-byte form),
each under the id the subscriber's own SDP gave it.

Only what a subscriber needs to render right is forwarded: the audio level (RFC 6464) and the
video orientation (3GPP CVO, or mobile video shows sideways). The publisher's others (mid, rid,
transport-wide sequence numbers) belong to its own leg and end at the SFU.
"""
from __future__ import annotations

AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
VIDEO_ORIENTATION = "urn:3gpp:video-orientation"
MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
FORWARDED = {"audio": (AUDIO_LEVEL,), "video": (VIDEO_ORIENTATION,)}
ONE_BYTE_PROFILE = b"\xbe\xde"


class ExtensionIds:
    """A session's ids for the extensions the SFU sends: one per URI across all its m-sections
    (BUNDLE shares the id space), keeping any id the client already chose for that URI."""

    FIRST, LAST = 1, 14  # the one-byte form's ids

    def __init__(self) -> None:
        self._by_uri: dict[str, int] = {}

    def reserve(self, extensions: dict[str, int]) -> None:
        for uri, ext_id in extensions.items():
            self._by_uri.setdefault(uri, ext_id)

    def assign(self, uri: str) -> int | None:
        ext_id = self._by_uri.get(uri)
        if ext_id is None:
            used = set(self._by_uri.values())
            ext_id = next((n for n in range(self.FIRST, self.LAST + 1) if n not in used), None)
            if ext_id is not None:
                self._by_uri[uri] = ext_id
        return ext_id


def id_map(published: dict[str, int], subscribed: dict[str, int]) -> dict[int, int]:
    """Publisher's id -> subscriber's id for every extension both negotiated."""
    return {published[uri]: subscribed[uri] for uri in subscribed if uri in published}


def elements(packet: bytes) -> dict[int, bytes] | None:
    """The one-byte extension elements of an RTP packet by id (None without such a block).
    Called once per packet, and only when some leg forwards extensions."""
    offset = 12 + 4 * (packet[0] & 0x0F)
    if not packet[0] & 0x10 or packet[offset:offset + 2] != ONE_BYTE_PROFILE or len(packet) < offset + 4:
        return None
    end = min(offset + 4 + 4 * (packet[offset + 2] << 8 | packet[offset + 3]), len(packet))
    out: dict[int, bytes] = {}
    i = offset + 4
    while i < end:
        head = packet[i]
        if head == 0:  # padding
            i += 1
            continue
        ext_id, size = head >> 4, (head & 0x0F) + 1
        if ext_id == 15 or i + 1 + size > end:
            break
        out[ext_id] = packet[i + 1:i + 1 + size]
        i += 1 + size
    return out


def body(found: dict[int, bytes], mapping: dict[int, int]) -> bytes:
    """`mapping`'s elements of `found` under their new ids, unpadded (a leg may add its own)."""
    return b"".join(bytes([mapping[i] << 4 | len(data) - 1]) + data for i, data in found.items() if i in mapping)


def block(elements: bytes) -> bytes:
    """The one-byte extension block (profile header, padding) around `elements`; b"" for none."""
    if not elements:
        return b""
    return ONE_BYTE_PROFILE + ((len(elements) + 3) // 4).to_bytes(2, "big") + elements + bytes(-len(elements) % 4)


def find(packet: bytes, ext_id: int) -> bytes | None:
    """One element of an RTP packet's one-byte extension block, without building the dict."""
    offset = 12 + 4 * (packet[0] & 0x0F)
    if not packet[0] & 0x10 or packet[offset:offset + 2] != ONE_BYTE_PROFILE or len(packet) < offset + 4:
        return None
    end = min(offset + 4 + 4 * (packet[offset + 2] << 8 | packet[offset + 3]), len(packet))
    i = offset + 4
    while i < end:
        head = packet[i]
        if head == 0:
            i += 1
            continue
        size = (head & 0x0F) + 1
        if head >> 4 == ext_id:
            return packet[i + 1:i + 1 + size] if i + 1 + size <= end else None
        if head >> 4 == 15:
            return None
        i += 1 + size
    return None


def find_two(packet: bytes, ext_id: int) -> int:
    """A two-byte element's value (the transport-wide sequence number), -1 without one: `find`, with
    Chrome's layout (no CSRCs, a one-byte block that the element leads) read at once, per packet."""
    if (len(packet) > 18 and packet[0] == 0x90 and packet[16] == ext_id << 4 | 1 and packet[12] == 0xBE
            and packet[13] == 0xDE and (packet[14] or packet[15])):
        return packet[17] << 8 | packet[18]
    value = find(packet, ext_id)
    return value[0] << 8 | value[1] if value is not None and len(value) == 2 else -1
