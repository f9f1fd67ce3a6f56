"""Simulcast preferences (CALLS_API.md 1.4, with the older names) and the layer a leg forwards."""
import pytest
from hypothesis import given, strategies as st

from appliance.sfu.errors import ItemError
from appliance.sfu.forward import Leg
from appliance.sfu.layers import (PAD_TIME, PROBE_TIME, PROBE_WAIT, PROVEN, STAY_SLACK, UP_HEADROOM, choose_layer,
                                  preferences, probe)

from .harness import Downstream, Sent

# --- preferences -------------------------------------------------------------------------------------


def test_no_simulcast_object_means_no_preferences():
    assert preferences(None) == {}


def test_defaults():
    assert preferences({}) == {"priorityOrdering": "none", "ridNotAvailable": "none"}


def test_the_documented_object_as_echo_simulcast_sends_it():
    raw = {"preferredRid": "f", "priorityOrdering": "asciibetical", "ridNotAvailable": "asciibetical"}
    assert preferences(raw) == raw
    assert preferences({"preferredRid": "q"}) == {"preferredRid": "q", "priorityOrdering": "none",
                                                  "ridNotAvailable": "none"}
    assert preferences({"preferredRid": None}) == {"priorityOrdering": "none", "ridNotAvailable": "none"}


@pytest.mark.parametrize("key, value, resolved", [
    ("ridNotAvailable", "none", "none"),
    ("ridNotAvailable", "asciibetical", "asciibetical"),
    ("ridUnavailableStrategy", "none", "none"),
    ("ridUnavailableStrategy", "nextPriority", "asciibetical"),
    ("fallbackStrategy", "none", "none"),
    ("fallbackStrategy", "auto", "asciibetical"),
    ("fallbackStrategy", "leastBandwidth", "lowest"),
])
def test_every_name_of_the_fallback(key, value, resolved):
    assert preferences({"preferredRid": "h", key: value})["ridNotAvailable"] == resolved


def test_the_current_name_wins_over_an_alias():
    assert preferences({"ridNotAvailable": "none", "fallbackStrategy": "auto"})["ridNotAvailable"] == "none"
    assert preferences({"ridNotAvailable": "asciibetical", "fallbackStrategy": "none"})["ridNotAvailable"] == "asciibetical"


@pytest.mark.parametrize("raw, key", [
    ([], "simulcast"),
    ("h", "simulcast"),
    ({"preferredRid": ""}, "preferredRid"),
    ({"preferredRid": 5}, "preferredRid"),
    ({"preferredRid": ["h"]}, "preferredRid"),
    ({"priorityOrdering": "bandwidth"}, "priorityOrdering"),
    ({"priorityOrdering": "nextPriority"}, "priorityOrdering"),
    ({"priorityOrdering": None}, "priorityOrdering"),
    ({"priorityOrdering": ["none"]}, "priorityOrdering"),  # not hashable: must not escape as a TypeError
    ({"priorityOrdering": {"a": 1}}, "priorityOrdering"),
    ({"ridNotAvailable": "nextPriority"}, "ridNotAvailable"),
    ({"ridNotAvailable": "auto"}, "ridNotAvailable"),
    ({"ridNotAvailable": ["none"]}, "ridNotAvailable"),
    ({"ridUnavailableStrategy": "asciibetical"}, "ridUnavailableStrategy"),
    ({"ridUnavailableStrategy": {}}, "ridUnavailableStrategy"),
    ({"fallbackStrategy": "nextPriority"}, "fallbackStrategy"),
    ({"fallbackStrategy": ["auto"]}, "fallbackStrategy"),
    ({"fallbackStrategy": 1}, "fallbackStrategy"),
])
def test_invalid_values_are_item_errors_naming_the_key(raw, key):
    with pytest.raises(ItemError) as caught:
        preferences(raw)
    assert caught.value.code == "invalid_params"
    assert key in caught.value.description


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5)
                    | st.sampled_from(["none", "asciibetical", "nextPriority", "auto", "leastBandwidth", "h"]),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                    max_leaves=6)
