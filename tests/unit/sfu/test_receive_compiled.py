"""The compiled receive path (appliance/sfu/_fanout.c: `rtp`, `receive`) against the Python one
(`CallSession.rtp_in_python`, `PublishedTrack.receive_in_python`): for random streams of packets (in
order, with gaps, duplicates, reordering, wraps and jumps, unknown SSRCs, RTX, legs waiting for a
keyframe, the audio level, transport-cc on or off), the same state left in the streams (losses, cache,
statistics), the track, the session's transport-wide arrivals and its reports, the repair and switch
calls, and the same packets queued on the media port.

Where a C compiler is on the machine `./build.sh setup` builds the extension, so it missing is a
failure here; the tests are skipped only where no compiler could have built it.
"""
from __future__ import annotations

import shutil
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.sfu import extensions, tracks
from appliance.sfu.codecs import Codec
from appliance.sfu.session import CallSession
from appliance.sfu.streams import Stream
from appliance.sfu.tracks import IngestCounters, PublishedTrack
from appliance.sfu.transport import TransportReceiver
from tests.unit.sfu.test_fanout import PT, LegSpec, SubscriberSpec, World, leg_specs, subscriber_specs

pytestmark = pytest.mark.skipif(tracks.RTP is None and shutil.which("cc") is None,
                                reason="no C compiler: the extension cannot have been built")

SSRCS = (0x11223344, 0x55667788)  # the two streams: video, audio
RTX_SSRC, RTX_PT = 0x0BADCAFE, 97  # the video stream's retransmissions
UNKNOWN_SSRC = 0x77777777
TRANSPORT_ID, LEVEL_ID, OTHER_ID = 3, 1, 9  # the publisher's extension ids
STREAM_STATE = ("last_packet", "octets", "last_keyframe_request")
LOSS_STATE = ("highest", "missing", "rtt", "next_round", "fresh", "nacked", "recovered", "given_up")
STATS_STATE = ("max_seq", "cycles", "base_seq", "received", "jitter", "transit")
RECEIVER_STATE = ("arrivals", "next_seq", "highest", "count")


@contextmanager
def python_path() -> Iterator[None]:
    """Both paths in Python, as without the extension."""
    receive, rtp = tracks.RECEIVE, tracks.RTP
    tracks.RECEIVE = tracks.RTP = None
    try:
        yield
    finally:
        tracks.RECEIVE, tracks.RTP = receive, rtp


class Repair:
    """What the track's packets ask of the repair: recorded, the NACKs taken as the real one does."""

    def __init__(self, log: list) -> None:
        self.log = log

    def request_keyframe(self, stream: Stream, now: float) -> None:
        self.log.append(("keyframe", stream.ssrc, now))

    def nack_upstream(self, stream: Stream, now: float) -> None:
        assert stream.losses is not None
        self.log.append(("nack", stream.ssrc, now, stream.losses.nacks(now)))


class Switcher:
    """Waiting legs move on a packet with the marker bit (standing for a keyframe's start)."""

    def __init__(self, log: list) -> None:
        self.log = log

    def switch_at_keyframe(self, stream: Stream, packet: bytes, now: float) -> None:
        self.log.append(("switch", stream.ssrc, packet, now))
        if packet[1] & 0x80:
            stream.legs.extend(stream.waiting)
            stream.waiting.clear()


@dataclass
class Plane:
    repair: Repair
    switcher: Switcher
    ingest: IngestCounters


class OtherTrack(PublishedTrack):
    """A subclass: the compiled path knows only PublishedTrack itself."""


class OtherReceiver(TransportReceiver):
    """A subclass: the compiled path leaves the session to Python."""

    __slots__ = ()


@dataclass(frozen=True)
class Setup:
    subscribers: list[SubscriberSpec]
    legs: list[LegSpec]
    places: list[tuple[int, bool]]  # each leg's stream (0 video, 1 audio) and whether it waits there
    retransmissions: bool
    transport: int  # transport-cc: 0 not negotiated, 1 a TransportReceiver, 2 a subclass of it
    level: bool  # the audio track has the audio level extension
    subclass: bool


