"""[api] admin_token: the config key, the banner, and the routes it guards (on the API app, without services)."""
from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestClient, TestServer

from appliance.api.server import make_app
from appliance.config import ConfigError, embedded_default, parse_config
from appliance.runner import Box, assemble, banner

TOKEN = "admin-token-0123456789"
CONFIG = f'[api]\nadmin_token = "{TOKEN}"\n[[apps]]\nid = "a"\nsecret = "a-secret"\n'


def test_an_empty_admin_token_is_refused_with_its_key():
    with pytest.raises(ConfigError) as caught:
        parse_config('[api]\nadmin_token = ""\n', "box.toml")
    assert "api.admin_token" in str(caught.value) and "non-empty" in str(caught.value)


def test_the_demo_default_has_a_dashboard_and_prints_its_token_whole():
    config = embedded_default()
    assert config.api.admin_token and config.api.admin_token != embedded_default().api.admin_token
    text = banner(assemble(config))
    assert f"dashboard  http://127.0.0.1:8080/dashboard  admin token {config.api.admin_token}\n" in text


def test_an_operators_admin_token_is_masked_and_none_means_no_dashboard_line():
    text = banner(assemble(parse_config(CONFIG, "box.toml")))
    assert TOKEN not in text and "admin token admi…" in text
    assert "/dashboard" not in banner(assemble(parse_config("", "box.toml")))


@pytest.fixture
async def client():
    async with TestClient(TestServer(make_app(Box(parse_config(CONFIG, "box.toml"))))) as client:
        yield client


async def _error(res) -> tuple[int, str, str]:
    body = await res.json()
    return res.status, body["errorCode"], body["errorDescription"]


@pytest.mark.parametrize("path", ["/v1/usage", "/dashboard/events"])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}", f"Bearer {TOKEN}x", TOKEN])
async def test_without_the_admin_token_the_data_is_refused(client, path, authorization):
    res = await client.get(path, headers={"Authorization": authorization} if authorization else {})
    status, code, _ = await _error(res)
    assert (status, code) == (401, "unauthorized") and res.headers["WWW-Authenticate"].startswith("Bearer")


async def test_with_no_admin_token_configured_the_answer_says_so():
    async with TestClient(TestServer(make_app(Box(parse_config("", "box.toml"))))) as client:
        status, _, description = await _error(await client.get("/v1/usage", headers={"Authorization": "Bearer x"}))
        assert status == 401 and "admin_token" in description and "off" in description
        assert (await client.get("/dashboard")).status == 200  # the page is public; it shows nothing without a token


async def test_only_the_event_stream_takes_the_token_in_its_query(client):
    status, _, _ = await _error(await client.get(f"/v1/usage?token={TOKEN}"))
    assert status == 401
    res = await client.get(f"/dashboard/events?token={TOKEN}")
    assert res.status == 200 and res.headers["Content-Type"] == "text/event-stream"
    line = await res.content.readline()
    assert line.startswith(b"data: ")
    snapshot = json.loads(line[len(b"data: "):])
    assert snapshot["node"] == "edge-1" and snapshot["usage"]["app"] == {
        "a": {"ingressBytes": 0, "egressBytes": 0, "sessions": 0, "allocations": 0}}
    assert [node["id"] for node in snapshot["nodes"]] == ["edge-1"]
    res.close()
    res = await client.get("/dashboard/events?token=wrong")
    assert res.status == 401


async def test_usage_with_the_token_and_a_bad_parameter_named(client):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    res = await client.get("/v1/usage?by=box&step=10", headers=auth)
    body = await res.json()
    assert res.status == 200 and body["by"] == "box" and body["step"] == 10
    ((series),) = body["series"]
    assert series["box"] == "edge-1" and series["points"][-1]["sessions"] == 0
    status, code, description = await _error(await client.get("/v1/usage?step=15", headers=auth))
    assert (status, code) == (400, "invalid_params") and description.startswith("step: ")


@pytest.mark.parametrize("path, kind", [("/dashboard", "text/html"), ("/dashboard/app.js", "text/javascript"),
                                        ("/dashboard/app.css", "text/css")])
async def test_the_page_is_served_without_a_token(client, path, kind):
    res = await client.get(path)
    assert res.status == 200 and res.headers["Content-Type"].startswith(kind)
