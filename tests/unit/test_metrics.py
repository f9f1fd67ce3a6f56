"""/metrics: bounded TURN label cardinality, and the optional bearer token."""
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from appliance.api.server import make_app
from appliance.config import parse_config
from appliance.runner import Box
from appliance.turn import Usage
from appliance.turn.service import USAGE_FAMILIES, USAGE_METRICS, TurnService
from appliance.turn.usage import OTHER, top_identifiers
from tests.unit.turn.harness import NOW, Lab, ok


def _usage(i: int) -> Usage:
    return Usage(allocations=1, seconds=float(i), bytes_from_client=i, packets_from_client=1, bytes_to_client=2 * i,
                 packets_to_client=2, dropped=i % 3)


def test_the_top_identifiers_as_they_are_and_the_rest_summed_as_other():
    totals = {f"id{i}": _usage(i) for i in range(1, 11)}
    totals["other"] = _usage(100)  # a customIdentifier named "other" is summed with the rest
    top = top_identifiers(totals, 3)
    assert set(top) == {"id10", "id9", "id8", OTHER}
    assert top["id10"] == totals["id10"]
    assert top[OTHER].bytes_to_client == 2 * (100 + sum(range(1, 8)))
    assert top[OTHER].allocations == 8
    assert top_identifiers({}, 3) == {OTHER: Usage()}
    assert set(top_identifiers(totals, 0)) == {OTHER}


def test_5000_identifiers_make_a_small_scrape_that_still_adds_up():
    box = Box(parse_config("[turn]\nsecrets = [\"s\"]\nmetrics_identifiers = 50\n", "test.toml"))
    turn = TurnService(box)
    turn.core = Lab().server  # the collector reads the core only
    for i in range(1, 5001):  # 5,000 identifiers whose allocations ended
        turn.core.usage_book.started(f"user{i}")
        turn.core.usage_book.ended(f"user{i}", _usage(i), NOW)
    text = generate_latest(box.registry).decode()
    assert len(text) < 100_000  # was 9.3 MB before the bound
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = turn.core.usage_by_identifier(NOW)
    for name in USAGE_METRICS:
        samples = families[USAGE_FAMILIES[name]].samples
        labels = [s.labels["identifier"] for s in samples]
        assert len(samples) == 51 and OTHER in labels
        assert set(labels) - {OTHER} == {f"user{i}" for i in range(4951, 5001)}
        assert sum(s.value for s in samples) == pytest.approx(sum(getattr(u, name) for u in expected.values()))


def test_live_allocations_count_in_the_scrape():
    box = Box(parse_config("[turn]\nsecrets = [\"s\"]\nmetrics_identifiers = 1\n", "test.toml"))
    turn = TurnService(box)
    lab = Lab()
    turn.core = lab.server
    ok(lab.client(("198.51.100.20", 1), identifier="alice").allocate())
    ok(lab.client(("198.51.100.20", 2), identifier="bob").allocate())
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(box.registry).decode())}
    allocations = {s.labels["identifier"]: s.value for s in families["edgecall_turn_allocations"].samples}
    assert len(allocations) == 2 and OTHER in allocations and sum(allocations.values()) == 2


@pytest.fixture
async def client():
    box = Box(parse_config('[api]\nmetrics_token = "scrape-token"\n', "test.toml"))
    async with TestClient(TestServer(make_app(box))) as client:
        yield client


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", "Basic scrape-token", "Bearer ", "scrape-token",
                                           "Bearer scrape-token-and-more"])
async def test_with_a_token_configured_metrics_refuses_a_request_without_it(client, authorization):
    res = await client.get("/metrics", headers={"Authorization": authorization} if authorization else {})
    assert res.status == 401
    assert (await res.json())["errorCode"] == "unauthorized"


async def test_with_a_token_configured_metrics_answers_the_token(client):
    res = await client.get("/metrics", headers={"Authorization": "Bearer scrape-token"})
    assert res.status == 200 and "edgecall_info" in await res.text()
    assert (await client.get("/healthz")).status == 200  # the health agent's probe needs no token
