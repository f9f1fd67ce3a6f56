"""The build host's side of update bundles (appliance/update/bundle.py): signing keys and signed bundles.

Usage:
  bundle.py keygen KEY                 make an Ed25519 private key (PEM, mode 0600)
  bundle.py public-key KEY             print the public key that boxes built with KEY check bundles with
  bundle.py write --key KEY --version VERSION --out FILE KERNEL INITRD ROOT
                                       write a signed bundle of those files
"""
from __future__ import annotations

import argparse
import os
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.update.bundle import INITRD, KERNEL, ROOT, load_private_key, private_pem, public_pem, write_bundle


def keygen(path: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem(Ed25519PrivateKey.generate()))


def write(args: argparse.Namespace) -> None:
    key = load_private_key(args.key)
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    tmp = args.out + ".new"
    with open(tmp, "wb") as out:
        manifest = write_bundle(out, args.version, {KERNEL: args.kernel, INITRD: args.initrd, ROOT: args.root},
                                key, mtime)
    os.replace(tmp, args.out)
    for part in manifest.parts:
        print(f"  {part.name}: {part.size} bytes, sha256 {part.sha256}", file=sys.stderr)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bundle.py")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("keygen").add_argument("key")
    sub.add_parser("public-key").add_argument("key")
    bundle = sub.add_parser("write")
    bundle.add_argument("--key", required=True)
    bundle.add_argument("--version", required=True)
    bundle.add_argument("--out", required=True)
    for name in ("kernel", "initrd", "root"):
        bundle.add_argument(name)
    args = parser.parse_args(argv)
    if args.command == "keygen":
        keygen(args.key)
    elif args.command == "public-key":
        sys.stdout.buffer.write(public_pem(load_private_key(args.key)))
    else:
        write(args)


if __name__ == "__main__":
    main(sys.argv[1:])
