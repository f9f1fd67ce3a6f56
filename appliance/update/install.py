"""`appliance update FILE|URL`: verify a bundle whole, write it to the slot that is not running, and
arm one boot into it. The running slot, the config partition and the state partition's data are
never written; a bundle that does not verify is refused before anything is."""
from __future__ import annotations

import contextlib
import os
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from . import grubenv, lifecycle, store
from .bundle import INITRD, KERNEL, ROOT, BundleError, Verified, load_public_key, verify
from .layout import Layout, other

DOWNLOAD_TIMEOUT = 60.0  # seconds without a byte before a download is given up
ESP_MARGIN = 1 << 20


class UpdateError(Exception):
    """The update was not made; the message says why and what, if anything, was written."""


@dataclass(frozen=True)
class Installed:
    slot: str
    version: str
    running: str
    running_version: str


def install(source: str, layout: Layout, say: Callable[[str], None]) -> Installed:
    running = layout.booted_slot()
    target = other(running)
    env = grubenv.read(layout.grubenv)
    if lifecycle.good_slot(env) != running:
        raise UpdateError(f"slot {running} runs on trial and is not marked good yet; slot {target} is the one "
                          "to go back to, so it is not overwritten: wait until `appliance update --status` "
                          "says the running slot is marked good")
    try:
        key = load_public_key(layout.public_key)
    except (OSError, ValueError) as e:
        raise UpdateError(f"no update key to check bundles with: {e}") from None
    running_version = layout.running_version()
    with _local_file(source, layout, say) as path:
        try:
            verified = verify(path, key, f"this box's update key ({layout.public_key})")
        except BundleError as e:
            raise UpdateError(f"{e}; nothing was written") from None
        _check_room(verified, layout, target)
        version = verified.manifest.version
        say(f"{path}: {version}, signed with this box's update key; writing it to slot {target}")
        record = store.load(layout)
        store.set_env(layout, lifecycle.writing(record, env, target))
        store.save(layout, record)
        try:
            _write_partition(verified, layout.partition(target))
            _write_file(verified, KERNEL, layout.kernel(target))
            _write_file(verified, INITRD, layout.initrd(target))
        except (BundleError, OSError) as e:
            raise UpdateError(f"writing slot {target} failed, it is left empty (the running slot is untouched): "
                              f"{e}") from None
        store.set_env(layout, lifecycle.armed(record, target, version, running, running_version, store.now()))
        store.save(layout, record)
        store.set_pending(layout, True)
    return Installed(target, version, running, running_version)


@contextlib.contextmanager
def _local_file(source: str, layout: Layout, say: Callable[[str], None]) -> Iterator[str]:
    """The bundle as a file here: `source` itself, or what its URL gave, kept on the state partition
    until the update is done (verifying needs the whole bundle before anything is written)."""
    if not source.startswith(("http://", "https://")):
        if not os.path.isfile(source):
            raise UpdateError(f"{source}: no such file (give a bundle file or an http(s) URL)")
        yield source
        return
    os.makedirs(layout.state_dir, mode=0o700, exist_ok=True)
    path = os.path.join(layout.state_dir, "download.update")
    try:
        say(f"downloading {source}")
        _download(source, path, limit=_partition_size(layout.partition("a")) + (256 << 20))
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _download(url: str, path: str, limit: int) -> None:
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response, open(path, "wb") as out:
            length = response.headers.get("Content-Length")
            if length is not None and int(length) > limit:
                raise UpdateError(f"{url} is {int(length)} bytes, larger than any bundle for this box")
            room = shutil.disk_usage(os.path.dirname(path)).free
            if length is not None and int(length) > room:
                raise UpdateError(f"{url} is {int(length)} bytes, the state partition has {room} free")
            done = 0
            while chunk := response.read(1 << 20):
                done += len(chunk)
                if done > limit:
                    raise UpdateError(f"{url} sent more than {limit} bytes, more than any bundle for this box")
                out.write(chunk)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise UpdateError(f"downloading {url} failed: {e}; nothing was written") from None


def _partition_size(path: str) -> int:
    with open(path, "rb") as f:
        return f.seek(0, os.SEEK_END)


def _check_room(verified: Verified, layout: Layout, slot: str) -> None:
    manifest = verified.manifest
    root, space = manifest.part(ROOT).size, _partition_size(layout.partition(slot))
    if root > space:
        raise UpdateError(f"the root file system of {manifest.version} has {root} bytes, slot {slot} holds "
                          f"{space}; nothing was written")
    boot = manifest.part(KERNEL).size + manifest.part(INITRD).size
    replaced = sum(os.path.getsize(p) for p in (layout.kernel(slot), layout.initrd(slot)) if os.path.exists(p))
    room = shutil.disk_usage(layout.esp).free + replaced
    if boot + ESP_MARGIN > room:
        raise UpdateError(f"the kernel and initrd of {manifest.version} need {boot} bytes, the EFI system "
                          f"partition has {room} for them; nothing was written")


def _write_partition(verified: Verified, device: str) -> None:
    fd = os.open(device, os.O_WRONLY)
    try:
        for chunk in verified.open_part(ROOT):
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(verified: Verified, part: str, path: str) -> None:
    """Written beside, then renamed over the slot's file: a crash leaves the old file or the new one."""
    tmp = path + ".new"
    with open(tmp, "wb") as f:
        for chunk in verified.open_part(part):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    directory = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
