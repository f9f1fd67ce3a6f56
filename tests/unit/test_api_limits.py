"""Per-app limits: one app can neither fill the box with sessions nor flood the API (429 with Retry-After)."""
from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from appliance.api.errors import ApiError
from appliance.api.limits import AppLimits
from appliance.api.server import make_app
from appliance.config import parse_config
from appliance.config.schema import AppConfig
from appliance.runner import Box
from appliance.sfu.service import SfuService
from tests.lab.appliance import free_port


def limits(**app) -> AppLimits:
    return AppLimits([AppConfig("a", "s", **app), AppConfig("b", "s")], 0.0, CollectorRegistry())


def test_new_sessions_per_second_with_a_burst_of_one_seconds_worth():
    lim = limits(sessions_per_second=10, max_sessions=0)
    for i in range(10):
        lim.new_session("a", i, 0.0)
    with pytest.raises(ApiError) as refused:
        lim.new_session("a", 10, 0.0)
    assert refused.value.status == 429 and refused.value.headers == {"Retry-After": "1"}
    assert "apps.sessions_per_second" in refused.value.description
    lim.new_session("b", 0, 0.0)  # another app is not charged
    lim.new_session("a", 10, 0.1)  # a tenth of a second later: one more
    with pytest.raises(ApiError):
        lim.new_session("a", 11, 0.1)


def test_live_sessions_cap_whatever_the_rate():
    lim = limits(max_sessions=3, sessions_per_second=0)
    for live in range(3):
        lim.new_session("a", live, 0.0)
    with pytest.raises(ApiError) as refused:
        lim.new_session("a", 3, 100.0)
    assert refused.value.status == 429 and "apps.max_sessions" in refused.value.description
    assert int(refused.value.headers["Retry-After"]) >= 1
    lim.new_session("a", 2, 100.0)  # one ended: room again


def test_requests_per_second_and_the_retry_after_it_names():
    lim = limits(requests_per_second=2)
    lim.request("a", 0.0)
    lim.request("a", 0.0)
    with pytest.raises(ApiError) as refused:
        lim.request("a", 0.0)
    assert refused.value.headers == {"Retry-After": "1"} and "apps.requests_per_second" in refused.value.description
    lim.request("a", 0.5)
    unlimited = limits(requests_per_second=0)
    for _ in range(10_000):
        unlimited.request("a", 0.0)


@pytest.fixture
async def client():
    config = parse_config(f"""
[[apps]]
id = "app-a"
secret = "secret-a"
max_sessions = 20
sessions_per_second = 0
[[apps]]
id = "app-b"
secret = "secret-b"
[sfu]
udp = "127.0.0.1:{free_port("udp")}"
[turn]
enabled = false
""", "test.toml")
    box = Box(config)
    sfu = SfuService(box)
    box.services.append(sfu)
    await sfu.start()
    async with TestClient(TestServer(make_app(box))) as client:
        client.sfu = sfu.sfu
        yield client
    await sfu.stop()


async def test_one_app_creating_sessions_in_a_loop_stops_at_its_cap(client):
    """The attack: one connection creating sessions as fast as it can (54,500 in 40 s held 320 MB before)."""
    created, answers = 0, []
    for _ in range(200):
        res = await client.post("/v1/apps/app-a/sessions/new", headers={"Authorization": "Bearer secret-a"})
        answers.append(res.status)
        if res.status == 429:
            body = await res.json()
            assert body["errorCode"] == "retryable_transient_error" and "apps.max_sessions" in body["errorDescription"]
            assert int(res.headers["Retry-After"]) >= 1
        else:
            created += 1
    assert created == 20 and client.sfu.live["app-a"] == 20 and answers.count(429) == 180
    res = await client.post("/v1/apps/app-b/sessions/new", headers={"Authorization": "Bearer secret-b"})
    assert res.status == 201  # the other app is untouched
    client.sfu.close_session(next(s for s in client.sfu.sessions.values() if s.app == "app-a"))
    assert client.sfu.live["app-a"] == 19
    res = await client.post("/v1/apps/app-a/sessions/new", headers={"Authorization": "Bearer secret-a"})
    assert res.status == 201
    res = await client.get("/metrics")
    assert 'edgecall_api_limited_total{app="app-a",limit="max_sessions"} 180.0' in await res.text()
