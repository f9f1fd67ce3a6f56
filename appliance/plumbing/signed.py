"""Tokens an app's secret signs (stream tokens for WHIP and WHEP, the meeting page's room tokens): a
MAC over what the token stands for and its expiry, under a key derived per purpose from the secret.
Any box that has the secret checks one, with no store; changing the secret revokes them all."""
from __future__ import annotations

import base64
import hashlib
import hmac

MAC_BYTES = 18
# Eleven digits reach the year 5138; int() of a longer run is slow and past 4,300 digits raises.
MAX_EXPIRY_DIGITS = 11


def mac(secret: bytes, purpose: bytes, *fields: str) -> str:
    key = hmac.new(secret, purpose, hashlib.sha256).digest()
    digest = hmac.new(key, "\n".join(fields).encode(), hashlib.sha256).digest()[:MAC_BYTES]
    return base64.urlsafe_b64encode(digest).decode()


def in_force(expiry: str, wall: float) -> int | None:
    """`expiry` as a Unix time, while it is after `wall`; None for anything else."""
    if not expiry.isascii() or not expiry.isdigit() or len(expiry) > MAX_EXPIRY_DIGITS or int(expiry) <= wall:
        return None
    return int(expiry)


def verified(given: str, secret: bytes, purpose: bytes, *fields: str) -> bool:
    return hmac.compare_digest(given, mac(secret, purpose, *fields))
