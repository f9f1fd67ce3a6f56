"""No route under an app or a TURN key is reached without that app's or key's token, however its path is spelled.

The server runs in a thread and requests are written as raw bytes on a socket, so that the request target reaches
aiohttp exactly as an attacker spells it (an HTTP client library would normalise or re-encode it first).
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from appliance.api.auth import APP, APPS, TURN_KEY, TURN_KEYS
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
TOKENS = {"app-a": "secret-a", "app-b": "secret-b", "key-1": "token-1"}


class RecordingTurn:
    """Stands in for the TURN service behind the credentials API (its sockets are not what is tested here): it
    mints and revokes anything, so a request that gets past auth answers 201 or 204."""

    name = "turn"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def health(self):
        return None

    def urls(self):
        return []

    def mint(self, ttl, identifier, issuer):
        self.calls.append(("mint", ttl, identifier, issuer))
        return "9999999999:x", "credential"

    async def revoke(self, username):
        self.calls.append(("revoke", username))
        return True


class Server:
    """The API app on 127.0.0.1 in a thread of its own; `request` writes a raw request and reads the answer."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = 0
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(self.app, access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(runner.cleanup())

    def __enter__(self) -> Server:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def request(self, method: str, target: str, token: str | None = None) -> tuple[int, dict]:
        head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: 2\r\n"
        if token is not None:
            head += f"Authorization: Bearer {token}\r\n"
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(head.encode("latin-1") + b"\r\n{}")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        status = int(answer.split(b" ", 2)[1])
        body = answer.partition(b"\r\n\r\n")[2]
        return status, json.loads(body) if body.startswith(b"{") else {}


@pytest.fixture(scope="module")
def server():
    box = Box(parse_config(CONFIG, "test.toml"))
    turn = RecordingTurn()
    box.services.append(turn)
    app = make_app(box)
    acted_for: list[str] = []

    @web.middleware
    async def record(request, handler):
        """Innermost: notes the app or key a handler ran for, once its guard let it."""
        try:
            return await handler(request)
        finally:
            acted_for.extend(x for x in (request.get(APP), request.get(TURN_KEY)) if x)

    app.middlewares.append(record)
    with Server(app) as running:
        running.turn, running.acted_for = turn, acted_for
        yield running


def _routes(app: web.Application) -> list[tuple[str, str, object]]:
    return [(route.method, route.resource.canonical, route.handler) for route in app.router.routes()
            if route.resource is not None]


def _fill(pattern: str, app: str = "app-a", key: str = "key-1") -> str:
    return (pattern.replace("{appId}", app).replace("{keyId}", key).replace("{sessionId}", "s1")
            .replace("{username}", "9999999999:victim").replace("{name}", "stream-1"))


def test_every_route_that_names_an_app_or_key_is_guarded_by_that_realm(server):
    guarded = 0
    for method, pattern, handler in _routes(server.app):
        realm = APPS if "{appId}" in pattern else TURN_KEYS if "{keyId}" in pattern else None
        assert getattr(handler, "realm", None) is realm, f"{method} {pattern}"
        guarded += realm is not None
    assert guarded >= 20  # the Calls API twice (with and without /v1) and the three TURN credential routes


def test_the_right_token_reaches_every_route(server):
    """The control for the attacks below: with its token, each guarded route's handler runs (no 401/404 from auth)."""
    for method, pattern, handler in _routes(server.app):
        if getattr(handler, "realm", None) is None:
            continue
        principal = "key-1" if "{keyId}" in pattern else "app-a"
        before = len(server.acted_for)
        status, body = server.request(method, _fill(pattern), TOKENS[principal])
        assert status != 401 and body.get("errorDescription") != "no app 'app-a'", (method, pattern, status, body)
        assert server.acted_for[before:] == [principal], (method, pattern, status, body)
        # The handler ran: the TURN stand-in mints and revokes, this box has no SFU (503), and a
        # stream token needs its kind ("{}" has none).
        assert status in (201, 204) or body.get("errorCode") in ("temporarily_unavailable_error", "invalid_params"), (
            pattern, status, body)


@pytest.mark.parametrize("target", [
    "/v1/turn/keys/%2Fx/credentials/generate-ice-servers",
    "/v1/turn/keys/%2Fx/credentials/generate",
    "/v1/turn/keys/%2Fx/credentials/9999999999:victim/revoke",
    "/v1/turn/keys/%2fkey-1/credentials/generate-ice-servers",
    "/v1/turn/keys/key-1%2F/credentials/generate-ice-servers",
    "/v1/turn/keys/%2e%2e/credentials/generate-ice-servers",
    "/v1/turn/keys/%252Fx/credentials/generate-ice-servers",
    "/v1/turn/keys/key-1%00/credentials/generate-ice-servers",
    "/v1/turn/keys/./credentials/generate-ice-servers",
    "/v1/turn/keys/key-1/credentials/generate-ice-servers/",
    "/v1/turn/keys//credentials/generate-ice-servers",
    "/v1/apps/%2FappA/sessions/new",
    "/v1/apps/%2Fapp-a/sessions/new",
    "/apps/%2Fapp-a/sessions/new",
    "/v1/apps/app-a%2F..%2Fapp-b/sessions/new",
    "/v1/apps/%252Fapp-a/sessions/new",
    "/v1/apps/app-a%00/sessions/new",
    "/v1/apps/./sessions/new",
    "/v1/apps/app-a/sessions/new/",
    "/v1/apps/app-a/sessions/s1/",
])
def test_spelled_paths_never_get_past_auth(server, target):
    for method in ("POST", "PUT", "GET"):
        before = len(server.turn.calls), len(server.acted_for)
        status, body = server.request(method, target)
        assert status in (401, 404, 405), (method, target, status, body)
        assert body.get("errorCode") in ("unauthorized", "not_found", "invalid_params"), body
        assert (len(server.turn.calls), len(server.acted_for)) == before, "a handler ran without a token"


def _spellings(ident: str) -> st.SearchStrategy[str]:
    """Ways to write a path segment that may or may not decode to `ident`."""
    encoded = "".join(f"%{b:02X}" for b in ident.encode())
    return st.sampled_from([
        ident, encoded, encoded.lower(), f"%2F{ident}", f"%2f{ident}", f"{ident}%2F", f"%252F{ident}", f"{ident}%00",
        f"{ident}%2F..%2Fapp-a", f"..%2F{ident}", f"{ident}/.", f"./{ident}", f"{ident}/..", f"{ident};x", "", ".",
        "..", "%2e", "%2E%2e", "%2F", "%00", "app-a", "app-b", "key-1", "%5C", "\\", "9999999999:victim",
    ])


ROUTE_PATTERNS = sorted({pattern for pattern in (
    "/v1/apps/{appId}/sessions/new", "/apps/{appId}/sessions/{sessionId}/tracks/new",
    "/v1/apps/{appId}/sessions/{sessionId}/renegotiate", "/v1/apps/{appId}/sessions/{sessionId}",
    "/v1/apps/{appId}/sessions/{sessionId}/datachannels/new",
    "/v1/turn/keys/{keyId}/credentials/generate-ice-servers", "/v1/turn/keys/{keyId}/credentials/generate",
    "/v1/turn/keys/{keyId}/credentials/{username}/revoke",
)})


@st.composite
def spelled_targets(draw) -> str:
    """A route's path with its ids and some of its fixed segments spelled in generated ways, and extra segments."""
    segments = draw(st.sampled_from(ROUTE_PATTERNS)).strip("/").split("/")
    out = []
    for segment in segments:
        if segment.startswith("{"):
            segment = draw(_spellings({"{appId}": "app-a", "{keyId}": "key-1", "{sessionId}": "s1",
                                       "{username}": "9999999999:victim"}[segment]))
        elif draw(st.integers(0, 9)) == 0:
            segment = draw(_spellings(segment))
        out.append(segment)
        if draw(st.integers(0, 14)) == 0:
            out.append(draw(st.sampled_from(["", ".", "..", "%2F", "%2e%2e"])))
    return "/" + "/".join(out) + draw(st.sampled_from(["", "", "/", "?x=1", "%2F"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(method=st.sampled_from(["GET", "POST", "PUT", "PATCH"]), target=spelled_targets(),
       token=st.sampled_from([None, "wrong", "secret-b", "token-2", "s"]))
def test_generated_paths_reach_no_route_without_its_token(server, method, target, token):
    """Whatever the path, a handler runs only for the app or key whose token the request carries (app-b's token
    may reach app-b's routes, which answer 503 here: this box has no SFU)."""
    before = len(server.turn.calls), len(server.acted_for)
    status, body = server.request(method, target, token)
    acted_for = server.acted_for[before[1]:]
    assert acted_for in ([], ["app-b"] if token == "secret-b" else []), (method, target, token, acted_for)
    assert len(server.turn.calls) == before[0], (method, target, token, status)
    if acted_for:
        assert (status, body["errorCode"]) == (503, "temporarily_unavailable_error"), body
    else:  # refused, or one of the public routes (/, /healthz, /metrics)
        assert status < 500, (method, target, token, status, body)
