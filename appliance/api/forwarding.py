"""The API on any box: a request for a session another box of the cluster holds goes to that box,
and its answer comes back as it was (status, body, content type), so a client never learns which
box it reached. The owner checks the client's token itself, as for any request.

A forwarded request carries `Edgecall-Forwarded: <via> <time> <mac>`, the boxes it went through
(comma-separated) and a MAC under a key derived from the cluster secret. A box it reaches does not
count it against the app's request rate a second time, and forwards it on (its view of who owns
the session may be fresher: ownership moves at a takeover) only to a box it has not been through,
at most MAX_HOPS times. A header that does not verify is ignored, so a client cannot use it to
skip limits.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import time

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from ..cluster.seal import derive
from .errors import ApiError

HEADER = "Edgecall-Forwarded"
# How long a forwarded request may take: the owner may wait for a PeerConnection (calls.CONNECT_WAIT).
TIMEOUT = 10.0
# A forwarded mark older than this (or this far in the future) is not honoured.
MARK_LIFETIME = 30.0
MAX_HOPS = 3
# The request headers that travel with it (the body's type, the client's token, a WHIP client's
# ICE session).
KEPT = ("Authorization", "Content-Type", "If-Match")
# The answer headers that come back with it (WHIP and WHEP answers carry several Link headers).
RETURNED = ("Retry-After", "Location", "ETag", "Link", "Accept-Patch", "Allow")


class Forwarder:
    def __init__(self, node: str, secret: str) -> None:
        self.node = node
        self._key = derive(secret, "api forwarding")
        self._client: aiohttp.ClientSession | None = None

    def _mac(self, method: str, path: str, via: str, at: int) -> str:
        return hmac.new(self._key, f"{method} {path} {via} {at}".encode(), hashlib.sha256).hexdigest()

    def via(self, request: web.Request) -> list[str] | None:
        """The boxes that forwarded this request, in order; None when no box of the cluster did."""
        via, _, rest = request.headers.get(HEADER, "").partition(" ")
        at, _, mac = rest.partition(" ")
        if not at.isdigit() or abs(time.time() - int(at)) > MARK_LIFETIME:
            return None
        if not hmac.compare_digest(mac, self._mac(request.method, request.path_qs, via, int(at))):
            return None
        return via.split(",")

    def forwarded(self, request: web.Request) -> bool:
        return self.via(request) is not None

    def may_forward(self, request: web.Request, to: str) -> bool:
        """Whether this box may send the request on to box `to`: never back, never past MAX_HOPS."""
        via = self.via(request) or []
        return to not in via and to != self.node and len(via) < MAX_HOPS

    async def forward(self, request: web.Request, api: str, body: bytes) -> web.Response:
        if self._client is None:
            self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT))
        at = int(time.time())
        via = ",".join([*(self.via(request) or []), self.node])
        headers = {name: request.headers[name] for name in KEPT if name in request.headers}
        headers[HEADER] = f"{via} {at} {self._mac(request.method, request.path_qs, via, at)}"
        try:
            async with self._client.request(request.method, f"http://{api}{request.path_qs}", data=body,
                                            headers=headers) as answer:
                payload = await answer.read()
                returned = CIMultiDict((name, value) for name in RETURNED for value in answer.headers.getall(name, ()))
                return web.Response(status=answer.status, body=payload, headers=returned,
                                    content_type=answer.content_type or "application/json")
        except (aiohttp.ClientError, asyncio.TimeoutError) as e:
            raise ApiError(503, "temporarily_unavailable_error",
                           f"the box that holds this session did not answer ({type(e).__name__}); retry") from None

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
