"""VP8's numbered descriptor fields (appliance/sfu/vp8.py): where the picture id (7 or 15 bits) and
TL0PICIDX are (RFC 7741 4.2), and the payload with them renumbered and nothing else changed."""
import pytest
from hypothesis import given, strategies as st

from appliance.sfu import vp8

from .harness import VP8_INTER, VP8_KEY, vp8_payload


def test_a_15_bit_picture_id_and_tl0picidx():
    payload = vp8_payload(VP8_KEY, picture_id=0x3581, long_id=True, tl0=200, tid=1)
    assert vp8.read(payload) == vp8.Picture(2, 0x3581, 0x7FFF, 4, 200)
    out = vp8.write(payload, vp8.read(payload), 0x7FFE, 3)
    assert out == vp8_payload(VP8_KEY, picture_id=0x7FFE, long_id=True, tl0=3, tid=1)


def test_a_7_bit_picture_id_stays_7_bits():
    payload = vp8_payload(VP8_INTER, picture_id=0x35)
    picture = vp8.read(payload)
    assert picture == vp8.Picture(2, 0x35, 0x7F, 0, 0)
    assert vp8.write(payload, picture, 0x7F, 0) == vp8_payload(VP8_INTER, picture_id=0x7F)


def test_tl0picidx_without_a_picture_id():
    payload = vp8_payload(VP8_INTER, tl0=9, keyidx=4)
    assert vp8.read(payload) == vp8.Picture(0, 0, 0x7F, 2, 9)
    assert vp8.write(payload, vp8.read(payload), 0, 10) == vp8_payload(VP8_INTER, tl0=10, keyidx=4)


@pytest.mark.parametrize("payload", [
    vp8_payload(VP8_KEY),  # no X: nothing numbered
    vp8_payload(VP8_KEY, x=True),  # an extension byte naming nothing
    vp8_payload(VP8_KEY, tid=1),  # a temporal layer only
    b"", b"\x80", b"\x80\x80", b"\x80\x80\x80", b"\x80\x40",  # cut inside what the extension byte announces
])
def test_nothing_numbered_or_too_short(payload):
    assert vp8.read(payload) is None


@given(st.binary(max_size=12))
def test_any_bytes_read_without_raising_and_write_back_unchanged(payload):
    picture = vp8.read(payload)
    if picture is not None:
        assert vp8.write(payload, picture, picture.pid, picture.tl0) == payload
