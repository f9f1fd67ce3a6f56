"""TURN REST credentials: ephemeral usernames signed with shared secrets, and revocation.

The scheme coturn, eturnal and pion share (draft-uberti-behave-turn-rest): the
username is "<expiry unix time>:<customIdentifier>" (or just "<expiry>"), and the
password is base64(HMAC-SHA1(secret, username)). Several secrets allow rotation: the
first signs, every one verifies.

Credentials the API mints for a TURN key (`[[turn.keys]]`) are signed instead with a secret
derived from a shared secret and the key, and their username carries a short tag of that
secret: "<expiry>.<tag>:<customIdentifier>". The secret that verifies names the credential's
*issuer* (a key's id, or "rest" for the shared secrets themselves), which quotas count by, and
the tag picks that one secret, so that checking a request costs one try (one per shared secret
for "rest") whatever the number of keys.

A username is in force only until its expiry and no further than `max_ttl` ahead: a box never
mints one for longer, so a 30-year username signed with a leaked secret is refused all the same.

Expiries are Unix times, which every box and app agree on: minting and checking them takes a reading
of the wall clock (`wall`, Unix seconds), never the monotonic `now` the rest of the core runs on.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterator, Mapping, Sequence

from appliance.stun import long_term_key

from ..plumbing.deadlines import Deadlines

# What the minting API accepts as a customIdentifier.
MAX_IDENTIFIER = 256
# Eleven digits reach the year 5138; int() of a longer run is slow and past 4,300 digits raises.
MAX_EXPIRY_DIGITS = 11
# Boxes of a cluster mint by their own clocks: an expiry this much past now + max_ttl is still theirs.
CLOCK_SKEW = 60


def valid_identifier(identifier: str) -> bool:
    return len(identifier) <= MAX_IDENTIFIER and identifier.isprintable()


# The issuer of credentials signed with a shared secret itself (config refuses it as a key id).
REST = "rest"
_TAG = re.compile(r"[0-9a-f]{8}")


def split_username(username: str) -> tuple[int, str | None, str] | None:
    """(expiry, issuer tag or None, customIdentifier) of a REST username, or None when it is not one."""
    head, _, identifier = username.partition(":")
    expiry, dot, tag = head.partition(".")
    if not expiry.isascii() or not expiry.isdigit() or len(expiry) > MAX_EXPIRY_DIGITS:
        return None
    if dot and not _TAG.fullmatch(tag):
        return None
    return int(expiry), tag if dot else None, identifier


def parse_username(username: str) -> tuple[int, str] | None:
    """(expiry, customIdentifier) of a REST username, or None when it is not one."""
    parsed = split_username(username)
    return None if parsed is None else (parsed[0], parsed[2])


def key_secret(secret: str, key_id: str, token: str) -> str:
    """The secret a TURN key's credentials are signed with: only the box (which holds both the
    shared secret and the key's token) can derive it, so no key can pass for another."""
    mac = hmac.new(secret.encode("utf-8"), f"turn key\0{key_id}\0{token}".encode("utf-8"), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def issuer_tag(secret: str) -> str:
    """Eight hex digits that name a derived secret without giving it away."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()[:8]


def rest_password(secret: str, username: str) -> str:
    mac = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(mac).decode("ascii")


class RestCredentials:
    """Mints and checks REST credentials against a list of shared secrets and the TURN keys
    (key id -> token) whose credentials are signed with secrets derived from them."""

    def __init__(self, secrets: Sequence[str], max_ttl: int, keys: Mapping[str, str] | None = None) -> None:
        self.configure(secrets, max_ttl, keys or {})

    def configure(self, secrets: Sequence[str], max_ttl: int, keys: Mapping[str, str]) -> None:
        """Mint and check with these from now on (a reload): one object, so that the authenticator and
        the revocations that hold it see the change together."""
        self.secrets = tuple(secrets)
        self.max_ttl = max_ttl
        self.issuers = (REST, *keys)
        # Issuer -> (tag, secret) that signs: the first shared secret's. Tag -> (issuer, secret)
        # pairs that verify, every shared secret's (None: untagged usernames, the shared secrets).
        self._signers: dict[str, tuple[str | None, str]] = {}
        self._verifiers: dict[str | None, list[tuple[str, str]]] = {None: [(REST, s) for s in self.secrets]}
        if self.secrets:
            self._signers[REST] = (None, self.secrets[0])
        for key_id, token in keys.items():
            for secret in self.secrets:
                derived = key_secret(secret, key_id, token)
                tag = issuer_tag(derived)
                self._signers.setdefault(key_id, (tag, derived))
                self._verifiers.setdefault(tag, []).append((key_id, derived))

    def mint(self, wall: float, ttl: int, identifier: str = "", issuer: str = REST) -> tuple[str, str]:
        """(username, credential) of `issuer` valid for `ttl` seconds from `wall`, capped at `max_ttl`."""
        if not self.secrets:
            raise ValueError("no TURN secret to sign credentials with")
        if ttl <= 0:
            raise ValueError("a credential's time to live must be positive")
        if issuer not in self._signers:
            raise ValueError(f"no TURN key {issuer!r} to sign credentials for")
        tag, secret = self._signers[issuer]
        expiry = int(wall) + min(ttl, self.max_ttl)
        head = str(expiry) if tag is None else f"{expiry}.{tag}"
        username = f"{head}:{identifier}" if identifier else head
        return username, rest_password(secret, username)

    def usable(self, username: str, wall: float) -> bool:
        """Whether `username` is a REST username in force at `wall`: not expired, not beyond `max_ttl`."""
        parsed = parse_username(username)
        return parsed is not None and wall < parsed[0] <= wall + self.max_ttl + CLOCK_SKEW

    def revocable(self, username: str, wall: float) -> bool:
        """Whether `username` is one the minting API could have returned, in force at `wall`."""
        parsed = split_username(username)
        return (parsed is not None and parsed[1] in self._verifiers and self.usable(username, wall)
                and valid_identifier(parsed[2]))

    def keys(self, username: str, realm: str) -> Iterator[tuple[str, bytes]]:
        """(issuer, long-term key) pairs `username` may sign with: one for each shared secret,
        of the issuer its tag names."""
        parsed = split_username(username)
        for issuer, secret in self._verifiers.get(None if parsed is None else parsed[1], ()):
            yield issuer, long_term_key(username, realm, rest_password(secret, username))


class RevocationsFull(Exception):
    """A box holds at most `capacity` revocations; each frees when its credential expires."""

    def __init__(self, capacity: int) -> None:
        super().__init__(
            f"{capacity} revocations are held, the most this box keeps; they free as the credentials expire"
        )


class Revocations:
    """Revoked usernames, each kept until its own expiry (after which it is refused anyway).

    Only usernames the box could have minted are kept, so an entry's identifier is at most
    `MAX_IDENTIFIER` characters and it lives at most `max_ttl`; past `capacity` entries `add` raises `RevocationsFull`
    (dropping one would let a revoked credential work again).

    An entry's timer runs on the monotonic clock, armed for when the wall clock should reach the expiry;
    the entry goes only once the wall clock has, so a clock set back keeps it as long as the credential works.
    """

    def __init__(self, credentials: RestCredentials, capacity: int) -> None:
        self.credentials = credentials
        self.capacity = capacity
        self._expiry: dict[str, int] = {}
        self._deadlines: Deadlines[str] = Deadlines()

    def add(self, username: str, now: float, wall: float) -> bool:
        """Revoke `username`; False when it is no credential this box could have minted, or has expired."""
        parsed = parse_username(username)
        if parsed is None or not self.credentials.revocable(username, wall):
            return False
        if username in self._expiry:
            return True
        if len(self._expiry) >= self.capacity:
            raise RevocationsFull(self.capacity)
        expiry = parsed[0]
        self._expiry[username] = expiry
        self._deadlines.push(now + (expiry - wall), username)
        return True

    def __contains__(self, username: str) -> bool:
        return username in self._expiry

    def __len__(self) -> int:
        return len(self._expiry)

    def prune(self, now: float, wall: float) -> None:
        for username in self._deadlines.due(now):
            expiry = self._expiry[username]
            if expiry <= wall:
                del self._expiry[username]
            else:  # the wall clock was set back: still in force
                self._deadlines.push(now + (expiry - wall), username)

    def next_expiry(self) -> float | None:
        return self._deadlines.next()
