"""TURN revocations as entries of the cluster store's REVOCATIONS bucket, without I/O.

One entry per revoked username: its key `store.key(username)`, its value the JSON object
`{"username": ..., "expiry": ...}` (the key alone does not always give the username back: it is
base32 for the usernames NATS would not take as they are). What reads an entry trusts nothing of it:
a value that is not such an object, or whose key or expiry is not its username's, is refused.
"""
from __future__ import annotations

import json
from collections.abc import Mapping

from ..turn.credentials import parse_username
from .store import key


class Unreadable(ValueError):
    """An entry of the bucket that is not a revocation."""


def encode(username: str, expiry: int) -> tuple[str, bytes]:
    """The entry (key, value) that revokes `username` until `expiry`."""
    return key(username), json.dumps({"username": username, "expiry": expiry}).encode()


def decode(entry_key: str, value: bytes) -> tuple[str, int]:
    """(username, expiry) of an entry; raises Unreadable, saying why, when it is no revocation."""
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested past the parser's depth
        raise Unreadable("not JSON") from None
    if not isinstance(data, dict):
        raise Unreadable("not a JSON object")
    username, expiry = data.get("username"), data.get("expiry")
    if not isinstance(username, str) or type(expiry) is not int:
        raise Unreadable("expected a text username and a whole-number expiry")
    if key(username) != entry_key:
        raise Unreadable("its key is not its username's")
    parsed = parse_username(username)
    if parsed is None or parsed[0] != expiry:
        raise Unreadable("its expiry is not its username's")
    return username, expiry


def missing(have: Mapping[str, int], of: Mapping[str, int], wall: float) -> dict[str, int]:
    """The revocations of `of` still in force at `wall` that `have` lacks: what a box's file and the
    bucket each need written after a start, for the two to agree."""
    return {username: expiry for username, expiry in of.items() if expiry > wall and username not in have}
