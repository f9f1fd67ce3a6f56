"""Which simulcast layer a subscriber receives: its preferences (CALLS_API.md 1.4) and its
bandwidth. Layers are ranked by what they cost (their measured bitrate) unless the subscriber
asks for RID order (`asciibetical`: "a" is the best)."""
from __future__ import annotations

from typing import Any

from .errors import ItemError

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


def choose_layer(leg: Any, now: float, estimate: float | None):
    """The stream `leg` should forward: its preferred RID if given (or the fallback its
    preferences name when that layer is not sent), stepping down for bandwidth only with
    `asciibetical` ordering; with no preference, the best layer the estimate carries."""
    track = leg.source
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
        ranked = sorted(active, key=lambda s: s.rid)
        chosen = next((s for s in ranked if s.rid > rid), ranked[-1])
    if prefs.get("priorityOrdering") == "asciibetical":
        return _fitting([s for s in sorted(active, key=lambda s: s.rid) if s.rid >= chosen.rid], current, estimate)
    return chosen


def _fitting(ranked: list, current, estimate: float | None):
    """The first of `ranked` (best first) the estimate carries, else the last."""
    if estimate is None:
        return ranked[0]
    for stream in ranked:
        up = current is not None and stream is not current and stream.bitrate > current.bitrate
        if stream.bitrate * (UP_HEADROOM if up else 1.0) <= estimate:
            return stream
    return ranked[-1]
