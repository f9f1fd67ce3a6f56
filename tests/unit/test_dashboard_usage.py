"""The usage rings (appliance/dashboard/usage.py) and the usage API's parameters (query.py), without a box."""
from __future__ import annotations

import pytest

from appliance.dashboard.query import QueryError, parse
from appliance.dashboard.usage import OTHER, TICK, WINDOW, Figures, Sampler, bucket_of

START = 1_699_999_200  # a multiple of 3600: buckets of any step start on it


def feed(sampler: Sampler, ticks: int, reading, start: float = START) -> float:
    """`ticks` samples, one per tick after `start`, of reading(i) (i from 1); the time of the last."""
    t = start
    for i in range(1, ticks + 1):
        t = start + i * TICK
        assert sampler.get_timer() == t
        sampler.sample(reading(i), t + 0.004)  # a timer fires a little late
    return t


def apps(ingress: int, egress: int = 0, sessions: int = 0) -> dict:
    return {"app": {"a": Figures(ingress, egress, sessions)}}


def test_the_first_tick_is_aligned_and_each_next_one_follows():
    sampler = Sampler(top=5, now=START + 3.7)
    assert sampler.get_timer() == START + TICK
    sampler.sample(apps(1), START + TICK + 0.3)
    assert sampler.get_timer() == START + 2 * TICK


def test_bytes_are_the_counters_differences_and_a_counter_that_went_back_starts_again():
    sampler = Sampler(top=5, now=START)
    counters = [100, 250, 250, 40, 90]  # the fourth reading restarted (an identifier forgotten, then seen anew)
    end = feed(sampler, len(counters), lambda i: apps(counters[i - 1], sessions=i))
    series = sampler.query("app", START, end, TICK)
    assert [p.ingress_bytes for p in series["a"]] == [100, 150, 0, 40, 50]
    assert [p.sessions for p in series["a"]] == [1, 2, 3, 4, 5]
    assert [p.t for p in series["a"]] == [START + i * TICK for i in range(5)]  # a bucket starts where its samples do


def test_buckets_sum_bytes_and_keep_the_most_seen_at_once():
    sampler = Sampler(top=5, now=START)
    sessions = [1, 4, 2, 2, 3, 1, 0, 0, 5, 0, 0, 0]
    end = feed(sampler, 12, lambda i: apps(10 * i, 3 * i, sessions[i - 1]))
    (points,) = sampler.query("app", START, end, 60).values()
    assert [p.t for p in points] == [START, START + 60]
    assert [p.ingress_bytes for p in points] == [60, 60] and [p.egress_bytes for p in points] == [18, 18]
    assert [p.sessions for p in points] == [4, 5]
    assert bucket_of(START + 60, 60) == START and bucket_of(START + 60.5, 60) == START + 60


