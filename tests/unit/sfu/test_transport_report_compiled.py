"""The compiled transport-cc report (appliance/sfu/_fanout.c: `transport_report`) against the Python one
(`TransportReceiver.report_in_python`, feedback.transport_feedback_packet): for random arrivals (wraps of
the 16-bit transport seq, gaps, duplicates, reordering, arrivals out of order in time, stalls of seconds,
reference times around their 24-bit wrap) the same bytes, or None, and the same receiver state after;
for arbitrary receiver states, the same outcome through `report` (the compiled path or its fallback).

Where a C compiler is on the machine `./build.sh setup` builds the extension, so it missing is a
failure here; the tests are skipped only where no compiler could have built it.
"""
from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from appliance.sfu import feedback, tracks, transport
from appliance.sfu.transport import TransportReceiver

pytestmark = pytest.mark.skipif(tracks.RTP is None and shutil.which("cc") is None,
                                reason="no C compiler: the extension cannot have been built")

STATE = ("arrivals", "next_seq", "highest", "count")
SSRCS = st.integers(0, 0xFFFFFFFF)

seq_steps = st.one_of(
    st.just(1), st.just(1), st.just(1),
    st.integers(-20, 20),  # duplicates and reordering
    st.integers(2, 3000),  # gaps, some beyond MAX_REPORTED
    st.integers(0, 0xFFFF),  # anywhere on the 16-bit circle
)
time_steps = st.one_of(
    st.just(0.000125), st.just(0.000125),
    st.integers(-64, 256).map(lambda k: k / 128),  # exact halves of a tick: round()'s ties
    st.sampled_from([0, 1, 255, 256, -1, 0x7FFF, 0x8000, -0x8000, -0x8001]).map(lambda k: k / 4000),  # the edges
    st.floats(-0.01, 0.01),  # out of order in time, small deltas
    st.floats(-0.1, 0.1),  # beyond a one-byte delta
    st.floats(-12.0, 12.0),  # stalls: deltas that do not fit, and some that just do
)
base_times = st.one_of(
    st.just(0.0), st.just(1000.0), st.floats(-1e6, 1e9),
    st.floats(0xFFFFFF * 0.064 - 2, 0xFFFFFF * 0.064 + 2),  # the 24-bit reference time's wrap
)
ops = st.lists(st.one_of(st.tuples(seq_steps, time_steps), st.just(None)), max_size=300)  # None: report


@contextmanager
def max_reported(value: int) -> Iterator[None]:
    kept = transport.MAX_REPORTED
    transport.MAX_REPORTED = value
    try:
        yield
    finally:
        transport.MAX_REPORTED = kept


def state(receiver: TransportReceiver) -> tuple:
    return tuple(getattr(receiver, name) for name in STATE)


def test_the_extension_is_there_to_compare() -> None:
    assert transport._TRANSPORT_REPORT is not None


@settings(max_examples=500, deadline=None)
@given(start=st.integers(0, 0xFFFF), at=base_times, count=st.integers(0, 0xFF), steps=ops,
       limit=st.sampled_from([1000, 1000, 30, 7, 1]), sender=SSRCS, media=SSRCS)
def test_the_compiled_report_is_the_python_one(start: int, at: float, count: int, steps: list, limit: int,
                                               sender: int, media: int) -> None:
    compiled, python = TransportReceiver(3), TransportReceiver(3)
    compiled.count = python.count = count
    seq, now = start, at
    with max_reported(limit):
        for step in steps + [None]:
            if step is not None:
                seq, now = (seq + step[0]) & 0xFFFF, now + step[1]
                compiled.arrived(seq, now)
                python.arrived(seq, now)
                continue
            made = transport._TRANSPORT_REPORT(compiled, sender, media, limit)
            assert made is not NotImplemented
            expected = python.report_in_python(sender, media)
            assert made == expected
            assert state(compiled) == state(python)
            if made is not None:  # and it reads back as the arrivals
                assert feedback.transport_feedback(made)


@pytest.mark.parametrize("ticks", [0, 255, 256, -1, 0x7FFF, 0x8000, -0x8000, -0x8001])
def test_the_edges_of_each_delta_form(ticks: int) -> None:
    # A negative delta that large follows two positive ones: the reference is the earliest arrival.
    times = [0.0, ticks / 4000] if ticks >= 0 else [0.0, 4.0, 8.192, 8.192 + ticks / 4000]
    compiled, python = TransportReceiver(3), TransportReceiver(3)
    for receiver in (compiled, python):
        for seq, at in enumerate(times):
            receiver.arrived(seq, at)
    made = transport._TRANSPORT_REPORT(compiled, 1, 2, transport.MAX_REPORTED)
    assert made == python.report_in_python(1, 2)
    assert (made is None) == (not -0x8000 <= ticks < 0x8000)
    assert state(compiled) == state(python)


def test_a_delta_that_does_not_fit_starts_over() -> None:
    receiver = TransportReceiver(3)
    receiver.arrived(10, 1.0)
    receiver.arrived(11, 9.5)  # 8.5 s later: beyond a 16-bit delta
    assert receiver.report(1, 2) is None
    assert (receiver.arrivals, receiver.next_seq, receiver.highest, receiver.count) == ({}, 12, 11, 1)
    receiver.arrived(12, 9.6)
    (report,) = feedback.transport_feedback(receiver.report(1, 2))
    assert report.base_seq == 12 and report.feedback_count == 2


keys = st.one_of(st.integers(-5, 3000), st.integers(-2**70, 2**70), st.just(5.0), st.just(True))
values = st.one_of(st.floats(-1e4, 1e4), st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 10),
                   st.just(1e13), st.just(-1e13))


@settings(max_examples=500, deadline=None)
@given(arrivals=st.dictionaries(keys, values, max_size=40),
       next_seq=st.one_of(st.none(), st.integers(-5, 3000), st.integers(-2**70, 2**70)),
       highest=st.one_of(st.integers(-5, 3000), st.integers(-2**70, 2**70)),
       count=st.one_of(st.integers(-300, 300), st.integers(-2**70, 2**70)),
       sender=st.one_of(SSRCS, st.integers(-1, 2**33)), media=st.one_of(SSRCS, st.integers(-1, 2**33)))
def test_any_state_gets_what_the_python_path_gives(arrivals: dict, next_seq: int | None, highest: int,
                                                   count: int, sender: int, media: int) -> None:
    """Outside the common case the compiled path gives way to the Python one, before touching anything."""
    compiled, python = TransportReceiver(3), TransportReceiver(3)
    for receiver in (compiled, python):
        receiver.arrivals, receiver.next_seq, receiver.highest, receiver.count = dict(arrivals), next_seq, highest, count
    outcomes = []
    for run in (compiled.report, python.report_in_python):
        try:
            outcomes.append(("returned", run(sender, media)))
        except Exception as error:  # the same exception, from the same point
            outcomes.append(("raised", type(error)))
    assert outcomes[0] == outcomes[1]
    assert repr(state(compiled)) == repr(state(python))  # repr: NaN times compare so


def test_report_takes_the_compiled_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: object) -> None:
        raise AssertionError("the Python path")

    monkeypatch.setattr(TransportReceiver, "report_in_python", refused)
    receiver = TransportReceiver(3)
    for seq in range(50):
        receiver.arrived(seq, 5.0 + seq * 0.000125)
    made = receiver.report(1, 2)
    assert made is not None
    (report,) = feedback.transport_feedback(made)
    assert [seq for seq, _ in report.packets] == list(range(50))
    assert math.isclose(report.packets[-1][1] or 0, 5.0 + 49 * 0.000125, abs_tol=0.000126)
