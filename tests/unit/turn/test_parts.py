"""Nonces, token buckets and the relay port pool."""
import math
import random

from appliance.turn.nonce import Nonces
from appliance.turn.ports import RelayPorts
from appliance.plumbing.buckets import TokenBucket
from appliance.turn.ratelimit import RelayBudget, RelayLimits

NOW = 1_700_000_000.0


def test_nonce_is_fresh_for_its_lifetime_and_its_client_only():
    nonces = Nonces(600, key=b"k")
    nonce = nonces.issue("198.51.100.1", NOW)
    assert nonces.fresh(nonce, "198.51.100.1", NOW + 599)
    assert not nonces.fresh(nonce, "198.51.100.1", NOW + 600)
    assert not nonces.fresh(nonce, "198.51.100.2", NOW)
    assert not Nonces(600, key=b"other").fresh(nonce, "198.51.100.1", NOW)
    for forged in ["", "x" * 24, nonce[:-1] + "0", "ff" + nonce[-24:], "\u00e9" * 30, "1" * 17 + nonce[-24:]]:
        assert not nonces.fresh(forged, "198.51.100.1", NOW)


def test_token_bucket():
    bucket = TokenBucket(rate=2, burst=4, now=NOW)
    assert bucket.take(4, NOW) and not bucket.take(1, NOW)
    assert bucket.take(1, NOW + 0.5) and not bucket.take(1, NOW + 0.5)
    assert bucket.take(4, NOW + 100) and not bucket.take(1, NOW + 100)
    unlimited = TokenBucket(rate=math.inf, burst=math.inf, now=NOW)
    assert all(unlimited.take(1000, NOW) for _ in range(100))


def test_relay_budget_holds_the_rate_over_time():
    budget = RelayBudget(RelayLimits(packets_per_second=100, bytes_per_second=math.inf), NOW)
    passed = sum(budget.charge(100, NOW + i / 1000) for i in range(10_000))  # 1000 pps for 10 s
    # 100 pps for 10 s, plus the first burst and at most one more after a refill.
    assert 1000 <= passed <= 1200


def test_relay_budget_unlimited_never_refills():
    budget = RelayBudget(RelayLimits(), NOW)
    assert all(budget.charge(1500, NOW) for _ in range(1000))
    assert budget.refilled_at == NOW


def test_ports_random_even_and_pairs():
    ports = RelayPorts(50000, 50009, random.Random(1))
    seen = {next(ports.candidates("a", 17)) for _ in range(50)}
    assert len(seen) > 3 and all(50000 <= p <= 50009 for p in seen)
    assert all(p % 2 == 0 for p in ports.candidates("a", 17, even=True))
    for port in (50000, 50003, 50004):
        ports.take("a", 17, port)
    pairs = list(ports.candidates("a", 17, even=True, pair=True))
    assert set(pairs) == {50006, 50008}  # 50002 is not: 50003 is taken
    # A pair needs its odd port inside the range.
    assert set(RelayPorts(50000, 50008).candidates("a", 17, even=True, pair=True)) == {50000, 50002, 50004, 50006}
    assert list(RelayPorts(50001, 50001).candidates("a", 17, even=True)) == []
