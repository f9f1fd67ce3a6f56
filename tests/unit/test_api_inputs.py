"""Whatever JSON a client sends to the Calls API, the answer is a clear error or a result, never a 500.

In-process: the API app over a real SFU service on a loopback media port, driven by generated bodies.
"""
from __future__ import annotations

import json

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.api.body import MAX_DEPTH
from appliance.api.server import make_app
from appliance.config import parse_config
from appliance.runner import Box
from appliance.sfu.service import SfuService
from tests.lab.appliance import free_port

AUTH = {"Authorization": "Bearer secret-a"}


@pytest.fixture
async def api():
    box = Box(parse_config(f'[[apps]]\nid = "app-a"\nsecret = "secret-a"\n[sfu]\nudp = "127.0.0.1:{free_port("udp")}"\n'
                           '[turn]\nenabled = false\n',
                           "test.toml"))
    sfu = SfuService(box)
    box.services.append(sfu)
    await sfu.start()
    async with TestClient(TestServer(make_app(box))) as client:
        res = await client.post("/v1/apps/app-a/sessions/new", headers=AUTH)
        client.sid = (await res.json())["sessionId"]
        yield client
    await sfu.stop()


async def test_deep_json_is_a_400(api):
    for body in ("[" * 100_000, '{"tracks": ' + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "}"):
        res = await api.post("/v1/apps/app-a/sessions/new", data=body, headers=AUTH)
        assert res.status == 400 and (await res.json())["errorCode"] == "decoding_error"


async def test_a_token_that_is_not_ascii_is_a_401(api):
    for token in ("sécret-a", "secret-a\u00ff", "\u2603"):
        res = await api.get(f"/v1/apps/app-a/sessions/{api.sid}", headers={"Authorization": f"Bearer {token}"})
        assert res.status == 401 and (await res.json())["errorCode"] == "unauthorized"


async def test_a_list_where_an_id_belongs_is_a_per_item_error(api):
    for item in ({"location": "remote", "sessionId": ["x"], "trackName": "y"},
                 {"location": "remote", "sessionId": api.sid, "trackName": {"a": 1}}):
        res = await api.post(f"/v1/apps/app-a/sessions/{api.sid}/tracks/new", json={"tracks": [item]},
                             headers=AUTH)
        (result,) = (await res.json())["tracks"]
        assert res.status == 200 and result["errorCode"] == "invalid_params", result
        assert "expected a string" in result["errorDescription"]


KEYS = ["tracks", "dataChannels", "dataChannel", "sessionDescription", "type", "sdp", "location", "sessionId",
        "trackName", "mid", "kind", "simulcast", "preferredRid", "priorityOrdering", "ridNotAvailable", "force",
        "autoDiscover", "dataChannelName", "id", "bidirectionalMediaStream"]
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=False),
                   st.text(max_size=8), st.sampled_from(["remote", "local", "offer", "answer", "audio", "video",
                                                         "v=0\r\n", "0", "#x", "server-events"]))
JSON = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
                    max_leaves=20)
ROUTES = [("POST", "tracks/new"), ("PUT", "renegotiate"), ("PUT", "tracks/close"), ("PUT", "tracks/update"),
          ("POST", "datachannels/establish"), ("POST", "datachannels/new"), ("PUT", "datachannels/close"),
          ("PUT", "datachannels/update"), ("POST", "new")]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(ROUTES), body=st.dictionaries(st.sampled_from(KEYS), JSON, max_size=5))
async def test_generated_bodies_never_make_a_500(api, route, body):
    method, path = route
    url = "/v1/apps/app-a/sessions/new" if path == "new" else f"/v1/apps/app-a/sessions/{api.sid}/{path}"
    res = await api.request(method, url, data=json.dumps(body), headers=AUTH)
    answer = await res.json()
    assert res.status < 500 or (res.status, answer["errorCode"]) == (503, "temporarily_unavailable_error"), (
        method, path, body, res.status, answer)
    if res.status >= 400:
        assert answer["errorCode"] and answer["errorDescription"], answer
