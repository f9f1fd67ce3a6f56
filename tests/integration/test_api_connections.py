"""The API's HTTP connections: idle ones, header tricklers and slow bodies are cut off, so that clients without a
token cannot hold the box's open files; the API keeps answering meanwhile. In-process server on loopback."""
from __future__ import annotations

import asyncio

import pytest

from appliance.api.server import ApiService
from appliance.config import parse_config
from appliance.runner import Box
from tests.lab.appliance import free_port

IDLE = 0.5  # api.idle_timeout and body_timeout for the test: short, so the test is quick


@pytest.fixture
async def api():
    port = free_port()
    box = Box(parse_config(f"""
[api]
listen = "127.0.0.1:{port}"
idle_timeout = {IDLE}
body_timeout = {IDLE}
[[apps]]
id = "app-a"
secret = "secret-a"
[turn]
enabled = false
""", "test.toml"))
    service = ApiService(box)
    await service.start()
    yield port
    await service.stop()


async def _closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes | None:
    """What the server sent before closing, or None when it kept the connection open `within` seconds."""
    try:
        async with asyncio.timeout(within):
            return await reader.read()
    except TimeoutError:
        return None


async def test_idle_and_trickling_connections_are_closed_and_the_api_still_answers(api):
    idle = [await asyncio.open_connection("127.0.0.1", api) for _ in range(200)]
    trickling = []
    for _ in range(20):
        reader, writer = await asyncio.open_connection("127.0.0.1", api)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finished
        trickling.append((reader, writer))
    reader, writer = await asyncio.open_connection("127.0.0.1", api)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # one request, then kept alive and idle
    await writer.drain()
    kept_alive = (reader, writer)
    # Meanwhile the API answers a new client.
    r, w = await asyncio.open_connection("127.0.0.1", api)
    w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await r.read()).startswith(b"HTTP/1.1 200")
    w.close()
    for reader, writer in idle + trickling + [kept_alive]:
        assert await _closed_by_server(reader, IDLE * 20) is not None
        writer.close()


async def test_a_body_that_never_arrives_gets_408(api):
    reader, writer = await asyncio.open_connection("127.0.0.1", api)
    writer.write(b"POST /v1/apps/app-a/sessions/new HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret-a\r\n"
                 b"Content-Length: 1000\r\n\r\n{")
    async with asyncio.timeout(IDLE * 20):
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        answer = await reader.readexactly(length)
    writer.close()
    assert b'"errorCode": "decoding_error"' in answer and b"api.body_timeout" in answer
