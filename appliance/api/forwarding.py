"""The API on any box: a request for a session another box of the cluster holds goes to that box,
and its answer comes back as it was (status, body, content type), so a client never learns which
box it reached. The owner checks the client's token itself, as for any request.

A forwarded request carries `Edgecall-Forwarded: <node> <time> <mac>`, a MAC under a key derived
from the cluster secret: the owner does not forward it again (no loops while ownership moves) and
does not count it against the app's request rate a second time. A header that does not verify is
ignored, so a client cannot use it to skip limits.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

import aiohttp
from aiohttp import web

from ..cluster.seal import derive
from .errors import ApiError

HEADER = "Edgecall-Forwarded"
# How long a forwarded request may take: the owner may wait for a PeerConnection (calls.CONNECT_WAIT).
TIMEOUT = 10.0
# A forwarded mark older than this (or this far in the future) is not honoured.
MARK_LIFETIME = 30.0
# The request headers that travel with it (the body's type, the client's token).
KEPT = ("Authorization", "Content-Type")
# The answer headers that come back with it.
RETURNED = ("Retry-After", "Location")


class Forwarder:
    def __init__(self, node: str, secret: str) -> None:
        self.node = node
        self._key = derive(secret, "api forwarding")
        self._client: aiohttp.ClientSession | None = None

    def _mac(self, method: str, path: str, node: str, at: int) -> str:
        return hmac.new(self._key, f"{method} {path} {node} {at}".encode(), hashlib.sha256).hexdigest()

    def forwarded(self, request: web.Request) -> bool:
        """Whether another box of the cluster forwarded this request."""
        node, _, rest = request.headers.get(HEADER, "").partition(" ")
        at, _, mac = rest.partition(" ")
        if not at.isdigit() or abs(time.time() - int(at)) > MARK_LIFETIME:
            return False
        return hmac.compare_digest(mac, self._mac(request.method, request.path_qs, node, int(at)))

    async def forward(self, request: web.Request, api: str, body: bytes) -> web.Response:
        if self._client is None:
            self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT))
        at = int(time.time())
        headers = {name: request.headers[name] for name in KEPT if name in request.headers}
        headers[HEADER] = f"{self.node} {at} {self._mac(request.method, request.path_qs, self.node, at)}"
        try:
            async with self._client.request(request.method, f"http://{api}{request.path_qs}", data=body,
                                            headers=headers) as answer:
                payload = await answer.read()
                returned = {name: answer.headers[name] for name in RETURNED if name in answer.headers}
                return web.Response(status=answer.status, body=payload, headers=returned,
                                    content_type=answer.content_type or "application/json")
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise ApiError(503, "temporarily_unavailable_error",
                           f"the box that holds this session did not answer ({type(e).__name__}); retry") from None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
