"""Update bundles: the root file system and boot files of one image version, signed.

A bundle is a plain (ustar) tar file, so that `tar tvf` shows what is in it:

    manifest.json   {"format": "edgecall-update/1", "version": "...",
                     "parts": [{"name": "vmlinuz", "size": N, "sha256": "<hex>"}, ...]}
    manifest.sig    Ed25519 signature (64 bytes) over manifest.json exactly as stored
    vmlinuz, initrd.img, root.squashfs   the parts, in the manifest's order

Only the manifest is signed; it names every part's size and SHA-256, so a part is as trusted as the
manifest once its hash matches. `verify` checks the signature before it reads any part, and every
part before it returns: nothing reaches a disk from a bundle that did not pass.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = "edgecall-update/1"
MANIFEST, SIGNATURE = "manifest.json", "manifest.sig"
KERNEL, INITRD, ROOT = "vmlinuz", "initrd.img", "root.squashfs"
PARTS = (KERNEL, INITRD, ROOT)
MAX_MANIFEST = 64 * 1024
SIGNATURE_SIZE = 64
VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+~_-]{0,63}")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
CHUNK = 1 << 20


class BundleError(Exception):
    """The bundle is not one this box may install; the message says why."""


@dataclass(frozen=True)
class Part:
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    version: str
    parts: tuple[Part, ...]

    def part(self, name: str) -> Part:
        return next(p for p in self.parts if p.name == name)

    def to_bytes(self) -> bytes:
        parts = [{"name": p.name, "size": p.size, "sha256": p.sha256} for p in self.parts]
        return json.dumps({"format": FORMAT, "version": self.version, "parts": parts}, indent=1).encode() + b"\n"


def parse_manifest(data: bytes) -> Manifest:
    """The manifest in `data`; BundleError for anything else, whatever `data` holds."""
    if len(data) > MAX_MANIFEST:
        raise BundleError(f"the manifest is larger than {MAX_MANIFEST} bytes")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise BundleError(f"the manifest is not JSON: {e}") from None
    if not isinstance(document, dict):
        raise BundleError("the manifest is not a JSON object")
    if document.get("format") != FORMAT:
        raise BundleError(f"the manifest's format is {document.get('format')!r}, this box reads {FORMAT!r}")
    version = document.get("version")
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        raise BundleError(f"the manifest's version {version!r} is not a version string")
    entries = document.get("parts")
    if not isinstance(entries, list):
        raise BundleError("the manifest has no list of parts")
    parts = tuple(_part(entry) for entry in entries)
    names = [p.name for p in parts]
    if sorted(names) != sorted(PARTS):
        raise BundleError(f"the manifest names the parts {names}, expected each of {list(PARTS)} once")
    return Manifest(version, parts)


def _part(entry: object) -> Part:
    if not isinstance(entry, dict):
        raise BundleError("a part of the manifest is not a JSON object")
    name, size, digest = entry.get("name"), entry.get("size"), entry.get("sha256")
    if name not in PARTS:
        raise BundleError(f"the manifest names an unknown part {name!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise BundleError(f"the manifest's size of {name} is not a byte count: {size!r}")
    if not isinstance(digest, str) or not SHA256_HEX.fullmatch(digest):
        raise BundleError(f"the manifest's sha256 of {name} is not 64 lowercase hex digits")
    return Part(name, size, digest)


def load_public_key(path: str) -> Ed25519PublicKey:
    with open(path, "rb") as f:
        key = serialization.load_pem_public_key(f.read())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} holds no Ed25519 public key")
    return key


def load_private_key(path: str) -> Ed25519PrivateKey:
    with open(path, "rb") as f:
        key = serialization.load_pem_private_key(f.read(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} holds no Ed25519 private key")
    return key


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class Verified:
    """A bundle whose signature and parts passed: where each part lies in the file."""

    path: str
    manifest: Manifest
    offsets: dict[str, int]

    def open_part(self, name: str) -> Iterator[bytes]:
        """The part's bytes in chunks, hashed again as they are read: the file may have changed since."""
        part = self.manifest.part(name)
        digest = hashlib.sha256()
        with open(self.path, "rb") as f:
            f.seek(self.offsets[name])
            left = part.size
            while left:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    raise BundleError(f"{self.path} is shorter than when it was verified")
                digest.update(chunk)
                left -= len(chunk)
                yield chunk
        if digest.hexdigest() != part.sha256:
            raise BundleError(f"{self.path} changed since it was verified: {name} no longer matches its sha256")


