"""The box serves its JavaScript client and the client's types (in-process HTTP, as test_api.py)."""
import pytest
from aiohttp.test_utils import TestClient, TestServer

from appliance.api.server import STATIC, make_app
from appliance.config import parse_config
from appliance.runner import Box

CONFIG = """
[[apps]]
id = "app-a"
secret = "secret-a"
"""


@pytest.fixture
async def client():
    async with TestClient(TestServer(make_app(Box(parse_config(CONFIG, "test.toml"))))) as client:
        yield client


@pytest.mark.parametrize("name, content_type", [("edgecall.js", "text/javascript"),
                                                ("edgecall.d.ts", "application/typescript")])
async def test_the_sdk_files_are_served_with_their_type_a_short_cache_life_and_cors(client, name, content_type):
    res = await client.get(f"/sdk/{name}", headers={"Origin": "https://app.example"})
    assert res.status == 200
    assert res.headers["Content-Type"].split(";")[0] == content_type
    assert res.headers["Cache-Control"] == "public, max-age=300"
    # A page of another origin imports the module (modules are fetched with CORS).
    assert res.headers["Access-Control-Allow-Origin"] in ("*", "https://app.example")
    assert await res.read() == (STATIC / "sdk" / name).read_bytes()


async def test_nothing_else_is_served_under_sdk(client):
    assert (await client.get("/sdk/../server.py")).status == 404
    assert (await client.get("/sdk/other.js")).status == 404
