"""Stateless NONCEs for long-term credential authentication (RFC 8489 9.2).

A nonce is its issue time and a MAC over that time and the client's IP address, so
the server keeps no per-client state, a nonce is only good from the address it was
given to, and it goes stale after `lifetime` seconds (then 438 with a fresh one).

The time is the core's monotonic `now`: the process that issues a nonce is the only one that can
check it (the key is its own), so no other clock need agree, and a step of the wall clock (NTP setting
a box's clock after boot) neither stales every nonce at once nor stretches one's lifetime. Stamps
count from a secret origin, so that a nonce does not tell anyone how long the box has been up.
"""
from __future__ import annotations

import hashlib
import hmac
import os


class Nonces:
    def __init__(self, lifetime: float, key: bytes | None = None) -> None:
        self.lifetime = lifetime
        self._key = os.urandom(32) if key is None else key
        self._origin = int.from_bytes(hmac.new(self._key, b"origin", hashlib.sha256).digest()[:4], "big")

    def _mac(self, stamp: str, client_host: str) -> str:
        text = f"{stamp}/{client_host}".encode()
        return hmac.new(self._key, text, hashlib.sha256).hexdigest()[:24]

    def issue(self, client_host: str, now: float) -> str:
        stamp = f"{int(now) + self._origin:x}"
        return stamp + self._mac(stamp, client_host)

    def fresh(self, nonce: str, client_host: str, now: float) -> bool:
        """Whether `nonce` was issued by this server to `client_host` and is not stale."""
        stamp, mac = nonce[:-24], nonce[-24:]
        if not nonce.isascii() or not stamp or len(stamp) > 16 or not hmac.compare_digest(mac, self._mac(stamp, client_host)):
            return False
        issued = int(stamp, 16) - self._origin
        return issued <= now < issued + self.lifetime
