"""Reading and writing the update record and GRUB's variables, each write on the disk before the next step."""
from __future__ import annotations

import os
import time

from . import grubenv
from .layout import Layout
from .lifecycle import Record


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def load(layout: Layout) -> Record:
    try:
        with open(layout.record, encoding="utf-8") as f:
            return Record.from_json(f.read())
    except FileNotFoundError:
        return Record()


def save(layout: Layout, record: Record) -> None:
    os.makedirs(layout.state_dir, mode=0o700, exist_ok=True)
    _replace(layout.record, record.to_json().encode())


def set_env(layout: Layout, changes: dict[str, str]) -> None:
    if changes:
        grubenv.update(layout.grubenv, changes)


def set_pending(layout: Layout, pending: bool) -> None:
    if pending:
        _replace(layout.pending, b"")
    elif os.path.exists(layout.pending):
        os.unlink(layout.pending)


def _replace(path: str, data: bytes) -> None:
    tmp = path + ".new"
    with open(tmp, "wb", opener=lambda name, flags: os.open(name, flags, 0o600)) as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
