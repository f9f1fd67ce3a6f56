"""The media port against a second WebRTC stack: aiortc's RTCPeerConnection on loopback.

One session is set up by hand the way the SFU does: parse aiortc's offer with aiortc's SDP
reader, register the session's ICE credentials, fingerprint and DTLS role on the port,
answer with aiortc's SDP objects. aiortc then runs full ICE (controlling) against our
ICE-lite responder, the DTLS handshake with our server, and sends Opus. The handler
checks what the port decrypts and echoes it back under another SSRC; aiortc must decode
it. The time from setRemoteDescription to our DTLS `Connected` is printed (pytest -s).
Each test runs on 127.0.0.1 and on ::1; ICE-TCP and the health agent's probe are here too.
"""
from __future__ import annotations

import asyncio
import ipaddress
import struct
import time
from types import SimpleNamespace

import aioice.ice
import pytest
from aiortc import RTCCertificate, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack
from aiortc.rtcdtlstransport import RTCDtlsParameters
from aiortc.rtcicetransport import RTCIceParameters
from aiortc.sdp import GroupDescription, MediaDescription, SessionDescription
from prometheus_client import CollectorRegistry

import appliance.rtc.io
from appliance.announce.probes import StunProbe, binding_request, bound
from appliance.config import Config
from appliance.config.schema import SfuConfig
from appliance.config.values import Endpoint
from appliance.rtc import Connected, PathClosed, PathSelected, new_credentials
from appliance.rtc.dtls import DtlsConnection, DtlsContext
from appliance.rtc.dtls import State as DtlsState
from appliance.rtc.framing import Rfc4571Framer, frame
from appliance.rtc.service import MediaService
from appliance.stun import Attr, Class, Message, Method, short_term_key
from tests.lab.appliance import has_ipv6_loopback
from tests.unit.rtc.harness import rtp

ECHO_SSRC = 0x0EC40EC4
PACKETS = 25
CLIENT_CONTEXT = DtlsContext(RTCCertificate.generateCertificate())


class Echo:
    """A session handler: records what arrives and sends each RTP packet straight back."""

    def __init__(self, port) -> None:
        self.port = port
        self.session = None
        self.loop = asyncio.get_running_loop()
        self.selected_at: float | None = None
        self.connected_at: asyncio.Future[float] = self.loop.create_future()
        self.rtp_packets: list[bytes] = []
        self.rtcp_packets: list[bytes] = []
        self.events: list = []
        self.enough = asyncio.Event()

    def rtp(self, packet: bytes, now: float) -> None:
        self.rtp_packets.append(packet)
        if len(self.rtp_packets) >= PACKETS:
            self.enough.set()
        self.port.send_rtp(self.session, packet[:8] + struct.pack("!I", ECHO_SSRC) + packet[12:])

    def rtcp(self, packet: bytes, now: float) -> None:
        self.rtcp_packets.append(packet)

    def data(self, data: bytes) -> None:
        raise AssertionError("no data channel was negotiated")

    def event(self, event, now: float) -> None:
        self.events.append(event)
        if isinstance(event, PathSelected) and self.selected_at is None:
            self.selected_at = time.perf_counter()
        if isinstance(event, Connected) and not self.connected_at.done():
            self.connected_at.set_result(time.perf_counter())


LOOPBACKS = ["127.0.0.1", pytest.param("::1", marks=pytest.mark.skipif(not has_ipv6_loopback(), reason="no ::1"))]


@pytest.fixture(params=LOOPBACKS)
async def media(request, monkeypatch):
    """The media service on one loopback address (TCP too), aiortc gathering on that address only."""
    # aioice gathers every interface but loopback; these tests stay on loopback.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: [request.param])
    host = ipaddress.ip_address(request.param)
    box = SimpleNamespace(config=Config(sfu=SfuConfig(udp=(Endpoint(host, 0),), tcp=(Endpoint(host, 0),))),
                          registry=CollectorRegistry())
    service = MediaService(box)
    await service.start()
    assert service.health() is None
    yield service
    await service.stop()
    assert service.health() == "not listening"


def _answer(offer: SessionDescription, ufrag: str, pwd: str, media: MediaService) -> str:
    """Our ICE-lite answer for aiortc's one audio section: Opus only, sendrecv, our transport."""
    audio = offer.media[0]
    opus = next(codec for codec in audio.rtp.codecs if codec.mimeType.lower() == "audio/opus")
    candidates = media.candidates()
    section = MediaDescription("audio", candidates[0].port, audio.profile, [opus.payloadType])
    section.host = candidates[0].ip
    section.rtp.codecs = [opus]
    section.rtp.muxId = audio.rtp.muxId
    section.direction = "sendrecv"
    section.rtcp_port, section.rtcp_mux = 9, True
    section.ice = RTCIceParameters(usernameFragment=ufrag, password=pwd, iceLite=True)
    # aiortc offers actpass; we answer passive (role "server"): the port is the DTLS server.
    section.dtls = RTCDtlsParameters(fingerprints=[media.port.context.fingerprint], role="server")
    section.ice_candidates = list(candidates)
    section.ice_candidates_complete = True
    answer = SessionDescription()
    answer.origin = "- 1 1 IN IP4 0.0.0.0"
    answer.group = [GroupDescription("BUNDLE", [audio.rtp.muxId])]
    answer.media = [section]
    return str(answer)


