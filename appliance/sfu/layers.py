"""Which simulcast layer a subscriber receives: its preferences (CALLS_API.md 1.4) and its
bandwidth. Layers are ranked by what they cost (their measured bitrate) unless the subscriber
asks for RID order (`asciibetical`: "a" is the best)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import ItemError

if TYPE_CHECKING:  # the legs and streams it chooses between
    from .forward import Leg
    from .streams import Stream

ORDERINGS = {"none", "asciibetical"}
# ridNotAvailable, with the names earlier revisions of the API used for the same choice.
FALLBACKS = {"none": "none", "asciibetical": "asciibetical"}
FALLBACK_ALIASES = {
    "ridUnavailableStrategy": {"none": "none", "nextPriority": "asciibetical"},
    "fallbackStrategy": {"none": "none", "auto": "asciibetical", "leastBandwidth": "lowest"},
}
# Moving up needs this much more estimated bandwidth than the layer's bitrate: the estimate
# swings, and a layer switched to and away at once costs two keyframes.
UP_HEADROOM = 1.2
STAY_SLACK = 1.1
# A send-side estimate never rises far above what is sent (GCC caps it at 1.5x the acked rate),
# so a leg on a low layer tries the next one up now and then: if the path carries it, the
# estimator takes the acked rate (bwe.py) and the leg stays. Failed tries back off.
PROBE_TIME = 3.0  # seconds a tried layer is kept: its keyframe wait, then a whole acked-rate window
PAD_TIME = 1.5  # seconds of padding for a try: a whole acked-rate window, and the feedback's delay
PAD_OVER = 1.1  # padding tops the current layer up to this much of the tried layer's bitrate
PROBE_WAIT = (1.0, 5.0)  # seconds between tries: after a success, and at most after failures
PROVEN = 0.9  # of the tried layer's bitrate received, with no congestion, that proves the path


def preferences(raw: Any) -> dict:
    """A `simulcast` object of tracks/new or tracks/update, checked and with aliases resolved."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ItemError("invalid_params", "simulcast: expected an object")
    out: dict[str, str] = {}
    rid = raw.get("preferredRid")
    if rid is not None:
        if not isinstance(rid, str) or not rid:
            raise ItemError("invalid_params", f"simulcast.preferredRid: expected a RID, found {rid!r}")
        out["preferredRid"] = rid
    ordering = raw.get("priorityOrdering", "none")
    if not isinstance(ordering, str) or ordering not in ORDERINGS:  # JSON lists and objects are not hashable
        raise ItemError("invalid_params", f"simulcast.priorityOrdering: expected \"none\" or \"asciibetical\", "
                                          f"found {ordering!r}")
    out["priorityOrdering"] = ordering
    fallback = None
    if "ridNotAvailable" in raw:
        fallback = FALLBACKS.get(raw["ridNotAvailable"]) if isinstance(raw["ridNotAvailable"], str) else None
        if fallback is None:
            raise ItemError("invalid_params", "simulcast.ridNotAvailable: expected \"none\" or \"asciibetical\", "
                                              f"found {raw['ridNotAvailable']!r}")
    for key, values in FALLBACK_ALIASES.items():
        if fallback is None and key in raw:
            fallback = values.get(raw[key]) if isinstance(raw[key], str) else None
            if fallback is None:
                raise ItemError("invalid_params", f"simulcast.{key}: expected one of {sorted(values)}, "
                                                  f"found {raw[key]!r}")
    out["ridNotAvailable"] = fallback or "none"
    return out


def choose_layer(leg: Leg, now: float, estimate: float | None) -> Stream | None:
    """The stream `leg` should forward: its preferred RID if given (or the fallback its
    preferences name when that layer is not sent), stepping down for bandwidth only with
    `asciibetical` ordering; with no preference, the best layer the estimate carries."""
    track = leg.source
    if track is None:
        return None
    current = leg.target or leg.stream
    active = [s for s in track.streams if s.active(now)]
    if not active:
        return current
    prefs = leg.preferences
    rid = prefs.get("preferredRid")
    if rid is None:
        return _fitting(sorted(active, key=lambda s: s.bitrate, reverse=True), current, estimate)
    chosen = track.stream(rid)
    if chosen not in active:
        fallback = prefs.get("ridNotAvailable", "none")
        if fallback == "none":
            return current
        if fallback == "lowest":
            return min(active, key=lambda s: s.bitrate)
        ranked = sorted(active, key=_rid)
        chosen = next((s for s in ranked if _rid(s) > rid), ranked[-1])
    if prefs.get("priorityOrdering") == "asciibetical":
        return _fitting([s for s in sorted(active, key=_rid) if _rid(s) >= _rid(chosen)], current, estimate)
    return chosen


def _rid(stream: Stream) -> str:
    """A simulcast layer's RID (every stream of a simulcast track has one)."""
    return stream.rid or ""


def _fitting(ranked: list, current, estimate: float | None):
    """The first of `ranked` (best first) the estimate carries, else the last: a layer above the
    current one with UP_HEADROOM, the current one with STAY_SLACK (a layer's bitrate swings
    with its keyframes; a loss-driven drop comes through the estimate)."""
    if estimate is None:
        return ranked[0]
    for stream in ranked:
        if stream is current:
            need = stream.bitrate / STAY_SLACK
        elif current is not None and stream.bitrate > current.bitrate:
            need = stream.bitrate * UP_HEADROOM
        else:
            need = stream.bitrate
        if need <= estimate:
            return stream
    return ranked[-1]


def probe(leg: Leg, wanted: Stream | None, now: float, acked: float, congested_at: float,
          pad: bool = False) -> tuple[Stream | None, float | None]:
    """For a leg that follows its bandwidth: (the layer to forward: `wanted`, the one the
    estimate carries, None for none, or on a trial the layer above; the bitrate a trial proved
    the path carries, or None). With `pad` (the leg can send padding) a trial keeps the layer
    and the caller pads up to the tried layer's bitrate, so a failed trial costs the subscriber
    no picture. A trial ends early when the estimator saw congestion after it began
    (`congested_at`); it proves the layer when the subscriber then received (`acked`) about that
    layer's bitrate. Keeps the state on the leg: `probing` (the tried layer), `probe_pads`,
    `probe_started`, `probe_until`, `next_probe`, `probe_wait`."""
    if leg.probing is not None:
        congested = congested_at >= leg.probe_started
        if now < leg.probe_until and not congested:
            return (wanted if leg.probe_pads else leg.probing), None
        tried, leg.probing = leg.probing, None
        proven = not congested and acked >= PROVEN * tried.bitrate
        leg.probe_wait = PROBE_WAIT[0] if proven else min(max(leg.probe_wait, PROBE_WAIT[0]) * 2, PROBE_WAIT[1])
        leg.next_probe = now + leg.probe_wait
        return (tried, max(acked, tried.bitrate)) if proven else (wanted, None)
    if now < leg.next_probe:
        return wanted, None
    floor = wanted.bitrate if wanted is not None else -1.0  # paused: the cheapest layer is a try
    streams = leg.source.streams if leg.source is not None else []
    higher = [s for s in streams if s.active(now) and s.bitrate > floor]
    if not higher:
        leg.next_probe = now + PROBE_WAIT[0]
        return wanted, None
    leg.probing = min(higher, key=lambda s: s.bitrate)
    leg.probe_pads = pad and wanted is not None
    leg.probe_started = now
    leg.probe_until = now + (PAD_TIME if leg.probe_pads else PROBE_TIME)
    return (wanted if leg.probe_pads else leg.probing), None
