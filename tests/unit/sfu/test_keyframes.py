"""Keyframe requests toward a publisher are aggregated: at most one PLI per stream per 300 ms."""
from types import SimpleNamespace

from appliance.sfu.repair import Repair
from appliance.sfu.rtcp import keyframe_requests
from appliance.sfu.tracks import KEYFRAME_INTERVAL, PublishedTrack


class Port:
    """Stands in for the media port: records the RTCP the SFU sends."""

    def __init__(self):
        self.rtcp = []

    def send_rtcp(self, session, packet):
        self.rtcp.append((session, packet))
        return True


def _repair():
    return Repair(Port())


def test_requests_within_the_interval_become_one_pli():
    repair = _repair()
    publisher = SimpleNamespace(port_session="publisher", rtcp_ssrc=7)
    track = PublishedTrack(publisher, "cam", "1", "video", [], [0xBEEF])
    (stream,) = track.streams
    for offset in (0.0, 0.05, 0.1, KEYFRAME_INTERVAL - 0.01):
        repair.request_keyframe(stream, 100.0 + offset)
    repair.request_keyframe(stream, 100.0 + KEYFRAME_INTERVAL + 0.01)
    repair.request_keyframe(stream, 100.0 + KEYFRAME_INTERVAL + 0.02, force=True)  # a new subscriber cannot wait
    sent = repair.rtcp_out.rtcp
    assert [session for session, _ in sent] == ["publisher"] * 3
    assert all(keyframe_requests(packet) == [0xBEEF] for _, packet in sent)


def test_audio_tracks_get_no_keyframe_requests():
    repair = _repair()
    track = PublishedTrack(SimpleNamespace(port_session="p", rtcp_ssrc=1), "mic", "0", "audio", [], [5])
    repair.request_keyframe(track.streams[0], 1.0, force=True)
    assert repair.rtcp_out.rtcp == []