class Box:
    """A publishing session with a video and an audio track, their legs on a real media port: built
    the same way twice from a Setup."""

    def __init__(self, setup: Setup) -> None:
        self.log: list = []
        self.world = World(setup.subscribers, setup.legs)
        self.ingest = IngestCounters()
        plane = Plane(Repair(self.log), Switcher(self.log), self.ingest)
        kind = OtherTrack if setup.subclass else PublishedTrack
        self.video = kind(session=None, upstream=None, plane=plane, name="v", mid="0", kind="video",
                          codecs=[Codec(PT, "VP8", 90000)], ssrcs=[SSRCS[0]], rtx={RTX_PT: PT},
                          rtx_ssrcs={SSRCS[0]: RTX_SSRC}, retransmissions=setup.retransmissions)
        self.audio = PublishedTrack(session=None, upstream=None, plane=plane, name="a", mid="1", kind="audio",
                                    codecs=[Codec(PT, "opus", 48000, 2)], ssrcs=[SSRCS[1]],
                                    extensions={extensions.AUDIO_LEVEL: LEVEL_ID} if setup.level else {},
                                    retransmissions=setup.retransmissions)
        self.session = CallSession("pub", "app", 0.0, plane)
        if setup.transport:
            self.session.transport_in = (TransportReceiver if setup.transport == 1 else OtherReceiver)(TRANSPORT_ID)
        self.streams = [self.video.streams[0], self.audio.streams[0]]
        for stream in self.streams:
            assert stream.ssrc is not None
            self.session.by_ssrc[stream.ssrc] = stream
        self.session.rtx_by_ssrc[RTX_SSRC] = self.streams[0]
        for leg, (place, waits) in zip(self.world.legs, setup.places):
            stream = self.streams[place]
            (stream.waiting if waits else stream.legs).append(leg)
            stream.track.reads_extensions = stream.track.reads_extensions or bool(leg.ext_map)
        self.reports: list = []

    def state(self) -> dict[str, Any]:
        index = {id(leg): i for i, leg in enumerate(self.world.legs)}
        streams = []
        for stream in self.streams:
            state = {name: getattr(stream, name) for name in STREAM_STATE}
            state["legs"] = [index[id(leg)] for leg in stream.legs]
            state["waiting"] = [index[id(leg)] for leg in stream.waiting]
            state["stats"] = {name: getattr(stream.stats, name) for name in STATS_STATE}
            if stream.losses is not None:
                state["losses"] = {name: getattr(stream.losses, name) for name in LOSS_STATE}
            if stream.cache is not None:
                state["cache"] = (stream.cache.seqs, stream.cache.packets, stream.cache.times)
            streams.append(state)
        receiver = self.session.transport_in
        return {
            "streams": streams,
            "levels": (self.video.audio_level, self.audio.audio_level),
            "receiver": None if receiver is None else {name: getattr(receiver, name) for name in RECEIVER_STATE},
            "reports": self.reports,
            "log": self.log,
            "ingest": (self.ingest.unknown_ssrc, self.ingest.malformed),
            "world": self.world.state(),
        }


@dataclass(frozen=True)
class Send:
    target: int  # 0 video, 1 audio, 2 the video's RTX, 3 an unknown SSRC
    step: int  # from the target's last sequence number
    transport_step: int | None  # from the last transport-wide number; None: the packet carries none
    transport_size: int  # of its element: 2, else one the box does not take for a number
    level: int | None
    other: bytes | None  # an element the box does not read, after the others or (other_first) before
    other_id: int  # 15: the end of the block, whatever follows
    other_first: bool
    csrcs: int
    marker: bool
    payload: bytes
    cut: int  # bytes cut off the end (a malformed packet when its header outgrows it)
    direct: bool  # through track.receive, as a trunk feeds a track, rather than the session
    dt: float


@dataclass(frozen=True)
class Report:
    dt: float


def packet_of(send: Send, seq: int, transport_seq: int, ts: int) -> bytes:
    ssrc = (SSRCS[0], SSRCS[1], RTX_SSRC, UNKNOWN_SSRC)[send.target]
    pt = RTX_PT if send.target == 2 else PT
    payload = (seq.to_bytes(2, "big") if send.target == 2 else b"") + send.payload
    if send.target == 2:
        seq = (seq + 5000) & 0xFFFF  # the RTX stream's own numbers
    elements = b""
    if send.transport_step is not None:
        number = transport_seq.to_bytes(2, "big")
        elements += bytes((TRANSPORT_ID << 4 | send.transport_size - 1,)) + (number + number)[:send.transport_size]
    if send.level is not None:
        elements += bytes((LEVEL_ID << 4, send.level))
    if send.other is not None:
        other = bytes((send.other_id << 4 | len(send.other) - 1,)) + send.other
        elements = other + elements if send.other_first else elements + other
    head = struct.pack("!BBHII", 0x80 | send.csrcs | (0x10 if elements else 0), (0x80 if send.marker else 0) | pt,
                       seq, ts, ssrc) + bytes(4 * send.csrcs)
    packet = head + extensions.block(elements) + payload
    return packet[:max(12, len(packet) - send.cut)]


def run(setup: Setup, start: tuple[int, int], ops: list[Send | Report]) -> dict[str, Any]:
    box = Box(setup)
    seqs = [start[0], (start[0] + 3000) & 0xFFFF, start[0], 7]
    transport_seq, now = start[1], 1.0
    for op in ops:
        now += op.dt
        if isinstance(op, Report):
            if box.session.transport_in is not None:
                box.reports.append(box.session.transport_in.report(1, 2))
            continue
        seqs[op.target] = seq = (seqs[op.target] + op.step) & 0xFFFF
        if op.transport_step is not None:
            transport_seq = (transport_seq + op.transport_step) & 0xFFFF
        packet = packet_of(op, seq, transport_seq, (seq * 3000 + int(now * 1000)) & 0xFFFFFFFF)
        if op.direct and op.target < 2:
            stream = box.streams[op.target]
            stream.track.receive(stream, packet, now)
        else:
            box.session.rtp(packet, now)
        box.world.listener.pending.clear()  # what the port would have sent
        box.world.port._queued.clear()
    return box.state()


