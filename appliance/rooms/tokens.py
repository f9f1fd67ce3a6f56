"""Room tokens: what the box gives a meeting page instead of the app's secret. A token lets its page
use the Calls API of the meeting app ([meet] app) for sessions of its own room only, and join that
room's roster, until it expires ([meet] token_ttl).

`ecr1~<room>~<participant>~<expiry>~<mac>`: "~" is in no id, and URL-safe, so the token also rides in
a WebSocket URL (browsers cannot set headers on one). The MAC is keyed from the app's secret, so any
box of the cluster checks it, and changing the secret revokes every token.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..plumbing import signed

PREFIX = "ecr1"
PURPOSE = b"edgecall room tokens"


@dataclass(frozen=True)
class RoomToken:
    room: str
    participant: str
    expiry: int


def mint(secret: bytes, app: str, room: str, participant: str, expiry: int) -> str:
    return "~".join((PREFIX, room, participant, str(expiry), signed.mac(secret, PURPOSE, app, room, participant,
                                                                      str(expiry))))


def check(secret: bytes, app: str, token: bytes | str, wall: float) -> RoomToken | None:
    """The room and participant `token` stands for, while it is in force; None for anything else."""
    try:
        text = token.decode("ascii") if isinstance(token, bytes) else token
        prefix, room, participant, expiry, mac = text.split("~")
    except (UnicodeDecodeError, ValueError):
        return None
    when = signed.in_force(expiry, wall)
    if prefix != PREFIX or when is None or not signed.verified(mac, secret, PURPOSE, app, room, participant, expiry):
        return None
    return RoomToken(room, participant, when)