KEYS = st.sampled_from(["preferredRid", "priorityOrdering", "ridNotAvailable", "ridUnavailableStrategy",
                        "fallbackStrategy", "other"])


@given(st.dictionaries(KEYS, JSON, max_size=5) | JSON)
def test_any_json_gives_preferences_or_an_item_error(raw):
    try:
        prefs = preferences(raw)
    except ItemError as e:
        assert e.code == "invalid_params"
        return
    if raw is not None:
        assert prefs["priorityOrdering"] in ("none", "asciibetical")
        assert prefs["ridNotAvailable"] in ("none", "asciibetical", "lowest")


# --- choose_layer -------------------------------------------------------------------------------------

NOW = 100.0


class FakeStream:
    def __init__(self, rid, bitrate, active=True):
        self.rid, self.bitrate, self.is_active = rid, bitrate, active

    def active(self, now):
        assert now >= NOW  # the caller passes its time through
        return self.is_active

    def __repr__(self):
        return f"<{self.rid} {self.bitrate}>"


class FakeTrack:
    def __init__(self, *streams):
        self.streams = list(streams)

    def stream(self, rid):
        return next((s for s in self.streams if s.rid == rid), None)


def layers(f=2_500_000, h=700_000, q=150_000, inactive=()):
    """Chrome's three layers; `inactive` RIDs stopped arriving."""
    return FakeTrack(*(FakeStream(rid, rate, rid not in inactive) for rid, rate in (("f", f), ("h", h), ("q", q))))


def leg(track, prefs, stream=None, target=None):
    """A subscriber's leg on `track`, forwarding `stream`, moving to `target`."""
    made = Leg(Sent(), 1, {}, "0", Downstream())
    made.source, made.stream, made.target, made.preferences = track, stream, target, preferences(prefs)
    return made


def rid(chosen):
    return chosen.rid if chosen is not None else None


def test_the_preferred_layer_when_it_is_sent_whatever_the_bandwidth():
    track = layers()
    for current in (None, track.stream("f"), track.stream("q")):
        for estimate in (None, 10_000.0, 100e6):
            assert rid(choose_layer(leg(track, {"preferredRid": "h"}, current), NOW, estimate)) == "h"


def test_a_preferred_layer_not_sent_keeps_the_current_one_with_fallback_none():
    track = layers(inactive=("h",))
    assert rid(choose_layer(leg(track, {"preferredRid": "h"}, track.stream("f")), NOW, None)) == "f"
    # Moving to q at its next keyframe already: that stays the choice.
    assert rid(choose_layer(leg(track, {"preferredRid": "h"}, track.stream("f"), track.stream("q")), NOW, None)) == "q"
    # A RID the publisher never declared, and a leg that forwards nothing yet: nothing.
    assert choose_layer(leg(track, {"preferredRid": "x", "ridNotAvailable": "none"}), NOW, None) is None
    assert rid(choose_layer(leg(track, {"preferredRid": "x", "ridUnavailableStrategy": "none"}, track.stream("q")),
                            NOW, 1e6)) == "q"


@pytest.mark.parametrize("alias", [{"ridNotAvailable": "asciibetical"}, {"ridUnavailableStrategy": "nextPriority"},
                                   {"fallbackStrategy": "auto"}])
def test_asciibetical_fallback_takes_the_next_rid_after_the_preferred(alias):
    track = layers(inactive=("h",))
    assert rid(choose_layer(leg(track, {"preferredRid": "h", **alias}, track.stream("f")), NOW, None)) == "q"
    track = FakeTrack(FakeStream("a", 3e6), FakeStream("b", 1e6, active=False), FakeStream("c", 5e5),
                      FakeStream("d", 1e5))
    assert rid(choose_layer(leg(track, {"preferredRid": "b", **alias}), NOW, None)) == "c"
    # Nothing after it: the last in a-z order, the closest before it.
    track = layers(inactive=("q",))
    assert rid(choose_layer(leg(track, {"preferredRid": "q", **alias}, track.stream("q")), NOW, None)) == "h"
    assert rid(choose_layer(leg(track, {"preferredRid": "z", **alias}), NOW, None)) == "h"


