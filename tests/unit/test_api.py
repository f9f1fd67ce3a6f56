"""The HTTP base in-process: health, metrics, auth, CORS, JSON errors."""
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from appliance.api.server import make_app
from appliance.config import parse_config
from appliance.runner import Box

CONFIG = """
[[apps]]
id = "app-a"
secret = "secret-a"
[[apps]]
id = "app-b"
secret = "secret-b"
[turn]
secrets = ["s"]
[[turn.keys]]
id = "key-1"
token = "token-1"
"""


class CheckedService:
    """A service whose own check the test sets."""

    def __init__(self, name, failure=None):
        self.name, self.failure = name, failure

    def health(self):
        return self.failure


@pytest.fixture
async def client():
    box = Box(parse_config(CONFIG, "test.toml"))
    box.services.append(CheckedService("turn"))
    async with TestClient(TestServer(make_app(box))) as client:
        client.box = box
        yield client


async def test_healthz_ok_then_503_naming_the_failing_service(client):
    res = await client.get("/healthz")
    assert res.status == 200
    assert (await res.json())["services"] == {"turn": "ok"}
    client.box.services[0].failure = "no relay ports"
    res = await client.get("/healthz")
    body = await res.json()
    assert res.status == 503
    assert body["status"] == "failing" and body["services"] == {"turn": "no relay ports"}


async def test_healthz_survives_a_check_that_raises(client):
    class Broken(CheckedService):
        def health(self):
            raise RuntimeError("boom")

    client.box.services.append(Broken("sfu"))
    res = await client.get("/healthz")
    assert res.status == 503
    assert "RuntimeError: boom" in (await res.json())["services"]["sfu"]


async def test_metrics_is_prometheus_text(client):
    await client.get("/healthz")
    res = await client.get("/metrics")
    assert res.status == 200 and res.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(await res.text())}
    assert families["edgecall_service_up"].samples[0].labels == {"service": "turn"}
    requests = families["edgecall_http_requests"].samples
    assert any(s.labels == {"method": "GET", "route": "/healthz", "status": "200"} for s in requests)
    assert "process_cpu_seconds" in families


@pytest.mark.parametrize("prefix", ["/v1/apps", "/apps"])
async def test_app_paths_need_the_apps_own_bearer_secret(client, prefix):
    path = f"{prefix}/app-a/sessions/s1"
    cases = [
        ({}, 401, "unauthorized"),
        ({"Authorization": "Bearer wrong"}, 401, "unauthorized"),
        ({"Authorization": "Bearer secret-b"}, 401, "unauthorized"),  # another app's secret
        ({"Authorization": "Basic secret-a"}, 401, "unauthorized"),
        ({"Authorization": "Bearer secret-a"}, 503, "temporarily_unavailable_error"),  # authorized; no SFU here
    ]
    for headers, status, code in cases:
        res = await client.get(path, headers=headers)
        assert res.status == status, headers
        assert (await res.json())["errorCode"] == code


async def test_unknown_app_and_turn_key(client):
    res = await client.post("/v1/apps/nope/sessions/new", headers={"Authorization": "Bearer secret-a"})
    assert res.status == 404 and (await res.json()) == {"errorCode": "not_found", "errorDescription": "no app 'nope'"}
    res = await client.post("/v1/turn/keys/key-1/credentials/generate", headers={"Authorization": "Bearer token-2"})
    assert res.status == 401
    res = await client.post("/v1/turn/keys/key-2/credentials/generate", headers={"Authorization": "Bearer token-1"})
    assert res.status == 404


async def test_cors_preflight_and_headers_on_errors(client):
    res = await client.options(
        "/v1/apps/app-a/sessions/new",
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert res.status == 204
    assert res.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in res.headers["Access-Control-Allow-Methods"]
    assert res.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    res = await client.post("/v1/apps/app-a/sessions/new", headers={"Origin": "https://app.example"})
    assert res.status == 401 and res.headers["Access-Control-Allow-Origin"] == "*"
    assert res.headers["Vary"] == "Origin"


async def test_cors_with_an_origin_list():
    config = parse_config('[api]\ncors_origins = ["https://good.example"]\n', "t.toml")
    async with TestClient(TestServer(make_app(Box(config)))) as client:
        for origin, allowed in (("https://good.example", True), ("https://evil.example", False)):
            res = await client.options(
                "/healthz", headers={"Origin": origin, "Access-Control-Request-Method": "GET"}
            )
            assert (res.status == 204) is allowed
            assert res.headers.get("Access-Control-Allow-Origin") == (origin if allowed else None)


async def test_errors_are_json(client):
    res = await client.get("/no/such/thing")
    assert res.status == 404
    assert await res.json() == {"errorCode": "not_found", "errorDescription": "no such endpoint: GET /no/such/thing"}
    res = await client.post("/healthz")
    assert res.status == 405 and (await res.json())["errorCode"] == "invalid_params"
    assert "GET" in res.headers["Allow"]


async def test_status_page_is_served(client):
    res = await client.get("/")
    assert res.status == 200 and "<title>Edgecall</title>" in await res.text()
