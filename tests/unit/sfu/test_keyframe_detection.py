"""Whether an RTP payload starts a keyframe (keyframes.starts_keyframe), from hand-built payloads
checked against the payload formats: VP8 (RFC 7741 4.2 and 4.3), VP9 (RFC 9628 4.2), H.264
(RFC 6184 5.6-5.8) and AV1 (the AV1 RTP payload specification 4.4)."""
import pytest
from hypothesis import given, settings, strategies as st

from appliance.sfu.keyframes import starts_keyframe

from .harness import VP8_INTER, VP8_KEY  # a VP8 keyframe's and an interframe's payload headers
from .harness import vp8_payload as vp8


# --- VP8 ------------------------------------------------------------------------------------------

def test_vp8_without_extension_start_of_partition_0_key_frame():
    assert vp8(VP8_KEY) == b"\x10" + VP8_KEY
    assert starts_keyframe("VP8", vp8(VP8_KEY))
    assert not starts_keyframe("VP8", vp8(VP8_INTER))


def test_vp8_only_the_start_of_partition_0_carries_the_payload_header():
    assert not starts_keyframe("VP8", vp8(VP8_KEY, s=False))  # a continuation packet of the frame
    assert not starts_keyframe("VP8", vp8(VP8_KEY, pid=1))  # start of partition 1: no VP8 header there
    assert not starts_keyframe("VP8", vp8(VP8_KEY, pid=7))
    assert not starts_keyframe("VP8", vp8(VP8_KEY, s=False, picture_id=3))


def test_vp8_n_bit_does_not_change_the_answer():
    assert starts_keyframe("vp8", vp8(VP8_KEY, n=True)) is True


@pytest.mark.parametrize("long_id", [False, True])
def test_vp8_picture_id_7_and_15_bits(long_id):
    # 0x3581 / 0x35: the byte after the picture id has its low bit set, so misreading the M bit
    # (one byte short) sees an interframe, and the interframe's next byte has it clear.
    key = vp8(VP8_KEY, picture_id=0x3581 if long_id else 0x35, long_id=long_id)
    inter = vp8(VP8_INTER, picture_id=0x3581 if long_id else 0x35, long_id=long_id)
    assert key[:2] == b"\x90\x80"
    assert len(key) == 2 + (2 if long_id else 1) + len(VP8_KEY)
    assert starts_keyframe("VP8", key)
    assert not starts_keyframe("VP8", inter)


def test_vp8_15_bit_picture_id_is_two_bytes_by_hand():
    # X S | I | M + picture id 0x0123 (15 bits) | key frame header
    assert starts_keyframe("VP8", bytes([0x90, 0x80, 0x81, 0x23]) + VP8_KEY)
    # Same bytes read as a 7-bit id: 0x23 would be the payload header, with P = 1.
    assert not starts_keyframe("VP8", bytes([0x90, 0x80, 0x81, 0x23]) + VP8_INTER)
    # A 7-bit picture id 0x01 followed directly by the key frame header.
    assert starts_keyframe("VP8", bytes([0x90, 0x80, 0x01]) + VP8_KEY)


@pytest.mark.parametrize("fields", [
    {"tl0": 0x03},
    {"tid": 1},
    {"keyidx": 5},
    {"tid": 2, "keyidx": 5},  # T and K share one byte
    {"picture_id": 0x7FFF, "long_id": True, "tl0": 0x01, "tid": 1, "keyidx": 1},  # I, L, T, K all present
    {"picture_id": 0x11, "tl0": 0x01, "tid": 0},  # what libwebrtc sends with temporal layers
])
def test_vp8_every_extension_field_is_skipped(fields):
    assert starts_keyframe("VP8", vp8(VP8_KEY, **fields))
    assert not starts_keyframe("VP8", vp8(VP8_INTER, **fields))