async def test_aiortc_sends_audio_through_the_port_and_decodes_the_echo(media):
    pc = RTCPeerConnection()
    tracks: asyncio.Queue = asyncio.Queue()
    pc.on("track", tracks.put_nowait)
    pc.addTrack(AudioStreamTrack())
    try:
        await pc.setLocalDescription(await pc.createOffer())
        offer = SessionDescription.parse(pc.localDescription.sdp)
        ice, dtls = offer.media[0].ice, offer.media[0].dtls
        assert dtls.role == "auto"  # actpass
        ufrag, pwd = new_credentials()
        echo = Echo(media.port)
        echo.session = media.port.add_session(
            echo, ufrag, pwd, remote_ufrag=ice.usernameFragment, remote_fingerprints=dtls.fingerprints, server=True,
        )
        answer = _answer(offer, ufrag, pwd, media)
        assert "a=ice-lite" in answer and "a=setup:passive" in answer and "a=rtcp-mux" in answer

        started = time.perf_counter()
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        connected = await asyncio.wait_for(echo.connected_at, 5)
        print(f"\nsetRemoteDescription -> ICE path selected {1000 * (echo.selected_at - started):.1f} ms, "
              f"DTLS connected {1000 * (connected - started):.1f} ms")
        assert isinstance(echo.events[0], PathSelected)

        await asyncio.wait_for(echo.enough.wait(), 5)
        payload_type = offer.media[0].rtp.codecs[0].payloadType
        ssrc = offer.media[0].ssrc[0].ssrc
        assert {packet[1] & 0x7F for packet in echo.rtp_packets} == {payload_type}
        assert {struct.unpack_from("!I", packet, 8)[0] for packet in echo.rtp_packets} == {ssrc}

        track = await asyncio.wait_for(tracks.get(), 5)
        decoded = await asyncio.wait_for(track.recv(), 5)
        assert decoded.sample_rate == 48000 and decoded.samples > 0
        receiver = pc.getTransceivers()[0].receiver
        assert ECHO_SSRC in {source.source for source in receiver.getSynchronizationSources()}
    finally:
        await pc.close()


async def test_the_health_agents_probe_is_answered(media):
    probe = StunProbe("sfu", Endpoint(ipaddress.ip_address(media.udp[0][0]), media.udp[0][1]), binding_request, bound)
    result = await probe.check(None, 2.0)
    assert result.ok, result.detail


async def test_ice_tcp_carries_checks_dtls_and_srtp(media):
    """RFC 6544 passive candidate: our own client pieces over a TCP connection (aioice has no ICE-TCP)."""
    ufrag, pwd = new_credentials()
    client = DtlsConnection(CLIENT_CONTEXT, False, [media.port.context.fingerprint])
    echo = Echo(media.port)
    echo.session = media.port.add_session(
        echo, ufrag, pwd, remote_ufrag="tcpc", remote_fingerprints=[CLIENT_CONTEXT.fingerprint], server=True,
    )
    candidate = next(c for c in media.candidates() if c.protocol == "tcp")
    assert candidate.tcpType == "passive"
    reader, writer = await asyncio.open_connection(candidate.ip, candidate.port)
    framer = Rfc4571Framer()

    async def packets():
        while True:
            data = await asyncio.wait_for(reader.read(4096), 5)
            assert data, "the port closed the connection"
            for packet in framer.feed(data):
                yield packet

    incoming = packets()
    check = Message(Method.BINDING, Class.REQUEST, attributes=[
        (Attr.USERNAME, f"{ufrag}:tcpc"), (Attr.ICE_CONTROLLING, 1), (Attr.USE_CANDIDATE, True), (Attr.PRIORITY, 1),
    ])
    writer.write(frame(check.encode(short_term_key(pwd), fingerprint=True)))
    answer = Message.parse(await anext(incoming))
    assert answer.message_class == Class.SUCCESS and answer.check_integrity(short_term_key(pwd))
    assert answer.get(Attr.XOR_MAPPED_ADDRESS)[1] == writer.get_extra_info("sockname")[1]

    client.start()
    while client.state is not DtlsState.CONNECTED:
        for datagram in client.datagrams_to_send():
            writer.write(frame(datagram))
        client.receive(await anext(incoming))
    for datagram in client.datagrams_to_send():
        writer.write(frame(datagram))
    await asyncio.wait_for(echo.connected_at, 5)

    for sequence in range(PACKETS):
        writer.write(frame(client.srtp_tx.protect(rtp(sequence))))
        echoed = client.srtp_rx.unprotect(await anext(incoming))
        assert echoed == rtp(sequence)[:8] + struct.pack("!I", ECHO_SSRC) + rtp(sequence)[12:]
    assert len(echo.rtp_packets) == PACKETS
    writer.close()
    await writer.wait_closed()
    for _ in range(100):
        if isinstance(echo.events[-1], PathClosed):
            break
        await asyncio.sleep(0.01)
    assert isinstance(echo.events[-1], PathClosed) and not media.port.send_rtp(echo.session, rtp(0))


async def test_an_ice_tcp_connection_without_a_session_is_closed(media, monkeypatch):
    monkeypatch.setattr(appliance.rtc.io, "TCP_IDLE", 0.05)
    candidate = next(c for c in media.candidates() if c.protocol == "tcp")
    reader, writer = await asyncio.open_connection(candidate.ip, candidate.port)
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