def verify(path: str, key: Ed25519PublicKey, key_name: str = "the update key") -> Verified:
    """Check the bundle at `path` whole: its signature by `key`, then every part against the manifest."""
    try:
        archive = tarfile.open(path, "r:")
    except (tarfile.TarError, EOFError, ValueError) as e:
        raise BundleError(f"{path} is not an update bundle (a tar file): {e}") from None
    with archive:
        try:
            members = _members(archive)
            manifest_bytes = _small(archive, members, MANIFEST, MAX_MANIFEST)
            signature = _small(archive, members, SIGNATURE, SIGNATURE_SIZE)
            try:
                key.verify(signature, manifest_bytes)
            except InvalidSignature:
                raise BundleError(f"{path} is not signed with {key_name}: refusing it") from None
            manifest = parse_manifest(manifest_bytes)
            offsets = {}
            for part in manifest.parts:
                member = members.get(part.name)
                if member is None:
                    raise BundleError(f"{path} lacks the part {part.name} that its manifest names")
                if member.size != part.size:
                    raise BundleError(f"{part.name} in {path} has {member.size} bytes, its manifest says {part.size}")
                if _sha256(archive, member) != part.sha256:
                    raise BundleError(f"{part.name} in {path} does not match the sha256 its manifest names: "
                                      "the bundle was changed after it was signed")
                offsets[part.name] = member.offset_data
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:
            raise BundleError(f"{path} cannot be read whole: {e}") from None
    return Verified(path, manifest, offsets)


def _members(archive: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    members: dict[str, tarfile.TarInfo] = {}
    for member in archive.getmembers():
        if member.name not in (MANIFEST, SIGNATURE, *PARTS):
            raise BundleError(f"the bundle holds {member.name!r}, which no bundle has")
        if not member.isfile():
            raise BundleError(f"{member.name} in the bundle is not a regular file")
        if member.name in members:
            raise BundleError(f"the bundle holds {member.name} twice")
        members[member.name] = member
    return members


def _small(archive: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str, limit: int) -> bytes:
    member = members.get(name)
    if member is None:
        what = "it is not signed" if name == SIGNATURE else "it has no manifest"
        raise BundleError(f"the bundle has no {name}: {what}; refusing it")
    if member.size > limit:
        raise BundleError(f"{name} in the bundle is larger than {limit} bytes")
    reader = archive.extractfile(member)
    assert reader is not None  # a regular file, checked in _members
    return reader.read()


def _sha256(archive: tarfile.TarFile, member: tarfile.TarInfo) -> str:
    reader = archive.extractfile(member)
    assert reader is not None
    digest = hashlib.sha256()
    while chunk := reader.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def write_bundle(out: IO[bytes], version: str, parts: dict[str, str], key: Ed25519PrivateKey,
                 mtime: int = 0) -> Manifest:
    """Write a signed bundle of the files `parts` ({part name: path}) to `out`."""
    if sorted(parts) != sorted(PARTS):
        raise ValueError(f"a bundle has the parts {list(PARTS)}, not {sorted(parts)}")
    entries = []
    for name in PARTS:
        digest, size = hashlib.sha256(), 0
        with open(parts[name], "rb") as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
        entries.append(Part(name, size, digest.hexdigest()))
    manifest = Manifest(version, tuple(entries))
    parse_manifest(manifest.to_bytes())  # what this writes, a box reads
    manifest_bytes = manifest.to_bytes()
    with tarfile.open(fileobj=out, mode="w:", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in ((MANIFEST, manifest_bytes), (SIGNATURE, key.sign(manifest_bytes))):
            archive.addfile(_info(name, len(data), mtime), io.BytesIO(data))
        for part in manifest.parts:
            with open(parts[part.name], "rb") as f:
                archive.addfile(_info(part.name, part.size, mtime), f)
    return manifest


def _info(name: str, size: int, mtime: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    info.uname = info.gname = "root"
    return info
