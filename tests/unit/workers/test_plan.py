"""A worker's plan: the config it runs with and its slice of the relay ports."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from appliance.config import embedded_default, parse_config
from appliance.config.values import PortRange
from appliance.workers.plan import WorkerPlan, counts, processes, relay_slice

CONFIG = """
[node]
id = "edge-1"

[sfu]
workers = 2

[turn]
workers = 3
relay_ports = "50000-50999"
"""


def plan(index: int, **changes) -> WorkerPlan:
    fields = dict(box="edge-1", index=index, count=3, sfu=index < 2, turn=True, turn_workers=3, trunk=("127.0.0.1", 4000 + index),
                  api=("127.0.0.1", 5000 + index), nats=("nats://127.0.0.1:4222",), secret="s" * 32)
    return WorkerPlan(**{**fields, **changes})


def test_each_worker_runs_what_its_index_carries_on_its_own_slice_and_addresses():
    config = parse_config(CONFIG, "box.toml")
    assert counts(config) == (2, 3) and processes(config) == 3
    first, last = plan(0).apply(config), plan(2).apply(config)
    assert first.node.id == "edge-1-w0" and last.node.id == "edge-1-w2"
    assert first.sfu.enabled and not last.sfu.enabled
    assert first.turn.relay_ports == PortRange(50000, 50332) and last.turn.relay_ports == PortRange(50666, 50999)
    assert str(first.cluster.trunk) == "127.0.0.1:4000" and str(last.cluster.api) == "127.0.0.1:5002"
    assert first.cluster.nats == ("nats://127.0.0.1:4222",) and first.cluster.secret == "s" * 32


def test_a_worker_started_again_is_a_node_of_its_own():
    assert plan(1, life=2).node == "edge-1-w1-2"
    assert [plan(0).sibling(n) for n in ("edge-1-w1", "edge-1-w1-3", "edge-1", "edge-10-w1", "x-w1")] == [
        1, 1, None, None, None]
    assert WorkerPlan.decode(plan(1, life=2).encode()) == plan(1, life=2)


def test_the_default_is_one_worker_per_core_and_one_is_a_single_process(monkeypatch):
    monkeypatch.setattr("appliance.workers.plan.usable_cores", lambda: 4)
    assert counts(parse_config("", "box.toml")) == (4, 4)
    assert counts(parse_config("[sfu]\nworkers = 0\n[turn]\nenabled = false\n", "box.toml")) == (4, 0)
    assert processes(parse_config("[sfu]\nworkers = 1\n[turn]\nworkers = 1\n", "box.toml")) == 1
    # One per core takes no more TURN workers than there are relay ports; asked for, more is refused.
    assert counts(parse_config('[turn]\nrelay_ports = "50000-50002"\n', "box.toml")) == (4, 3)


def test_the_embedded_default_is_one_process():
    assert processes(embedded_default()) == 1


@given(st.integers(1, 65535), st.integers(0, 2000), st.integers(1, 64))
def test_the_slices_cover_the_range_once(first, span, count):
    last = min(65535, first + span)
    if last - first + 1 < count:
        with pytest.raises(ValueError):
            relay_slice(PortRange(first, last), 0, count)
        return
    slices = [relay_slice(PortRange(first, last), i, count) for i in range(count)]
    ports = [p for s in slices for p in range(s.first, s.last + 1)]
    assert ports == list(range(first, last + 1))


def test_more_turn_workers_than_relay_ports_is_refused_with_its_line():
    from appliance.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_config('[turn]\nrelay_ports = "50000-50001"\nworkers = 3\n', "box.toml")
    assert "box.toml:3" in str(caught.value) and "turn.workers" in str(caught.value), str(caught.value)


def test_one_metrics_text_for_the_box_with_every_sample_labelled_by_its_worker():
    from prometheus_client.parser import text_string_to_metric_families

    from appliance.workers.metrics import merge

    first = "# HELP edgecall_sfu_legs Legs.\n# TYPE edgecall_sfu_legs gauge\nedgecall_sfu_legs 3.0\n"
    second = ("# HELP edgecall_sfu_legs Legs.\n# TYPE edgecall_sfu_legs gauge\nedgecall_sfu_legs 4.0\n"
              "# HELP edgecall_turn_dropped_total Dropped.\n# TYPE edgecall_turn_dropped_total counter\n"
              'edgecall_turn_dropped_total{reason="rate"} 2.0\n')
    families = {f.name: f for f in text_string_to_metric_families(merge({"0": first, "1": second}).decode())}
    assert sorted((s.labels["worker"], s.value) for s in families["edgecall_sfu_legs"].samples) == [("0", 3.0),
                                                                                                  ("1", 4.0)]
    assert [(s.name, s.labels) for s in families["edgecall_turn_dropped"].samples] == [
        ("edgecall_turn_dropped_total", {"reason": "rate", "worker": "1"})]