def test_vp8_chrome_simulcast_key_frame_by_hand():
    # X S, then I L T, picture id 0x0f4b (15 bits), TL0PICIDX 0xa1, TID 0 Y 1, then the key frame.
    assert starts_keyframe("VP8", bytes([0x90, 0xE0, 0x8F, 0x4B, 0xA1, 0x20]) + VP8_KEY)
    assert not starts_keyframe("VP8", bytes([0x90, 0xE0, 0x8F, 0x4B, 0xA1, 0x20]) + VP8_INTER)
    assert not starts_keyframe("VP8", bytes([0x80, 0xE0, 0x8F, 0x4B, 0xA1, 0x20]) + VP8_KEY)  # S clear


def test_vp8_x_bit_with_an_empty_extension_byte():
    assert starts_keyframe("VP8", bytes([0x90, 0x00]) + VP8_KEY)
    assert not starts_keyframe("VP8", bytes([0x90, 0x00]) + VP8_INTER)


@pytest.mark.parametrize("payload", [
    b"", b"\x10", b"\x90", b"\x90\x80", b"\x90\x80\x81", b"\x90\x80\x81\x23", b"\x90\xc0\x05", b"\x90\x30",
])
def test_vp8_truncated_descriptors_are_not_keyframes(payload):
    assert starts_keyframe("VP8", payload) is False


@settings(max_examples=300)
@given(key=st.booleans(), s=st.booleans(), pid=st.integers(0, 7), n=st.booleans(), x=st.booleans(),
       picture_id=st.one_of(st.none(), st.integers(0, 0x7FFF)), long_id=st.booleans(),
       tl0=st.one_of(st.none(), st.integers(0, 255)), tid=st.one_of(st.none(), st.integers(0, 3)),
       keyidx=st.one_of(st.none(), st.integers(0, 31)))
def test_vp8_any_descriptor_a_key_frame_exactly_at_the_start_of_partition_0(key, s, pid, n, x, picture_id, long_id,
                                                                            tl0, tid, keyidx):
    payload = vp8(VP8_KEY if key else VP8_INTER, x=x or None, s=s, pid=pid, n=n, picture_id=picture_id,
                  long_id=long_id, tl0=tl0, tid=tid, keyidx=keyidx)
    assert starts_keyframe("VP8", payload) == (key and s and pid == 0)


# --- VP9 ------------------------------------------------------------------------------------------
# First byte |I|P|L|F|B|E|V|Z| (RFC 9628 4.2): a key frame starts where B is set and P is clear.

@pytest.mark.parametrize("first, expected", [
    (0x08, True),  # B
    (0x8A, True),  # I B V: what libwebrtc sends at a key frame, with the scalability structure
    (0x8E, True),  # I B E V: a key frame in one packet
    (0xAA, True),  # I L B V
    (0x48, False),  # P B: an inter frame's first packet
    (0xCC, False),  # I P B E
    (0x80, False),  # I: a middle packet of a frame
    (0x84, False),  # I E: the last packet of a frame
    (0x02, False),  # V only
    (0x00, False),
])
def test_vp9_b_and_p_bits(first, expected):
    assert starts_keyframe("VP9", bytes([first, 0x80, 0x01, 0x02, 0x03])) is expected


def test_vp9_empty_payload():
    assert starts_keyframe("VP9", b"") is False


# --- H.264 ----------------------------------------------------------------------------------------
# NAL unit header |F|NRI|Type| (RFC 6184 5.3): 5 IDR slice, 7 SPS, 8 PPS, 1 non-IDR slice, 6 SEI,
# 24 STAP-A, 28 FU-A (FU header |S|E|R|Type|).
SPS = bytes([0x67, 0x42, 0xC0, 0x1F, 0x8C, 0x8D, 0x40])
PPS = bytes([0x68, 0xCE, 0x3C, 0x80])
IDR = bytes([0x65, 0x88, 0x84, 0x00, 0x33])
SLICE = bytes([0x41, 0x9A, 0x02, 0x04])
SEI = bytes([0x06, 0x05, 0x65])  # an SEI whose second byte would read as an IDR header


def stap_a(*nalus):
    return bytes([0x78]) + b"".join(len(n).to_bytes(2, "big") + n for n in nalus)


