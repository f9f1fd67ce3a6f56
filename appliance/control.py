"""The box's local control socket: `appliance drain`, `undrain`, `status` and `reload`, and the health agent's reports.

A unix socket file rather than an HTTP endpoint: the API may listen on public addresses, this never
does. It lives in a directory only its owner can write to (on the image /run/edgecall, the service's
RuntimeDirectory=), so no other local user can take its name first, as one could an abstract
socket's; each side checks the other (SO_PEERCRED): the box answers only root and its own user, and
a client talks only to a box run by root or by the directory's owner. The name holds api.listen and
the network namespace: two boxes cannot share an API endpoint in one namespace, and the lab runs one
box per namespace on one file system.

One JSON object per line each way: {"command": "drain"} -> {"ok": true, ...}. The answer to a
report also carries what the agent follows of the box's running config (announce/follow.py); the
answer to "reload" is what the reload did (reload.py).
"""
from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import stat
import struct
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .announce import follow
from .config import Config
from .logs import get_logger
from .service import StartError

if TYPE_CHECKING:
    from .runner import Box

log = get_logger("control")

COMMANDS = ("status", "drain", "undrain", "report", "reload")
MAX_LINE = 1 << 20


# appliance.service's RuntimeDirectory=: made by systemd for the service's user, gone when it stops.
SYSTEM_DIR = "/run/edgecall"


class Untrusted(ConnectionError):
    """The control socket's directory or its server is not one this user may trust."""


def runtime_dir() -> str:
    """The directory of the control socket: the image's for root and for its owner (the service's
    user), else this user's own runtime directory (`./build.sh run`)."""
    uid = os.geteuid()
    system = _lstat(SYSTEM_DIR)
    if uid == 0 or (system is not None and system.st_uid == uid):
        directory = SYSTEM_DIR
    else:
        base = os.environ.get("XDG_RUNTIME_DIR")
        directory = os.path.join(base, "edgecall") if base else f"/tmp/edgecall-{uid}"
    # The directories above without symlinks, so that trusted_owner checks what is used (it refuses
    # a symlink for the directory itself).
    return os.path.join(os.path.realpath(os.path.dirname(directory)), os.path.basename(directory))


def socket_path(config: Config, worker: int | None = None) -> str:
    """The box's control socket; with `worker`, that worker's own (the supervisor serves the box's
    and asks its workers on theirs: appliance/workers/control.py)."""
    netns = os.stat("/proc/self/ns/net").st_ino
    suffix = "" if worker is None else f"-w{worker}"
    return os.path.join(runtime_dir(), f"control-{netns}-{config.api.listen}{suffix}.sock")


def trusted_owner(directory: str) -> int:
    """The owner of `directory` when nobody but it and root can put a socket in it; raises Untrusted.

    It must be a real directory writable by its owner alone, owned by root or this user, or handed
    to another user by root (its parent is root's alone, like /run/edgecall); and none of the
    directories above it may let anyone else rename it away (a sticky /tmp is fine)."""
    uid = os.geteuid()
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode) or st.st_mode & 0o022:
        raise Untrusted(f"{directory} is not a directory that only its owner can write to "
                        f"({stat.filemode(st.st_mode)}); remove it and start the box again")
    parent = os.lstat(os.path.dirname(directory))
    if st.st_uid not in (0, uid) and not (parent.st_uid == 0 and not parent.st_mode & 0o022):
        raise Untrusted(f"{directory} is owned by uid {st.st_uid}, not by root or by this user (uid {uid}): "
                        "someone else made it; remove it and start the box again")
    for above in _ancestors(directory):
        st_above = os.lstat(above)
        if st_above.st_uid not in (0, uid) or (st_above.st_mode & 0o022 and not st_above.st_mode & stat.S_ISVTX):
            raise Untrusted(f"{above}, above {directory}, may be changed by uid {st_above.st_uid} or by others")
    return st.st_uid


def _ancestors(path: str):
    while path != os.path.dirname(path):
        path = os.path.dirname(path)
        yield path


def request(config: Config, command: str, timeout: float = 2.0, **fields: Any) -> dict[str, Any]:
    """Send one command to the running box; raises OSError when none answers, Untrusted when
    what answers is not the box."""
    path = socket_path(config)
    owner = trusted_owner(os.path.dirname(path))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        server = _peer_uid(sock)
        if server not in (0, owner):
            raise Untrusted(f"{path} is served by uid {server}, neither root nor the directory's owner (uid {owner})")
        sock.sendall(json.dumps({"command": command, **fields}).encode() + b"\n")
        with sock.makefile("rb") as reader:
            line = reader.readline(MAX_LINE)
    if not line.endswith(b"\n"):
        raise ConnectionError("the box closed the control connection without answering")
    return json.loads(line)


