"""GRUB's environment block (`grubenv`): what GRUB's `load_env`/`save_env` and `grub-editenv` read and write.

1024 bytes: the header line, `name=value` lines (a backslash escapes a backslash or a newline in a
value), then `#` up to the end. GRUB writes it in place, sector by sector, so this does too: the
file keeps its size and its place on the disk.
"""
from __future__ import annotations

import os
import re

SIZE = 1024
HEADER = b"# GRUB Environment Block\n"
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class GrubEnvError(ValueError):
    pass


def parse(block: bytes) -> dict[str, str]:
    if len(block) != SIZE or not block.startswith(HEADER):
        raise GrubEnvError(f"not a GRUB environment block ({len(block)} bytes)")
    variables: dict[str, str] = {}
    text = block[len(HEADER):].decode("utf-8", "replace")
    for line in _lines(text):
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if sep and NAME.fullmatch(name):
            variables[name] = value
    return variables


def _lines(text: str) -> list[str]:
    """Lines with GRUB's escapes undone: a backslash keeps the next character, newline included."""
    lines, current, chars = [], [], iter(text)
    for char in chars:
        if char == "\\":
            current.append(next(chars, ""))
        elif char == "\n":
            lines.append("".join(current))
            current = []
        else:
            current.append(char)
    return lines  # what follows the last newline is the padding


def render(variables: dict[str, str]) -> bytes:
    for name in variables:
        if not NAME.fullmatch(name):
            raise GrubEnvError(f"{name!r} is not a GRUB variable name")
    block = HEADER + b"".join(f"{name}={_escape(value)}\n".encode() for name, value in variables.items())
    if len(block) > SIZE:
        raise GrubEnvError(f"the variables take {len(block)} bytes, GRUB's block holds {SIZE}")
    return block + b"#" * (SIZE - len(block))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\\n")


def read(path: str) -> dict[str, str]:
    with open(path, "rb") as f:
        return parse(f.read(SIZE + 1))


def update(path: str, changes: dict[str, str]) -> dict[str, str]:
    """Set `changes` in the block at `path`, rewriting its 1024 bytes in place; the new variables."""
    fd = os.open(path, os.O_RDWR)
    try:
        with os.fdopen(fd, "r+b", closefd=False) as f:
            variables = parse(f.read(SIZE + 1)) | changes
            f.seek(0)
            f.write(render(variables))
            f.flush()
        os.fsync(fd)
    finally:
        os.close(fd)
    return variables