def fu_a(start, end, nal_type, body=b"\x88\x84"):
    return bytes([0x7C, (0x80 if start else 0) | (0x40 if end else 0) | nal_type]) + body


@pytest.mark.parametrize("payload, expected", [
    (IDR, True),
    (SPS, True),
    (PPS, False),
    (SLICE, False),
    (bytes([0x61, 0x9A]), False),  # non-IDR slice, NRI 3
    (SEI, False),
    (bytes([0x25, 0xB8]), True),  # IDR with NRI 1
    (stap_a(SPS, PPS), True),  # what libwebrtc sends ahead of an IDR
    (stap_a(SPS, PPS, IDR), True),
    (stap_a(SEI, SPS, PPS), True),  # the SPS not first
    (stap_a(SEI, SLICE), False),  # an SEI holding 0x65 is not an IDR
    (stap_a(PPS), False),
    (stap_a(), False),
    (fu_a(True, False, 5), True),  # first fragment of an IDR
    (fu_a(False, False, 5), False),  # continuation
    (fu_a(False, True, 5), False),  # last fragment
    (fu_a(True, False, 1), False),  # first fragment of a non-IDR slice
    (fu_a(True, True, 1), False),
    (bytes([0x7C]), False),  # FU indicator without its header
    (b"", False),
])
def test_h264(payload, expected):
    assert starts_keyframe("H264", payload) is expected


def test_h264_stap_a_sizes_are_followed():
    # The first NAL unit's size (3) covers an SEI ending in 0x65; only then comes a slice.
    payload = bytes([0x78, 0x00, 0x03, 0x06, 0x05, 0x65, 0x00, 0x02, 0x41, 0x9A])
    assert not starts_keyframe("h264", payload)
    assert starts_keyframe("h264", payload[:6] + bytes([0x00, 0x02, 0x65, 0x88]))


# --- AV1 ------------------------------------------------------------------------------------------
# Aggregation header |Z|Y|W|W|N|-|-|-|: N marks the first packet of a coded video sequence.

@pytest.mark.parametrize("first, expected", [
    (0x08, True),  # N
    (0x18, True),  # W=1 N
    (0x28, True),  # W=2 N
    (0x10, False),  # W=1
    (0x40, False),  # Y
    (0xC0, False),  # Z Y: a middle fragment
    (0xF7, False),  # everything but N
    (0x00, False),
])
def test_av1_n_bit(first, expected):
    assert starts_keyframe("AV1", bytes([first, 0x0A, 0x0B, 0x00])) is expected


def test_av1_empty_payload():
    assert starts_keyframe("AV1", b"") is False


# --- any codec --------------------------------------------------------------------------------------

def test_codec_names_in_any_case_and_unknown_codecs():
    assert starts_keyframe("vp8", vp8(VP8_KEY)) and starts_keyframe("Vp8", vp8(VP8_KEY))
    assert starts_keyframe("h264", IDR) and starts_keyframe("av1", b"\x08")
    assert starts_keyframe("opus", vp8(VP8_KEY)) is False
    assert starts_keyframe("rtx", vp8(VP8_KEY)) is False
    assert starts_keyframe("", IDR) is False


@settings(max_examples=500)
@given(codec=st.sampled_from(["VP8", "vp9", "H264", "AV1", "opus", "rtx"]) | st.text(max_size=6),
       payload=st.binary(max_size=64))
def test_arbitrary_bytes_never_raise(codec, payload):
    assert starts_keyframe(codec, payload) in (True, False)


@settings(max_examples=300)
@given(nalus=st.lists(st.binary(min_size=1, max_size=12), max_size=5), truncate=st.integers(0, 12))
def test_h264_stap_a_is_a_keyframe_start_when_some_aggregated_unit_is_an_idr_or_sps(nalus, truncate):
    payload = stap_a(*nalus)
    assert starts_keyframe("H264", payload) == any(n[0] & 0x1F in (5, 7) for n in nalus)
    starts_keyframe("H264", payload[:max(1, len(payload) - truncate)])  # truncated: no exception
