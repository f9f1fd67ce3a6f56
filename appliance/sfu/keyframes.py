"""Whether an RTP payload starts a keyframe, per codec: a subscriber moves to another simulcast
layer only at such a packet, so it decodes from there with nothing missing."""
from __future__ import annotations


def _vp8(p: bytes) -> bool:
    # RFC 7741 4.2: the descriptor's S bit and partition 0, then the VP8 header's P bit clear.
    if len(p) < 1 or p[0] & 0x17 != 0x10:
        return False
    i = 1
    if p[0] & 0x80:  # X: extension byte with I, L, T, K
        if len(p) < 2:
            return False
        x = p[1]
        i = 2
        if x & 0x80:  # picture id, 7 or 15 bits
            if len(p) <= i:
                return False
            i += 2 if p[i] & 0x80 else 1
        if x & 0x40:
            i += 1
        if x & 0x30:
            i += 1
    return len(p) > i and not p[i] & 0x01


def _vp9(p: bytes) -> bool:
    # draft-ietf-payload-vp9 4.2: B (start of a frame) set and P (inter-picture predicted) clear.
    return len(p) > 0 and p[0] & 0x48 == 0x08


def _h264(p: bytes) -> bool:
    # RFC 6184: an IDR slice or an SPS, alone, first of a STAP-A, or the start of an FU-A.
    if not p:
        return False
    nal = p[0] & 0x1F
    if nal in (5, 7):
        return True
    if nal == 24:
        i = 1
        while i + 2 < len(p):
            size = p[i] << 8 | p[i + 1]
            if p[i + 2] & 0x1F in (5, 7):
                return True
            i += 2 + size
        return False
    return nal == 28 and len(p) > 1 and p[1] & 0x80 != 0 and p[1] & 0x1F == 5


def _av1(p: bytes) -> bool:
    # AV1 RTP spec 4.4: N, the first packet of a coded video sequence.
    return len(p) > 0 and p[0] & 0x08 != 0


DETECTORS = {"vp8": _vp8, "vp9": _vp9, "h264": _h264, "av1": _av1}


def starts_keyframe(codec: str, payload: bytes) -> bool:
    """`codec` as in a=rtpmap, any case."""
    detect = DETECTORS.get(codec.lower())
    return detect is not None and detect(payload)