def status(box: Box) -> dict[str, Any]:
    """The box's state as the control socket and /healthz report it."""
    now = time.monotonic()
    report = box.health()
    return {
        "node": box.config.node.id,
        "draining": box.drain.active,
        "draining_for": None if box.drain.since is None else round(now - box.drain.since, 3),
        "services": {name: reason or "ok" for name, reason in report.items()},
        "agent": box.agent.view(now),
        "cluster": _cluster(box),
    }


def _cluster(box: Box) -> dict[str, Any] | None:
    cluster = box.service("cluster")
    describe = getattr(cluster, "describe", None)
    return describe() if describe is not None else None


class ControlService:
    name = "control"

    def __init__(self, box: Box) -> None:
        self.box = box
        self._server: asyncio.AbstractServer | None = None
        self._path, self._inode = "", 0

    async def start(self) -> None:
        worker = self.box.source.worker
        path = socket_path(self.box.config, None if worker is None else worker.index)
        try:
            sock = bind_socket(path)
        except Untrusted as e:
            raise StartError(f"cannot use the control socket's directory: {e}") from None
        except OSError as e:
            raise StartError(f"cannot open the control socket {path}: {e.strerror or e}") from None
        self._path, self._inode = path, os.lstat(path).st_ino
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=MAX_LINE)

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            # Only our own socket: a box started since may have replaced it.
            now = _lstat(self._path)
            if now is not None and now.st_ino == self._inode:
                os.unlink(self._path)

    def health(self) -> str | None:
        return None if self._server else "not listening"

    def urls(self) -> list[str]:
        return [f"control    {self._path}  (appliance drain | undrain | status | reload)"]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_one(reader, writer, self._answer)

    async def _answer(self, line: bytes) -> dict[str, Any]:
        message = parse_command(line)
        command = message.get("command")
        if command is None:
            return message
        box = self.box
        if command == "reload":
            return (await box.reloader.reload()).to_dict()
        if command == "drain":
            box.drain.start(time.monotonic(), "appliance drain")
        elif command == "undrain":
            box.drain.stop()
        elif command == "report":
            box.agent.update(message.get("report") or {}, time.monotonic())
            return {"ok": True, **status(box), "follow": follow.offer(box.config)}
        return {"ok": True, **status(box)}


async def serve_one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    answer: Callable[[bytes], Awaitable[dict[str, Any]]]) -> None:
    """One request of a control connection: a trusted peer's line, `answer`ed."""
    try:
        if not trusted_peer(writer.get_extra_info("socket")):
            reply = {"ok": False, "error": "only root or the service's own user may use the control socket"}
        else:
            reply = await answer(await reader.readline())
        writer.write(json.dumps(reply).encode() + b"\n")
        await writer.drain()
    except (ConnectionError, ValueError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


def parse_command(line: bytes) -> dict[str, Any]:
    """The request, with its known "command"; or, without one, the answer that says what is wrong."""
    try:
        message = json.loads(line)
        command = message["command"]
    except (ValueError, KeyError, TypeError):
        return {"ok": False, "error": 'expected one JSON object like {"command": "status"}'}
    if command not in COMMANDS:
        return {"ok": False, "error": f"unknown command {command!r}; known: {', '.join(COMMANDS)}"}
    return message


def bind_socket(path: str) -> socket.socket:
    """A listening socket at `path`, in a directory made (0700) or checked first; a socket file left
    by a box that died is replaced, one that still answers is another box's."""
    directory = os.path.dirname(path)
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    trusted_owner(directory)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.bind(path)
        except OSError as e:
            if e.errno != errno.EADDRINUSE:
                raise
            if _answers(path):
                raise OSError(errno.EADDRINUSE, "another box with this api.listen answers on it") from None
            os.unlink(path)
            sock.bind(path)
            log.info("replaced the control socket of a box that died", path=path)
        sock.listen()
    except BaseException:
        sock.close()
        raise
    return sock


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            return False
    return True


def _lstat(path: str) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except OSError:
        return None


def _peer_uid(sock: socket.socket) -> int:
    return struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]


def trusted_peer(sock: socket.socket) -> bool:
    return _peer_uid(sock) in (0, os.geteuid())
