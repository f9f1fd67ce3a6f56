"""Request bodies: JSON whatever the Content-Type (Cloudflare's examples send text/plain or none)."""
from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from ..sfu.sdp import MAX_SDP_BYTES
from .errors import ApiError
from .health import BOX

# The largest body (aiohttp's client_max_size; past it 413 payload_too_large, the rest unread): an
# SDP at its own limit, JSON-escaped (each CRLF doubles), with a batch of tracks.
MAX_BODY_BYTES = 2 * MAX_SDP_BYTES

# No request of the API nests deeper than a few levels; a deeper body is refused before any handler
# walks it (or echoes a part of it back into a response that would then be as deep).
MAX_DEPTH = 16


def _depth(value: Any) -> int:
    """How deeply `value` nests arrays and objects, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > MAX_DEPTH:
                    return depth + 1
                stack.append((child, depth + 1))
        deepest = max(deepest, depth)
    return deepest


async def read_body(request: web.Request) -> bytes:
    """The body's bytes, within [api] body_timeout (else 408)."""
    limit = request.app[BOX].config.api.body_timeout
    try:
        async with asyncio.timeout(limit):
            return await request.read()
    except TimeoutError:
        raise ApiError(408, "decoding_error", f"the body did not arrive within {limit:g} s (api.body_timeout)",
                       {"Connection": "close"}) from None


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is {}."""
    raw = await read_body(request)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, "decoding_error", f"the body is not valid JSON: {e}") from None
    except RecursionError:
        raise ApiError(400, "decoding_error", "the body is not valid JSON: nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, "decoding_error", "the body must be a JSON object")
    if _depth(body) > MAX_DEPTH:
        raise ApiError(400, "decoding_error", f"the body nests arrays and objects deeper than {MAX_DEPTH} levels")
    return body
