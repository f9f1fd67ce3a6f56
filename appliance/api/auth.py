"""Bearer-token auth for everything under an app (/v1/apps/{appId}/...) or a TURN key (/v1/turn/keys/{keyId}/...).

Checked on the path prefix, before routing, so that every endpoint later added
under these prefixes is covered and one app can never reach another's.
"""
from __future__ import annotations

import hmac
import re

from aiohttp import web

from ..config import Config
from .errors import ApiError

# Cloudflare's own clients call /apps/... without /v1 too (CALLS_API.md 1.1).
APP_PATH = re.compile(r"^(?:/v1)?/apps/(?P<id>[^/]+)(?:/|$)")
TURN_KEY_PATH = re.compile(r"^/v1/turn/keys/(?P<id>[^/]+)(?:/|$)")

# Set on the request once its bearer token is checked: the app or TURN key it acts for.
APP = web.RequestKey("app", str)
TURN_KEY = web.RequestKey("turn_key", str)


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def auth_middleware(config: Config):
    apps = {app.id: app.secret for app in config.apps}
    keys = {key.id: key.token for key in config.turn.keys}
    realms = ((APP_PATH, apps, APP, "app"), (TURN_KEY_PATH, keys, TURN_KEY, "TURN key"))

    @web.middleware
    async def middleware(request: web.Request, handler) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return await handler(request)
        for pattern, secrets, slot, what in realms:
            match = pattern.match(request.path)
            if not match:
                continue
            ident = match["id"]
            if ident not in secrets:
                raise ApiError(404, "not_found", f"no {what} {ident!r}")
            token = _bearer(request)
            if token is None:
                raise ApiError(401, "unauthorized", "an Authorization: Bearer <secret> header is required")
            if not hmac.compare_digest(token.encode(), secrets[ident].encode()):
                raise ApiError(401, "unauthorized", f"the bearer token is not the secret of {what} {ident!r}")
            request[slot] = ident
        return await handler(request)

    return middleware
