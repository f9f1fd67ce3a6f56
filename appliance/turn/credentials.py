"""TURN REST credentials: ephemeral usernames signed with shared secrets, and revocation.

The scheme coturn, eturnal and pion share (draft-uberti-behave-turn-rest): the
username is "<expiry unix time>:<customIdentifier>" (or just "<expiry>"), and the
password is base64(HMAC-SHA1(secret, username)). Several secrets allow rotation: the
first signs, every one verifies.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator, Sequence

from appliance.stun import long_term_key

from .deadlines import Deadlines


def parse_username(username: str) -> tuple[int, str] | None:
    """(expiry, customIdentifier) of a REST username, or None when it is not one."""
    expiry, _, identifier = username.partition(":")
    if not expiry.isascii() or not expiry.isdigit():
        return None
    return int(expiry), identifier


def rest_password(secret: str, username: str) -> str:
    mac = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(mac).decode("ascii")


class RestCredentials:
    """Mints and checks REST credentials against a list of shared secrets."""

    def __init__(self, secrets: Sequence[str], max_ttl: int) -> None:
        self.secrets = tuple(secrets)
        self.max_ttl = max_ttl

    def mint(self, now: float, ttl: int, identifier: str = "") -> tuple[str, str]:
        """(username, credential) valid for `ttl` seconds, capped at `max_ttl`."""
        if not self.secrets:
            raise ValueError("no TURN secret to sign credentials with")
        if ttl <= 0:
            raise ValueError("a credential's time to live must be positive")
        expiry = int(now) + min(ttl, self.max_ttl)
        username = f"{expiry}:{identifier}" if identifier else str(expiry)
        return username, rest_password(self.secrets[0], username)

    def usable(self, username: str, now: float) -> bool:
        """Whether `username` is a REST username that has not expired."""
        parsed = parse_username(username)
        return parsed is not None and parsed[0] > now

    def keys(self, username: str, realm: str) -> Iterator[bytes]:
        """The long-term keys `username` may sign with: one for each secret."""
        for secret in self.secrets:
            yield long_term_key(username, realm, rest_password(secret, username))


class Revocations:
    """Revoked usernames, each kept until its own expiry (after which it is refused anyway)."""

    def __init__(self) -> None:
        self._expiry: dict[str, int] = {}
        self._deadlines: Deadlines[str] = Deadlines()

    def add(self, username: str, now: float) -> bool:
        """Revoke `username`; False when it is no REST username or has already expired."""
        parsed = parse_username(username)
        if parsed is None or parsed[0] <= now:
            return False
        if username not in self._expiry:
            self._expiry[username] = parsed[0]
            self._deadlines.push(parsed[0], username)
        return True

    def __contains__(self, username: str) -> bool:
        return username in self._expiry

    def __len__(self) -> int:
        return len(self._expiry)

    def prune(self, now: float) -> None:
        for username in self._deadlines.due(now):
            del self._expiry[username]

    def next_expiry(self) -> float | None:
        return self._deadlines.next()