def test_least_bandwidth_fallback_takes_the_cheapest_active_layer():
    track = layers(inactive=("h",))
    chosen = choose_layer(leg(track, {"preferredRid": "h", "fallbackStrategy": "leastBandwidth"}, track.stream("f")),
                          NOW, None)
    assert rid(chosen) == "q"
    track = layers(q=900_000, inactive=("h",))  # f 2.5M, q 0.9M: still q, by bitrate not by name
    track.streams.append(FakeStream("a", 1_000_000))
    assert rid(choose_layer(leg(track, {"preferredRid": "h", "fallbackStrategy": "leastBandwidth"}), NOW, None)) == "q"


def test_asciibetical_priority_steps_down_when_the_estimate_is_below_the_layers_bitrate():
    track = layers()
    prefs = {"preferredRid": "f", "priorityOrdering": "asciibetical"}
    assert rid(choose_layer(leg(track, prefs, track.stream("f")), NOW, None)) == "f"
    assert rid(choose_layer(leg(track, prefs, track.stream("f")), NOW, 3e6)) == "f"
    assert rid(choose_layer(leg(track, prefs, track.stream("f")), NOW, 2.5e6)) == "f"  # staying needs no headroom
    assert rid(choose_layer(leg(track, prefs, track.stream("f")), NOW, 2.5e6 / STAY_SLACK)) == "f"  # slack to stay
    assert rid(choose_layer(leg(track, prefs, track.stream("f")), NOW, 2.2e6)) == "h"
    assert rid(choose_layer(leg(track, prefs, track.stream("f")), NOW, 600_000)) == "q"
    assert rid(choose_layer(leg(track, prefs, track.stream("f")), NOW, 10_000)) == "q"  # the last, whatever it costs
    # Never above the preferred layer, however much bandwidth there is.
    prefs = {"preferredRid": "h", "priorityOrdering": "asciibetical"}
    assert rid(choose_layer(leg(track, prefs, track.stream("h")), NOW, 100e6)) == "h"
    assert rid(choose_layer(leg(track, prefs, track.stream("h")), NOW, 200_000)) == "q"


def test_asciibetical_priority_moves_back_up_only_with_headroom():
    track = layers()
    prefs = {"preferredRid": "f", "priorityOrdering": "asciibetical"}
    h = track.stream("h")
    assert rid(choose_layer(leg(track, prefs, h), NOW, 2.5e6 * UP_HEADROOM - 1)) == "h"
    assert rid(choose_layer(leg(track, prefs, h), NOW, 2.5e6 * UP_HEADROOM)) == "f"


def test_priority_ordering_none_never_steps_down():
    track = layers()
    prefs = {"preferredRid": "f", "priorityOrdering": "none"}
    assert rid(choose_layer(leg(track, prefs, track.stream("f")), NOW, 10_000)) == "f"


def test_automatic_picks_the_best_layer_the_estimate_carries():
    track = layers()
    assert rid(choose_layer(leg(track, None), NOW, None)) == "f"  # nothing measures the link: the best
    assert rid(choose_layer(leg(track, {}), NOW, 1e6)) == "h"  # a new leg: no headroom to climb
    assert rid(choose_layer(leg(track, {}), NOW, 200_000)) == "q"
    assert rid(choose_layer(leg(track, {}), NOW, 50_000)) == "q"  # the cheapest when nothing fits
    f, h, q = track.streams
    assert rid(choose_layer(leg(track, {}, h), NOW, 2.6e6)) == "h"  # up needs UP_HEADROOM
    assert rid(choose_layer(leg(track, {}, h), NOW, 2.5e6 * UP_HEADROOM)) == "f"
    assert rid(choose_layer(leg(track, {}, q), NOW, 700_000)) == "q"
    assert rid(choose_layer(leg(track, {}, q), NOW, 700_000 * UP_HEADROOM)) == "h"
    assert rid(choose_layer(leg(track, {}, f), NOW, 2.5e6)) == "f"
    assert rid(choose_layer(leg(track, {}, f), NOW, 2.5e6 / STAY_SLACK)) == "f"  # a layer's rate swings
    assert rid(choose_layer(leg(track, {}, f), NOW, 2.2e6)) == "h"  # down at once
    # The leg moving to f already counts as there.
    assert rid(choose_layer(leg(track, {}, q, f), NOW, 2.5e6)) == "f"


