"""One DTLS certificate for the whole cluster: the fingerprint in an answer one box wrote is the
certificate any box presents, so whichever box a client's media reaches can complete its handshake.

The certificate and its key live in the secrets bucket, sealed with the cluster secret. The first
box to start makes it (a create: exactly one box wins); the others read it. Before it expires, a
box makes the next one (compare-and-set: again one box wins) and keeps the old one as `previous`:
sessions described with the old fingerprint keep presenting it (MediaPort keeps every context a
session may use), new sessions take the new one.
"""
from __future__ import annotations

import datetime
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from aiortc.rtcdtlstransport import RTCCertificate
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ..logs import get_logger
from .seal import Sealer
from .store import SECRETS, Conflict, Entry, Store

log = get_logger("cluster")

KEY = "dtls-certificate"
LIFETIME = datetime.timedelta(days=30)  # as aiortc's own
# A new certificate is made this long before the current one expires.
RENEW_BEFORE = datetime.timedelta(days=10)
Wall = Callable[[], datetime.datetime]


@dataclass(frozen=True)
class Certificates:
    current: RTCCertificate
    previous: RTCCertificate | None = None

    def all(self) -> list[RTCCertificate]:
        return [self.current] + ([self.previous] if self.previous is not None else [])


def _pem(certificate: RTCCertificate) -> dict[str, str]:
    key = certificate._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption())
    cert = certificate._cert.public_bytes(serialization.Encoding.PEM)
    return {"key": key.decode(), "cert": cert.decode()}


def _certificate(raw: dict[str, str]) -> RTCCertificate:
    key = serialization.load_pem_private_key(raw["key"].encode(), None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("the cluster certificate's key is not an EC key")
    return RTCCertificate(key, x509.load_pem_x509_certificate(raw["cert"].encode()))


def seal(certificates: Certificates, sealer: Sealer) -> bytes:
    raw = {"current": _pem(certificates.current),
           "previous": _pem(certificates.previous) if certificates.previous is not None else None}
    return sealer.seal(json.dumps(raw).encode(), f"{SECRETS.name}/{KEY}")


def unseal(data: bytes, sealer: Sealer) -> Certificates:
    """Raises seal.Unsealed (another cluster's secret) or ValueError (not a certificate)."""
    raw = json.loads(sealer.open(data, f"{SECRETS.name}/{KEY}"))
    previous = raw.get("previous")
    return Certificates(_certificate(raw["current"]), _certificate(previous) if previous else None)


def generate(now: datetime.datetime) -> RTCCertificate:
    """A self-signed ECDSA P-256 certificate valid from a day before `now` for LIFETIME (what WebRTC
    endpoints present: only its fingerprint is checked)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, secrets.token_hex(16))])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + LIFETIME).sign(key, hashes.SHA256()))
    return RTCCertificate(key, cert)


def due(certificates: Certificates, now: datetime.datetime) -> bool:
    """Whether it is time to make the next certificate."""
    return certificates.current.expires - now < RENEW_BEFORE


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


async def shared(store: Store, sealer: Sealer, wall: Wall = utc_now) -> Certificates:
    """The cluster's certificates, made or renewed here when needed. Raises StoreUnavailable."""
    while True:
        entry = await store.get(SECRETS, KEY)
        try:
            if entry is None or entry.value is None:
                made = Certificates(generate(wall()))
                await store.create(SECRETS, KEY, seal(made, sealer))
                log.info("made the cluster's DTLS certificate", expires=made.current.expires.isoformat())
                return made
            certificates = unseal(entry.value, sealer)
            if not due(certificates, wall()):
                return certificates
            return await _renew(store, sealer, entry, certificates, wall())
        except Conflict:
            continue  # another box made or renewed it first: read theirs


async def _renew(store: Store, sealer: Sealer, entry: Entry, certificates: Certificates,
                 now: datetime.datetime) -> Certificates:
    renewed = Certificates(generate(now), certificates.current)
    await store.update(SECRETS, KEY, seal(renewed, sealer), entry.revision)
    log.info("renewed the cluster's DTLS certificate", expires=renewed.current.expires.isoformat())
    return renewed