def test_only_the_last_hour_is_kept_and_the_rings_stay_bounded():
    top = 5
    sampler = Sampler(top=top, now=START)

    def reading(i):
        # Many identifiers, a new one every tick: only `top` get series of their own.
        identifiers = {f"user{j}": Figures(j * i, 0, allocations=1) for j in range(max(0, i - 50), i)}
        return {**apps(1000 * i), "customIdentifier": identifiers, "box": {"edge-1": Figures(1000 * i)}}

    end = feed(sampler, 2 * WINDOW // TICK, reading)  # two hours
    per_hour = WINDOW // TICK
    series, samples = sampler.held()
    assert series <= 2 + top + 1  # app a, the box, the identifiers' top and "other"
    assert samples <= series * per_hour
    (points,) = sampler.query("app", 0, end, TICK).values()
    assert len(points) == per_hour and points[0].t > end - WINDOW - TICK
    # What the hour relayed, to the byte: the counter's difference over it.
    assert sum(p.ingress_bytes for p in points) == 1000 * per_hour
    assert not sampler.query("app", 0, end - WINDOW, TICK)


def test_identifiers_past_the_top_are_summed_as_other_and_the_sum_holds():
    sampler = Sampler(top=2, now=START)
    totals = {"big": 900, "mid": 50, "small": 5, "tiny": 1, OTHER: 7}  # "other" as a client spelled it
    reading = {"customIdentifier": {name: Figures(n, 2 * n, allocations=1) for name, n in totals.items()}}
    end = feed(sampler, 1, lambda i: reading)
    series = sampler.query("customIdentifier", START, end, TICK)
    assert set(series) == {"big", "mid", OTHER}  # the two that relayed most get their own series
    assert series[OTHER][0].ingress_bytes == 5 + 1 + 7 and series[OTHER][0].allocations == 3
    assert sum(points[0].egress_bytes for points in series.values()) == 2 * sum(totals.values())
    # A series keeps its place while it lasts, however little it relays after.
    grown = {name: Figures(n * (10 if name == "small" else 1), allocations=1) for name, n in totals.items()}
    end = feed(sampler, 1, lambda i: {"customIdentifier": grown}, start=end)
    assert set(sampler.query("customIdentifier", end - TICK, end, TICK)) == {"big", "mid", OTHER}


def test_the_live_reading_ends_the_query_and_is_not_kept():
    sampler = Sampler(top=5, now=START)
    end = feed(sampler, 3, lambda i: apps(100 * i, sessions=1))
    now = end + 4.2
    live = sampler.preview(apps(345, sessions=2), now)
    (points,) = sampler.query("app", START, now, TICK, live=live).values()
    assert [p.ingress_bytes for p in points] == [100, 100, 100, 45] and points[-1].sessions == 2
    assert sum(p.ingress_bytes for p in points) == 345  # the counter as read at the query
    assert sampler.held() == (1, 3)
    assert sampler.query("app", START, now, TICK, key="b", live=live) == {}


def test_a_wall_clock_stepped_back_starts_the_rings_afresh():
    sampler = Sampler(top=5, now=START)
    end = feed(sampler, 3, lambda i: apps(100 * i))
    sampler.sample(apps(300), end + 0.5)  # the same tick again: nothing more
    assert sampler.held() == (1, 3)
    sampler.sample(apps(350), START - 600)
    assert sampler.held() == (1, 1)
    (points,) = sampler.query("app", 0, START, TICK).values()
    assert [p.ingress_bytes for p in points] == [50]
    assert sampler.get_timer() == START - 600 + TICK


NOW = 1_700_000_123.5


def test_query_defaults_are_the_last_hour_by_app_in_minutes():
    query = parse({}, NOW)
    assert (query.by, query.since, query.until, query.step, query.key) == ("app", NOW - WINDOW, NOW, 60, None)
    query = parse({"by": ["customIdentifier"], "customIdentifier": ["alice"], "since": ["1700000000"],
                   "step": ["10"]}, NOW)
    assert (query.by, query.key, query.since, query.step) == ("customIdentifier", "alice", 1_700_000_000, 10)


@pytest.mark.parametrize("params, named", [
    ({"step": ["7"]}, "step"),
    ({"step": ["0"]}, "step"),
    ({"step": ["7200"]}, "step"),
    ({"step": ["６０"]}, "step"),
    ({"step": ["-60"]}, "step"),
    ({"since": ["yesterday"]}, "since"),
    ({"until": ["1.5"]}, "until"),
    ({"since": ["1700000200"], "until": ["1700000100"]}, "since"),
    ({"by": ["room"]}, "by"),
    ({"app": ["a"], "by": ["issuer"]}, "app"),
    ({"bogus": ["1"]}, "bogus"),
    ({"step": ["60", "120"]}, "step"),
])
def test_a_bad_parameter_is_named(params, named):
    with pytest.raises(QueryError) as caught:
        parse(params, NOW)
    assert caught.value.parameter == named and str(caught.value).startswith(f"{named}: ")
