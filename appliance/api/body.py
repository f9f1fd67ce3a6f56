"""Request bodies: JSON whatever the Content-Type (Cloudflare's examples send text/plain or none)."""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .errors import ApiError


async def read_json(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object; an empty body is {}."""
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, "decoding_error", f"the body is not valid JSON: {e}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "decoding_error", "the body must be a JSON object")
    return body
