"""Room tokens: what the box gives a meeting page instead of the app's secret. A token lets its page
use the Calls API of the meeting app ([meet] app) for sessions of its own room only, and join that
room's roster, until it expires ([meet] token_ttl).

`ecr1~<room>~<participant>~<expiry>~<mac>`: "~" is in no id, and URL-safe, so the token also rides in
a WebSocket URL (browsers cannot set headers on one). The MAC is keyed from the app's secret, so any
box of the cluster checks it, and changing the secret revokes every token.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

PREFIX = "ecr1"
MAC_BYTES = 18
MAX_EXPIRY_DIGITS = 11


@dataclass(frozen=True)
class RoomToken:
    room: str
    participant: str
    expiry: int


def _mac(secret: bytes, app: str, room: str, participant: str, expiry: int) -> str:
    key = hmac.new(secret, b"edgecall room tokens", hashlib.sha256).digest()
    mac = hmac.new(key, f"{app}\n{room}\n{participant}\n{expiry}".encode(), hashlib.sha256).digest()[:MAC_BYTES]
    return base64.urlsafe_b64encode(mac).decode()


def mint(secret: bytes, app: str, room: str, participant: str, expiry: int) -> str:
    return "~".join((PREFIX, room, participant, str(expiry), _mac(secret, app, room, participant, expiry)))


def check(secret: bytes, app: str, token: bytes | str, wall: float) -> RoomToken | None:
    """The room and participant `token` stands for, while it is in force; None for anything else."""
    try:
        text = token.decode("ascii") if isinstance(token, bytes) else token
        prefix, room, participant, expiry, mac = text.split("~")
    except (UnicodeDecodeError, ValueError):
        return None
    if prefix != PREFIX or not expiry.isdigit() or len(expiry) > MAX_EXPIRY_DIGITS or int(expiry) <= wall:
        return None
    if not hmac.compare_digest(mac, _mac(secret, app, room, participant, int(expiry))):
        return None
    return RoomToken(room, participant, int(expiry))
