"""The health agent's decision core: rise/fall counters, hold-down, draining; time passed in."""
from appliance.announce.hysteresis import Hysteresis, Verdict

P, F, D = Verdict.PASS, Verdict.FAIL, Verdict.DRAINING


def feed(h: Hysteresis, verdicts, start: float = 0.0, step: float = 0.5) -> list[bool]:
    return [h.observe(v, start + i * step) for i, v in enumerate(verdicts)]


def test_announces_after_rise_passes_in_a_row_and_not_before():
    h = Hysteresis(rise=3, fall=2, hold_down=10)
    assert feed(h, [P, P, F, P, P, P]) == [False, False, False, False, False, True]
    assert h.describe(3.0) == "announced"


def test_withdraws_after_fall_failures_in_a_row_and_one_failure_is_tolerated():
    h = Hysteresis(rise=1, fall=2, hold_down=10)
    assert feed(h, [P, F, P, F, F]) == [True, True, True, True, False]
    assert h.withdrawn_at == 2.0


def test_draining_withdraws_at_once():
    h = Hysteresis(rise=1, fall=5, hold_down=0)
    assert feed(h, [P, D]) == [True, False]
    assert h.describe(1.0) == "withdrawn: the service is draining"


def test_hold_down_keeps_it_withdrawn_however_well_the_probes_go():
    h = Hysteresis(rise=2, fall=1, hold_down=10)
    assert feed(h, [P, P, F]) == [False, True, False]  # withdrawn at t=1.0
    assert [h.observe(P, t) for t in (2, 3, 4, 10.9)] == [False, False, False, False]
    assert h.describe(10.9) == "withdrawn: held down for 0.1 s more"
    assert h.observe(P, 11.0) is True


def test_flapping_probes_never_announce_when_rise_exceeds_the_run_of_passes():
    h = Hysteresis(rise=3, fall=2, hold_down=10)
    assert not any(feed(h, [P, P, F] * 10))


def test_no_hold_down_at_start():
    h = Hysteresis(rise=1, fall=1, hold_down=100)
    assert h.observe(P, 0.0) is True


def test_descriptions_while_rising_and_failing():
    h = Hysteresis(rise=3, fall=2, hold_down=0)
    h.observe(P, 0)
    assert h.describe(0) == "withdrawn: rising 1/3"
    feed(h, [P, P, F], start=1)
    assert h.describe(3) == "announced (failing 1/2)"
    h.observe(F, 4)
    assert h.describe(4) == "withdrawn: probes failing"
