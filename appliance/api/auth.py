"""Bearer-token auth, decided per route on exactly what the router matched.

Every handler under an app (/v1/apps/{appId}/...) or a TURN key (/v1/turn/keys/{keyId}/...) is
registered through `guarded`, which reads the id from the route's own match (never from a second
parse of the path: a percent-encoded "/" decodes differently in each) and checks that the token is
that app's or key's secret before the handler runs. A route with such an id and no guard is a
mistake that tests/unit/test_api_auth.py finds by walking the router.
"""
from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from ..config import Config
from .errors import ApiError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Realm:
    """A kind of principal a route acts for: its name in errors, its path parameter, where the
    checked id is kept on the request."""

    what: str
    param: str
    slot: web.RequestKey[str]


# Set on the request once its bearer token is checked: the app or TURN key it acts for.
APP = web.RequestKey("app", str)
TURN_KEY = web.RequestKey("turn_key", str)

APPS = Realm("app", "appId", APP)
TURN_KEYS = Realm("TURN key", "keyId", TURN_KEY)

class Secrets:
    """Each realm's {id: secret}, from the running configuration; a reload hands it the new one."""

    def __init__(self, config: Config) -> None:
        self._known: dict[Realm, dict[str, bytes]] = {}
        self.configure(config)

    def configure(self, config: Config) -> None:
        self._known = {
            APPS: {app.id: app.secret.encode() for app in config.apps},
            TURN_KEYS: {key.id: key.token.encode() for key in config.turn.keys},
        }

    def __getitem__(self, realm: Realm) -> dict[str, bytes]:
        return self._known[realm]


# Kept on the application.
SECRETS = web.AppKey("secrets", Secrets)


def bearer(request: web.Request) -> bytes | None:
    """The bearer token as bytes; None when there is none or it cannot be one (not UTF-8 text)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    try:
        return token.encode()
    except UnicodeError:
        return None


# A narrower way in than the secret, for some routes: (request, the id, its bearer token or None)
# -> whether the request may act (a per-stream token on WHIP and WHEP routes, or none at all for an
# app's public playback).
Access = Callable[[web.Request, str, "bytes | None"], bool]


def check(request: web.Request, realm: Realm, also: Access | None = None) -> str:
    """The id the route names for `realm`, once the request's token is shown to be its secret (or
    `also` lets the request in)."""
    ident = request.match_info[realm.param]
    known = request.app[SECRETS][realm]
    if ident not in known:
        raise ApiError(404, "not_found", f"no {realm.what} {ident!r}")
    token = bearer(request)
    if token is not None and hmac.compare_digest(token, known[ident]):
        return ident
    if also is not None and also(request, ident, token):
        return ident
    if token is None:
        raise ApiError(401, "unauthorized", "an Authorization: Bearer <secret> header is required")
    raise ApiError(401, "unauthorized", f"the bearer token is not the secret of {realm.what} {ident!r}"
                                        + (" nor a token for this stream" if also is not None else ""))


def guarded(realm: Realm, handler: Handler, also: Access | None = None) -> Handler:
    """`handler`, run only for a request whose token is the secret of the `realm` id its route names,
    or that `also` lets in."""

    @functools.wraps(handler)
    async def checked(request: web.Request) -> web.StreamResponse:
        request[realm.slot] = check(request, realm, also)
        return await handler(request)

    checked.realm = realm  # type: ignore[attr-defined]
    return checked