# Mostly the next packet; else duplicates, reordering, gaps, jumps past MAX_GAP and far back.
steps = st.one_of(st.just(1), st.just(1), st.just(1), st.sampled_from([0, -1, -3, 2, 3, 10, 257, 300, 0x8000, -400]),
                  st.integers(-0x8000, 0x8000))
sends = st.builds(
    Send, target=st.sampled_from([0, 0, 0, 1, 1, 2, 3]), step=steps,
    transport_step=st.one_of(st.just(1), st.just(1), st.none(), st.sampled_from([0, -2, 5, 0x8000, 2000])),
    transport_size=st.sampled_from([2, 2, 2, 1, 3]), level=st.none() | st.integers(0, 255),
    other=st.none() | st.sampled_from([b"\x01", b"ab", b"abcdefgh"]), other_id=st.sampled_from([OTHER_ID, 15]),
    other_first=st.booleans(),
    csrcs=st.sampled_from([0, 0, 0, 1, 2]), marker=st.sampled_from([False, False, False, True]),
    payload=st.binary(max_size=24), cut=st.sampled_from([0] * 12 + [1, 3, 30]), direct=st.booleans(),
    dt=st.sampled_from([0.0, 0.001, 0.02, 0.02, 0.3, 2.5]))
ops = st.lists(st.one_of(sends, sends, sends, sends, st.builds(Report, dt=st.sampled_from([0.0, 0.1]))), min_size=8,
               max_size=60)
starts = st.tuples(st.one_of(st.integers(0, 0xFFFF), st.integers(0xFFF0, 0xFFFF)),
                   st.one_of(st.integers(0, 0xFFFF), st.integers(0xFFF0, 0xFFFF)))


@st.composite
def setups(draw: st.DrawFn) -> Setup:
    subscribers = draw(st.lists(subscriber_specs, min_size=1, max_size=3))
    legs = draw(st.lists(leg_specs(len(subscribers), 0), max_size=4))
    places = [(draw(st.integers(0, 1)), draw(st.sampled_from([False, False, True]))) for _ in legs]
    return Setup(subscribers, legs, places, retransmissions=draw(st.sampled_from([True, True, False])),
                 transport=draw(st.sampled_from([0, 1, 1, 2])), level=draw(st.booleans()),
                 subclass=draw(st.sampled_from([False, False, False, True])))


@settings(max_examples=400, deadline=None)
@given(setups(), starts, ops)
def test_the_compiled_receive_path_leaves_what_the_python_one_does(setup, start, operations) -> None:
    with python_path():
        python = run(setup, start, operations)
    compiled = run(setup, start, operations)
    assert compiled == python


def test_in_order_packets_do_not_go_through_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Else the property above would compare the Python path with itself."""
    assert tracks.RTP is not None, "a C compiler is here, so ./build.sh setup builds the extension"
    calls: list[str] = []
    receive_in_python, rtp_in_python = PublishedTrack.receive_in_python, CallSession.rtp_in_python

    def track_counted(track: PublishedTrack, *args: Any) -> None:
        calls.append("track")
        receive_in_python(track, *args)

    def session_counted(session: CallSession, *args: Any) -> None:
        calls.append("session")
        rtp_in_python(session, *args)

    monkeypatch.setattr(PublishedTrack, "receive_in_python", track_counted)
    monkeypatch.setattr(CallSession, "rtp_in_python", session_counted)
    subscriber = SubscriberSpec(connected=True, batched=True, transport=0, ext_id=5)
    leg = LegSpec(0, {PT: 96}, 7, 0, 0, 0, 0, 0, False, 0.0, {LEVEL_ID: 2}, False)
    setup = Setup([subscriber], [leg, leg], [(0, False), (1, False)], True, 1, True, False)
    in_order = Send(0, 1, 1, 2, None, None, OTHER_ID, False, 0, False, b"media", 0, False, 0.01)
    audio = Send(1, 1, 1, 2, 0x85, None, OTHER_ID, False, 0, False, b"voice", 0, False, 0.01)
    state = run(setup, (100, 200), [in_order, audio, in_order, audio, Report(0.1), in_order])
    assert calls == []
    assert state["levels"] == (None, 5)
    assert state["streams"][0]["stats"]["received"] == 3 and state["streams"][1]["stats"]["received"] == 2
    assert len(state["world"]["legs"]) == 2 and state["world"]["legs"][0]["packets"] == 3
    receiver = state["receiver"]
    assert receiver["highest"] == 205 and receiver["arrivals"] == {205: state["streams"][0]["last_packet"]}
    run(setup, (100, 200), [in_order, Send(0, 2, 1, 2, None, None, OTHER_ID, False, 0, False, b"gap", 0, False, 0.01)])
    assert calls == ["track"]  # a gap: the NACK is Python's
