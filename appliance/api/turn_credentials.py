"""The Calls-compatible TURN credentials API (CALLS_API.md section 3), under /v1/turn/keys/{keyId}/.

Credentials are TURN REST credentials (password base64(HMAC-SHA1(secret, username))), each
signed with a secret derived from the key that asked, its username "<expiry>.<tag>:<customIdentifier>"
(turn/credentials.py): the box knows which key issued a credential and holds each key to its quota.
Keys are one operator's: any key of the box may revoke any credential the box minted.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable
from urllib.parse import quote

from aiohttp import web

from ..turn.credentials import MAX_IDENTIFIER, RevocationsFull, valid_identifier
from .auth import TURN_KEY, TURN_KEYS, guarded
from .body import read_json
from .errors import ApiError
from .health import BOX

DEFAULT_TTL = 86400


@runtime_checkable
class CredentialIssuer(Protocol):
    """What this API asks of the TURN service (turn/service.py's TurnService)."""

    def mint(self, ttl: int, identifier: str, issuer: str) -> tuple[str, str]: ...

    async def revoke(self, username: str) -> bool: ...


def _turn(request: web.Request) -> CredentialIssuer:
    service = request.app[BOX].service("turn")
    if not isinstance(service, CredentialIssuer):
        raise ApiError(503, "temporarily_unavailable_error", "the TURN service is not enabled on this box")
    return service


def _ttl(body: dict) -> int:
    ttl = body.get("ttl", DEFAULT_TTL)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
        raise ApiError(400, "invalid_params", f"ttl: expected a positive number of seconds, found {ttl!r}")
    return ttl


def _identifier(body: dict) -> str:
    identifier = body.get("customIdentifier", "")
    if not isinstance(identifier, str) or not valid_identifier(identifier):
        raise ApiError(
            400, "invalid_params", f"customIdentifier: expected printable text of at most {MAX_IDENTIFIER} characters"
        )
    return identifier


def _host(request: web.Request, endpoint) -> str:
    config = request.app[BOX].config.turn
    if config.public_host:
        return config.public_host
    if endpoint.host.is_unspecified:
        # Bound to every address: the one the client reached the API on is the best guess.
        return request.url.host or str(endpoint.host)
    return f"[{endpoint.host}]" if endpoint.host.version == 6 else str(endpoint.host)


def ice_urls(request: web.Request) -> tuple[list[str], list[str]]:
    """(stun: URLs, turn:/turns: URLs) for the box's listeners."""
    stun, turn = [], []
    for listener in request.app[BOX].config.turn.listen:
        where = f"{_host(request, listener.endpoint)}:{listener.endpoint.port}"
        if listener.transport == "udp":
            stun.append(f"stun:{where}")
            turn.append(f"turn:{where}?transport=udp")
        elif listener.transport == "tcp":
            turn.append(f"turn:{where}?transport=tcp")
        else:
            turn.append(f"turns:{where}?transport=tcp")
    return stun, turn


def app_ice_servers(request: web.Request, app: str, identifier: str) -> list[dict]:
    """RTCIceServer objects for a client of `app` (a WHIP or WHEP client, a meeting page): the box's
    STUN servers, and its TURN servers with credentials minted now under the app's turn_key (counted
    against that key's quota) or the shared secrets; STUN alone with no secret to sign with, nothing
    when TURN is off."""
    config = request.app[BOX].config
    turn = request.app[BOX].service("turn")
    if not config.turn.enabled or not isinstance(turn, CredentialIssuer):
        return []
    stun, relays = ice_urls(request)
    servers: list[dict] = [{"urls": stun}] if stun else []
    turn_key = next(a.turn_key for a in config.apps if a.id == app)
    try:
        username, credential = turn.mint(DEFAULT_TTL, identifier, turn_key or "rest")
    except ValueError:
        return servers
    return servers + [{"urls": relays, "username": username, "credential": credential}]


async def _credentials(request: web.Request) -> tuple[list[str], list[str], str, str]:
    body = await read_json(request)
    turn = _turn(request)
    username, credential = turn.mint(_ttl(body), _identifier(body), request[TURN_KEY])
    stun, urls = ice_urls(request)
    return stun, urls, username, credential


async def generate_ice_servers(request: web.Request) -> web.Response:
    stun, urls, username, credential = await _credentials(request)
    servers: list[dict[str, str | list[str]]] = [{"urls": stun}] if stun else []
    servers.append({"urls": urls, "username": username, "credential": credential})
    return web.json_response({"iceServers": servers}, status=201)


async def generate(request: web.Request) -> web.Response:
    """The legacy form: `iceServers` is one object, not an array."""
    _, urls, username, credential = await _credentials(request)
    return web.json_response({"iceServers": {"urls": urls, "username": username, "credential": credential}}, status=201)


async def revoke(request: web.Request) -> web.Response:
    username = request.match_info["username"]
    try:
        revoked = await _turn(request).revoke(username)
    except RevocationsFull as e:
        raise ApiError(503, "temporarily_unavailable_error", str(e)) from None
    if not revoked:
        raise ApiError(404, "not_found", f"{quote(username)!r} is not a credential this box could have minted, or it has expired")
    return web.Response(status=204)


def add_routes(router: web.UrlDispatcher) -> None:
    base = "/v1/turn/keys/{keyId}/credentials"
    router.add_post(f"{base}/generate-ice-servers", guarded(TURN_KEYS, generate_ice_servers))
    router.add_post(f"{base}/generate", guarded(TURN_KEYS, generate))
    router.add_post(f"{base}/{{username}}/revoke", guarded(TURN_KEYS, revoke))
