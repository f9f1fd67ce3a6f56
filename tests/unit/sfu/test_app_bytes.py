"""The SFU's media bytes per app (Sfu.app_bytes, read by /metrics and the usage figures): what its
publishers sent and its subscribers were sent, on the wire, never going down when tracks and sessions end."""
from appliance.sfu.forward import payload_offset
from appliance.sfu.streams import PACKET_OVERHEAD

from .harness import Lab, audio, video

RTP_HEADER = 12


def test_app_bytes_are_what_was_sent_and_forwarded_and_outlive_their_tracks_and_sessions():
    lab = Lab(now=10.0)
    pub, sub = lab.endpoint("pub", app="a"), lab.endpoint("sub", app="a")
    idle = lab.endpoint("idle", app="b")  # another app's session, which sends nothing
    pub.push(audio("mic"), video("cam"))
    sub.pull(pub, "cam", "mic")
    pub.connect()
    sub.connect()
    camera, mic = pub.sender("cam"), pub.sender("mic")
    sent = [pub.send_rtp(packet) for key in (True, False, False) for packet in camera.frame_packets(None, key)]
    sent += [pub.send_rtp(packet) for _ in range(3) for packet in mic.frame_packets()]
    forwarded = list(sub.port_session.rtp)
    assert len(forwarded) == len(sent) == 9
    counted = lab.sfu.app_bytes()
    assert counted["a", "ingress"] == sum(len(data) + PACKET_OVERHEAD for data in sent)
    # The legs count payloads; the subscriber's headers carry extensions the count leaves out.
    assert counted["a", "egress"] == sum(len(data) - payload_offset(data) + RTP_HEADER + PACKET_OVERHEAD
                                         for data in forwarded)
    assert counted["b", "egress"] == counted["b", "ingress"] == 0
    assert sub.close("0") == [{"mid": "0"}]  # the leg ends: its bytes stay counted
    assert lab.sfu.app_bytes() == counted
    pub.leave()  # the tracks end, then the session
    sub.leave()
    idle.leave()
    assert not lab.sfu.sessions and lab.sfu.app_bytes() == counted
