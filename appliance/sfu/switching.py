"""Which stream each subscriber's leg forwards: its track's one stream, or (simulcast) the layer
the choice (layers.py) picks, moved to at keyframes, with bandwidth trials by padding and pauses
when nothing fits."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .forward import Leg, payload_offset
from .keyframes import starts_keyframe
from .layers import PAD_OVER, PROBE_WAIT, choose_layer, probe
from .repair import Repair
from .streams import Stream
from .tracks import PublishedTrack


@dataclass
class SwitchCounters:
    """Layer moves, for /metrics."""

    layer_switches: int = 0
    paused_legs: int = 0  # times a leg's video stopped because no layer fitted its bandwidth


class LayerSwitcher:
    """Points legs at streams; the only writer of legs' stream, target and waiting lists. Asks
    `repair` for the keyframes a move waits for."""

    def __init__(self, repair: Repair) -> None:
        self.repair = repair
        self.counters = SwitchCounters()

    def attach(self, leg: Leg, now: float) -> None:
        """Start forwarding the leg's track: its one stream at once, or (simulcast) the layer
        `choose_layer` picks, from that layer's next keyframe."""
        track = leg.source
        if track is None:
            return
        if leg not in track.legs:
            track.legs.append(leg)
        leg.rebase = True
        if track.simulcast:
            leg.next_probe = now + PROBE_WAIT[0]
            self.choose(leg, now, force=True)
        else:
            stream = track.streams[0]
            leg.stream = stream
            stream.legs.append(leg)
            self.repair.keyframe_for(leg, now)

    @staticmethod
    def detach(leg: Leg) -> None:
        """Stop forwarding the leg's track (it may be attached again, or to another track)."""
        track = leg.source
        if track is not None and leg in track.legs:
            track.legs.remove(leg)
        _off_streams(leg)

    def choose(self, leg: Leg, now: float, force: bool = False) -> None:
        """Point the leg at the layer it should receive; the move happens at a keyframe, asked
        for at once when `force` (a new subscriber waits for nothing else)."""
        estimate = leg.subscriber.bandwidth()
        wanted = choose_layer(leg, now, estimate)
        if estimate is not None and "preferredRid" not in leg.preferences:
            if wanted is not None and wanted.bitrate > estimate:
                # Not even the cheapest layer fits: no video rather than audio lost behind it.
                wanted = None
            transport = leg.subscriber.transport_out
            if transport is None:  # no estimate without transport-wide feedback: estimate was None
                return
            estimator = transport.estimator
            # Padding (RTX copies of what the leg sends) needs RTX and a layer being forwarded.
            pad = leg.rtx_ssrc is not None and leg.stream is not None and wanted is leg.stream
            wanted, proven = probe(leg, wanted, now, estimator.acked_bitrate, estimator.congested_at, pad)
            if proven is not None:
                estimator.carried(proven, now)
            tried = leg.probing if leg.probing is not None and leg.probe_pads else None
            current = leg.stream
            # Padding up to a little over the tried layer: the layers' rates swing.
            leg.padding = (PAD_OVER * tried.bitrate / current.bitrate - 1
                           if tried is not None and current and current.bitrate else 0.0)
            if wanted is None:
                self._pause(leg)
                return
        if wanted is None or wanted is (leg.target or leg.stream):
            return
        if leg.target is not None and leg in leg.target.waiting:
            leg.target.waiting.remove(leg)
        if wanted is leg.stream:
            leg.target = None
            return
        leg.target = wanted
        wanted.waiting.append(leg)
        self.repair.request_keyframe(wanted, now, force)

    def _pause(self, leg: Leg) -> None:
        """Stop forwarding video to `leg` (it keeps its place in the track): `_choose` picks a
        layer again when the bandwidth allows, or tries one."""
        if leg.stream is not None:  # was forwarding: a pause, not a leg still waiting
            self.counters.paused_legs += 1
        _off_streams(leg)

    def await_keyframe(self, leg: Leg, now: float) -> None:
        """Send `leg` nothing more of its video until the next keyframe, asked for now and again while
        it waits (its receiver lost what came before: a failover, a re-rooted tree). A publisher
        ignores a request that comes soon after its last keyframe, which a leg that starts just then
        missed: one request is not enough."""
        stream = leg.target or leg.stream
        if stream is None or stream.track.kind != "video":
            return
        if leg in stream.legs:
            stream.legs.remove(leg)
        leg.stream, leg.target = None, stream
        if leg not in stream.waiting:
            stream.waiting.append(leg)
        self.repair.request_keyframe(stream, now, force=True)

    def switch_at_keyframe(self, stream: Stream, packet: bytes, now: float) -> None:
        """Legs waiting for `stream` move to it when a packet starts a keyframe."""
        offset = payload_offset(packet)
        codec = stream.track.codec_names.get(packet[1] & 0x7F, "")
        if offset < 0 or not starts_keyframe(codec, packet[offset:]):
            self.repair.request_keyframe(stream, now)  # at most every KEYFRAME_INTERVAL
            return
        for leg in stream.waiting:
            if leg.stream is not None and leg in leg.stream.legs:
                leg.stream.legs.remove(leg)
            leg.stream, leg.target, leg.rebase = stream, None, True
            stream.legs.append(leg)
            self.counters.layer_switches += 1
        stream.waiting.clear()

    def adapt(self, tracks: Iterable[PublishedTrack], now: float) -> None:
        """About twice a second: measure every stream's bitrate (the dashboard shows each track's) and
        re-choose the layer of every leg that receives a simulcast track."""
        for track in tracks:
            for stream in track.streams:
                stream.measure(now)
            if not track.simulcast:
                continue
            for leg in track.legs:
                self.choose(leg, now)


def _off_streams(leg: Leg) -> None:
    """The leg neither forwards a stream nor waits for one."""
    for stream in (leg.stream, leg.target):
        if stream is not None:
            if leg in stream.legs:
                stream.legs.remove(leg)
            if leg in stream.waiting:
                stream.waiting.remove(leg)
    leg.stream = leg.target = None
