"""The SFU benchmark's load client against a real box on loopback. In Chrome mode it negotiates
transport-wide congestion control and RTX: the box numbers what it sends the subscriber across both
legs, reports on what the publisher numbered, and resends on RTX what the subscriber's feedback says
it lost. In plain mode none of it is negotiated."""
from __future__ import annotations

import select
import time

from appliance.sfu import extensions
from appliance.sfu.forward import payload_offset
from tests.bench.sfu_load import AUDIO_PT, VIDEO_PT, LoadPeer

PACKETS = 200  # 3 video : 1 audio, as the benchmark sends


def _publish_and_pull(api: str, chrome: bool) -> tuple[LoadPeer, LoadPeer, dict[str, int]]:
    publisher = LoadPeer(api, "test-app-secret", chrome=chrome)
    ssrcs = publisher.publish()
    subscriber = LoadPeer(api, "test-app-secret", chrome=chrome)
    subscriber.subscribe(publisher.session)
    return publisher, subscriber, ssrcs


def _send(publisher: LoadPeer, ssrcs: dict[str, int]) -> None:
    """PACKETS packets, paced so that no socket buffer on the way overflows (loopback drops nothing else)."""
    for i in range(PACKETS):
        if i % 10 == 9:
            time.sleep(0.002)
        if i % 4 == 3:
            publisher.send_rtp(AUDIO_PT, i // 4, i * 240, ssrcs["audio"], b"\x00" * 160)
        else:
            publisher.send_rtp(VIDEO_PT, i - i // 4, i * 750, ssrcs["video"], b"\x00" * 1100)


def _rtp_received(peer: LoadPeer, wanted: int, within: float) -> list[bytes]:
    """Up to `wanted` RTP packets read off `peer`'s socket as they came (SRTP: headers in the clear)."""
    packets: list[bytes] = []
    deadline = time.monotonic() + within
    while len(packets) < wanted and time.monotonic() < deadline:
        if not select.select([peer.sock], [], [], 0.1)[0]:
            continue
        data = peer.sock.recv(4096)
        if data[0] >> 6 == 2 and not 192 <= data[1] <= 223:
            packets.append(data)
    return packets


def _number(packet: bytes, ext_id: int) -> int | None:
    found = extensions.find(packet, ext_id)
    return found[0] << 8 | found[1] if found is not None and len(found) == 2 else None


def test_chrome_load_is_numbered_both_ways(appliance):
    box = appliance()
    publisher, subscriber, ssrcs = _publish_and_pull(box.url("/v1/apps/test-app"), chrome=True)
    try:
        receiver = subscriber.transport_in
        assert receiver is not None, "the subscriber did not negotiate transport-wide sequence numbers"
        _send(publisher, ssrcs)
        packets = _rtp_received(subscriber, PACKETS, 5.0)
        assert len(packets) == PACKETS
        assert len({p[8:12] for p in packets}) == 2  # the audio leg and the video leg
        found = [_number(p, receiver.ext_id) for p in packets]
        numbers = [n for n in found if n is not None]
        assert len(numbers) == PACKETS, "a leg sent a packet without a transport-wide number"
        # One numbering for the session's legs, audio and video: every number once, in order.
        assert numbers == list(range(numbers[0], numbers[0] + PACKETS))

        # The box reports on the publisher's numbers every 100 ms.
        deadline = time.monotonic() + 3
        while publisher.feedback_received == 0 and time.monotonic() < deadline:
            select.select([publisher.sock], [], [], 0.1)
            publisher.drain()
        assert publisher.feedback_received > 0

        # The subscriber's feedback reports one video packet lost; the box resends it on RTX.
        video_ssrc = packets[0][8:12]
        lost = next(p for p in packets[PACKETS // 2:] if p[8:12] == video_ssrc)
        for packet, number in zip(packets, numbers):
            if packet is not lost:
                receiver.arrived(number, time.monotonic())
        subscriber.drain()
        assert subscriber.feedback_sent == 1
        resent = _rtp_received(subscriber, 1, 3.0)
        assert resent, "the box resent nothing for the lost packet"
        assert subscriber.dtls is not None and subscriber.dtls.srtp_rx is not None
        rtx = subscriber.dtls.srtp_rx.unprotect(resent[0])
        assert rtx[8:12] not in (p[8:12] for p in packets) and rtx[1] & 0x7F != lost[1] & 0x7F
        offset = payload_offset(rtx)
        assert rtx[offset:offset + 2] == lost[2:4]  # the original sequence number (RFC 4588)
    finally:
        publisher.close()
        subscriber.close()


def test_plain_load_negotiates_no_extensions(appliance):
    box = appliance()
    publisher, subscriber, ssrcs = _publish_and_pull(box.url("/v1/apps/test-app"), chrome=False)
    try:
        assert subscriber.transport_in is None
        _send(publisher, ssrcs)
        packets = _rtp_received(subscriber, PACKETS, 5.0)
        assert len(packets) == PACKETS
        assert not any(p[0] & 0x10 for p in packets), "the box sent header extensions nobody negotiated"
    finally:
        publisher.close()
        subscriber.close()
