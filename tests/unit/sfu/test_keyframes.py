"""Keyframe requests toward a publisher are aggregated: at most one PLI per stream per 300 ms."""
from appliance.sfu.tracks import KEYFRAME_INTERVAL

from .harness import Lab, audio, video


def test_requests_within_the_interval_become_one_pli():
    lab = Lab(now=99.0)
    pub, sub, late = lab.endpoint("pub"), lab.endpoint("sub"), lab.endpoint("late")
    pub.push(video("cam", ssrc=0xBEEF))
    sub.pull(pub, "cam")  # a new subscriber's keyframe, long before the requests below
    pub.clear()
    for offset in (0.0, 0.05, 0.1, KEYFRAME_INTERVAL - 0.01):
        sub.pli("0", 100.0 + offset)
    sub.pli("0", 100.0 + KEYFRAME_INTERVAL + 0.01)
    lab.at(100.0 + KEYFRAME_INTERVAL + 0.02)
    late.pull(pub, "cam")  # a new subscriber cannot wait
    assert pub.plis() == [0xBEEF] * 3
    assert sub.plis() == late.plis() == []


def test_audio_tracks_get_no_keyframe_requests():
    lab = Lab(now=1.0)
    pub, sub = lab.endpoint("pub"), lab.endpoint("sub")
    pub.push(audio("mic", ssrc=5))
    sub.pull(pub, "mic")
    sub.pli("0")
    assert pub.rtcp() == []
