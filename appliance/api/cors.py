"""CORS for the API: browser apps call it directly with a bearer token (CALLS_API.md 1.1)."""
from __future__ import annotations

from aiohttp import web

ALLOW_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"
ALLOW_HEADERS = "authorization, content-type, if-match"
# What a cross-origin WHIP or WHEP client must read of an answer (RFC 9725 4.2).
EXPOSE_HEADERS = "Location, ETag, Link, Accept-Patch, Accept-Post, Retry-After"
MAX_AGE = "86400"


def cors_middleware(origins: tuple[str, ...]):
    any_origin = "*" in origins

    def allowed(origin: str | None) -> str | None:
        if not origin:
            return None
        return "*" if any_origin else (origin if origin in origins else None)

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allow = allowed(origin)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            response: web.StreamResponse = web.Response(status=204 if allow else 403)
            if allow:
                response.headers["Access-Control-Allow-Methods"] = ALLOW_METHODS
                response.headers["Access-Control-Allow-Headers"] = request.headers.get(
                    "Access-Control-Request-Headers", ALLOW_HEADERS
                )
                response.headers["Access-Control-Max-Age"] = MAX_AGE
        else:
            response = await handler(request)
        if allow:
            response.headers["Access-Control-Allow-Origin"] = allow
            response.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
        response.headers["Vary"] = "Origin"
        return response

    return middleware
