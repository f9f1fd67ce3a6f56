"""Long-term credential authentication of TURN requests (RFC 8489 9.2.4) with REST usernames."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from appliance.stun import Attr, Message

from .credentials import RestCredentials, Revocations, parse_username
from .nonce import Nonces


@dataclass(frozen=True, slots=True)
class Auth:
    """Who signed a request, and the key and algorithm to sign the answer with."""

    username: str
    key: bytes
    sha256: bool
    # Whose secret verified it: a TURN key's id, or "rest" (credentials.REST).
    issuer: str
    # The username's customIdentifier, which usage is counted by.
    identifier: str


class Authenticator:
    """`now` is the core's monotonic time (nonces); a username's expiry is checked on `wall`, the
    injected wall clock (Unix seconds), read only for a request that gets that far."""

    def __init__(self, realm: str, credentials: RestCredentials, revocations: Revocations, nonces: Nonces,
                 wall: Callable[[], float]) -> None:
        self.realm = realm
        self.credentials = credentials
        self.revocations = revocations
        self.nonces = nonces
        self.wall = wall

    def check(self, request: Message, client_host: str, now: float, known: Auth | None = None) -> Auth | Message:
        """The request's `Auth`, or the error response to send (401, 438 or 400).

        `known` is the allocation's own credential: a request signed with it skips
        trying every secret.
        """
        if not request.has_integrity:
            return self.challenge(request, 401, client_host, now)
        username = request.get(Attr.USERNAME)
        realm = request.get(Attr.REALM)
        nonce = request.get(Attr.NONCE)
        if username is None or realm is None or nonce is None:
            return request.error(400, reason="Missing USERNAME, REALM or NONCE")
        if realm != self.realm:
            return self.challenge(request, 401, client_host, now)
        if not self.nonces.fresh(nonce, client_host, now):
            return self.challenge(request, 438, client_host, now)
        parsed = parse_username(username)
        if parsed is None or username in self.revocations or not self.credentials.usable(username, self.wall()):
            return self.challenge(request, 401, client_host, now)
        sha256 = request.uses_sha256
        if known is not None and known.username == username and request.check_integrity(known.key):
            return Auth(username, known.key, sha256, known.issuer, known.identifier)
        for issuer, key in self.credentials.keys(username, realm):
            if request.check_integrity(key):
                return Auth(username, key, sha256, issuer, parsed[1])
        return self.challenge(request, 401, client_host, now)

    def challenge(self, request: Message, code: int, client_host: str, now: float) -> Message:
        """An unsigned error carrying REALM and a fresh NONCE to retry with."""
        return request.error(code, (Attr.REALM, self.realm), (Attr.NONCE, self.nonces.issue(client_host, now)))
