"""The box's local control socket: `appliance drain`, `undrain` and `status`, and the health agent's reports.

An abstract unix socket (Linux) named after `api.listen`, rather than a file or an HTTP endpoint:
nothing on disk to go stale or to need a writable directory, one per box because two boxes
cannot share an API endpoint in a network namespace, reachable only from inside the box's own
network namespace, and (SO_PEERCRED) only by root or the service's own user. The API may listen
on public addresses; this never does.

One JSON object per line each way: {"command": "drain"} -> {"ok": true, ...}.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
import time
from typing import Any

from .config import Config
from .logs import get_logger
from .service import StartError

log = get_logger("control")

COMMANDS = ("status", "drain", "undrain", "report")
MAX_LINE = 1 << 20


def control_address(config: Config) -> str:
    return f"\0edgecall/control/{config.api.listen}"


def request(config: Config, command: str, timeout: float = 2.0, **fields: Any) -> dict[str, Any]:
    """Send one command to the running box; raises OSError when none answers."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(control_address(config))
        sock.sendall(json.dumps({"command": command, **fields}).encode() + b"\n")
        with sock.makefile("rb") as reader:
            line = reader.readline(MAX_LINE)
    if not line.endswith(b"\n"):
        raise ConnectionError("the box closed the control connection without answering")
    return json.loads(line)


def status(box) -> dict[str, Any]:
    """The box's state as the control socket and /healthz report it."""
    now = time.monotonic()
    report = box.health()
    return {
        "node": box.config.node.id,
        "draining": box.drain.active,
        "draining_for": None if box.drain.since is None else round(now - box.drain.since, 3),
        "services": {name: reason or "ok" for name, reason in report.items()},
        "agent": box.agent.view(now),
    }


class ControlService:
    name = "control"

    def __init__(self, box):
        self.box = box
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        address = control_address(self.box.config)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=address, limit=MAX_LINE)
        except OSError as e:
            raise StartError(f"cannot open the control socket @{address[1:]} (named after api.listen): "
                             f"{e.strerror or e}") from None

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def health(self) -> str | None:
        return None if self._server else "not listening"

    def urls(self) -> list[str]:
        return [f"control    @{control_address(self.box.config)[1:]}  (appliance drain | undrain | status)"]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if not _trusted(writer.get_extra_info("socket")):
                answer = {"ok": False, "error": "only root or the service's own user may use the control socket"}
            else:
                answer = self._answer(await reader.readline())
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            message = json.loads(line)
            command = message["command"]
        except (ValueError, KeyError, TypeError):
            return {"ok": False, "error": 'expected one JSON object like {"command": "status"}'}
        if command not in COMMANDS:
            return {"ok": False, "error": f"unknown command {command!r}; known: {', '.join(COMMANDS)}"}
        box = self.box
        if command == "drain":
            box.drain.start(time.monotonic(), "appliance drain")
        elif command == "undrain":
            box.drain.stop()
        elif command == "report":
            box.agent.update(message.get("report") or {}, time.monotonic())
        return {"ok": True, **status(box)}


def _trusted(sock: socket.socket) -> bool:
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid in (0, os.getuid())