def test_automatic_ranks_by_bitrate_not_by_name_and_skips_inactive_layers():
    track = FakeTrack(FakeStream("q", 150_000), FakeStream("f", 2_500_000), FakeStream("h", 700_000))
    assert rid(choose_layer(leg(track, {}), NOW, None)) == "f"
    track = layers(inactive=("f",))
    assert rid(choose_layer(leg(track, {}), NOW, None)) == "h"
    assert rid(choose_layer(leg(track, {}), NOW, 100e6)) == "h"


def test_no_active_layer_keeps_what_the_leg_has():
    track = layers(inactive=("f", "h", "q"))
    assert rid(choose_layer(leg(track, {"preferredRid": "h"}, track.stream("q")), NOW, None)) == "q"
    assert choose_layer(leg(track, {}), NOW, 1e6) is None


def probing_leg(track, current):
    """A leg that has not tried a layer yet (a new leg's trial state)."""
    return leg(track, {}, current)


def test_a_leg_on_a_low_layer_tries_the_next_one_up_and_keeps_it_when_the_path_carries_it():
    track = layers()
    q, h = track.stream("q"), track.stream("h")
    test = probing_leg(track, q)
    assert probe(test, q, NOW, 0, float("-inf")) == (h, None)  # a try: the next layer up, not the best
    assert probe(test, q, NOW + 1, 0, float("-inf")) == (h, None)  # held for the trial
    received = PROVEN * h.bitrate
    assert probe(test, q, NOW + PROBE_TIME, received, float("-inf")) == (h, h.bitrate)  # proven
    assert test.probing is None and test.next_probe == NOW + PROBE_TIME + PROBE_WAIT[0]


def test_a_try_that_congests_ends_at_once_and_the_next_waits_longer():
    track = layers()
    q, h = track.stream("q"), track.stream("h")
    test = probing_leg(track, q)
    probe(test, q, NOW, 0, float("-inf"))
    assert probe(test, q, NOW + 0.5, h.bitrate, NOW + 0.4) == (q, None)  # congestion after the try began
    first_wait = test.next_probe - (NOW + 0.5)
    assert probe(test, q, NOW + 1, 0, NOW + 0.4) == (q, None)  # not before next_probe
    assert probe(test, q, test.next_probe, 0, float("-inf")) == (h, None)
    # No congestion seen, but the subscriber did not get the layer's bitrate: not proven.
    assert probe(test, q, test.probe_until, 0.5 * h.bitrate, float("-inf")) == (q, None)
    assert test.probe_wait > first_wait and test.probe_wait <= PROBE_WAIT[1]


def test_no_try_above_the_best_layer():
    track = layers()
    f = track.stream("f")
    test = probing_leg(track, f)
    assert probe(test, f, NOW, 100e6, float("-inf")) == (f, None) and test.probing is None


def test_a_paused_leg_tries_the_cheapest_layer():
    track = layers()
    test = probing_leg(track, None)
    assert probe(test, None, NOW, 0, float("-inf")) == (track.stream("q"), None)
    # The path did not carry it: paused again, and the next try waits longer.
    assert probe(test, None, NOW + PROBE_TIME, 0, float("-inf")) == (None, None)
    assert test.next_probe > NOW + PROBE_TIME


def test_a_leg_that_can_pad_keeps_its_layer_during_a_try():
    track = layers()
    q, h = track.stream("q"), track.stream("h")
    test = probing_leg(track, q)
    assert probe(test, q, NOW, 0, float("-inf"), pad=True) == (q, None) and test.probing is h and test.probe_pads
    assert probe(test, q, NOW + 1, 0, float("-inf"), pad=False) == (q, None)  # still padding, whatever now
    assert probe(test, q, NOW + PAD_TIME, PROVEN * h.bitrate, float("-inf")) == (h, h.bitrate)
