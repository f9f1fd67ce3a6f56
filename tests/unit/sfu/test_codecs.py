import pytest

from appliance.sfu.codecs import Codec, PayloadTypes, accept, accept_rtx
from appliance.sfu.errors import ItemError


def test_accept_keeps_forwardable_codecs_and_only_the_feedback_the_sfu_answers():
    offered = [Codec(111, "opus", 48000, 2, "minptime=10", ["transport-cc"]), Codec(63, "red", 48000, 2),
               Codec(0, "PCMU", 8000)]
    assert [(c.pt, c.name, c.feedback) for c in accept("audio", offered)] == [(111, "opus", ["transport-cc"]),
                                                                               (0, "PCMU", [])]
    video = [Codec(96, "VP8", 90000, None, "", ["goog-remb", "nack", "nack pli", "ccm fir"]),
             Codec(97, "rtx", 90000, None, "apt=96")]
    assert [(c.name, c.feedback) for c in accept("video", video)] == [("VP8", ["nack pli", "ccm fir"])]
    # With retransmissions on, generic NACK too; RTX is taken for the codecs taken.
    accepted = accept("video", video, retransmissions=True)
    assert [(c.name, c.feedback) for c in accepted] == [("VP8", ["nack", "nack pli", "ccm fir"])]
    assert [(c.pt, c.fmtp) for c in accept_rtx(video, accepted)] == [(97, "apt=96")]
    assert accept_rtx([Codec(99, "rtx", 90000, None, "apt=100")], accepted) == []


def test_payload_types_are_shared_across_a_sessions_sections():
    types = PayloadTypes()
    types.reserve([Codec(96, "VP8", 90000)])
    vp8 = types.assign(Codec(120, "VP8", 90000))
    h264a = types.assign(Codec(102, "H264", 90000, None, "profile-level-id=42e01f;packetization-mode=1"))
    h264b = types.assign(Codec(102, "H264", 90000, None, "profile-level-id=4d001f;packetization-mode=1"))
    assert vp8.pt == 96 and len({96, h264a.pt, h264b.pt}) == 3
    assert types.assign(Codec(99, "VP8", 90000)).pt == 96


def test_payload_types_run_out_cleanly():
    """96-127 first, then 35-63: Chrome's video codecs with their RTX formats need more than 32 numbers."""
    types = PayloadTypes()
    assigned = [types.assign(Codec(0, "VP8", 90000, None, f"x={n}")).pt for n in range(61)]
    assert assigned[:32] == list(range(96, 128)) and sorted(assigned[32:]) == list(range(35, 64))
    with pytest.raises(ItemError, match="no free payload type"):
        types.assign(Codec(0, "VP8", 90000, None, "x=99"))
