"""Sealing with the cluster secret: what the store must not show (ICE passwords, the cluster
certificate's key) and what boxes say to each other is encrypted and authenticated with keys derived
from `[cluster] secret` (HKDF-SHA256, one key per purpose), so a reader of the store or of the
backbone learns nothing and can forge nothing without the secret."""
from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE = 12


class Unsealed(Exception):
    """A sealed value did not open: another secret sealed it, or it was changed."""


def derive(secret: str, purpose: str, length: int = 32) -> bytes:
    """A key for one purpose from the cluster secret."""
    return HKDF(hashes.SHA256(), length, salt=b"edgecall cluster", info=purpose.encode()).derive(secret.encode())


class Sealer:
    """AES-256-GCM under a key derived for `purpose`; what a value is (its bucket and key) is bound in
    as associated data, so a sealed value cannot be moved to another key."""

    def __init__(self, secret: str, purpose: str = "store") -> None:
        self._aead = AESGCM(derive(secret, purpose))
        self._tags = derive(secret, purpose + " tags")

    def tag(self, text: str, context: str) -> str:
        """What to index `text` by where the store shows it (an ICE ufrag, a client's address): equal
        texts give equal tags, and nobody without the secret learns or checks a guess of the text."""
        return hmac.new(self._tags, f"{context}\0{text}".encode(), hashlib.sha256).hexdigest()[:32]

    def seal(self, plaintext: bytes, context: str) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, plaintext, context.encode())

    def open(self, sealed: bytes, context: str) -> bytes:
        try:
            return self._aead.decrypt(sealed[:NONCE], sealed[NONCE:], context.encode())
        except (InvalidTag, ValueError):
            raise Unsealed(f"{context}: does not open with this cluster's secret") from None
