"""The box's control socket when it runs workers: the supervisor serves it and asks every worker on
its own socket (control.socket_path(config, index)). `appliance drain`, `undrain`, `reload` and the
health agent's reports go to all of them; the answer is the first worker's, `ok` only when every
worker's was, with every worker's problems and a "workers" list (pid, ready, restarts) added.
"""
from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

from .. import control
from ..config import Config
from ..logs import get_logger
from ..service import StartError

log = get_logger("workers")

ASK_TIMEOUT = 35.0  # a reload's `net apply` takes a while (reload.ANSWER_TIMEOUT is 30 s)


class ControlProxy:
    def __init__(self, config: Config, count: int, workers: Callable[[], list[dict[str, Any]]]) -> None:
        self.config = config
        self.count = count
        self.workers = workers  # what the supervisor says of each worker
        self._server: asyncio.AbstractServer | None = None
        self._path = ""

    async def start(self) -> None:
        path = control.socket_path(self.config)
        try:
            sock = control.bind_socket(path)
        except control.Untrusted as e:
            raise StartError(f"cannot use the control socket's directory: {e}") from None
        except OSError as e:
            raise StartError(f"cannot open the control socket {path}: {e.strerror or e}") from None
        self._path = path
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=control.MAX_LINE)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await control.serve_one(reader, writer, self.answer)

    async def answer(self, line: bytes) -> dict[str, Any]:
        message = control.parse_command(line)
        if "command" not in message:
            return message
        answers = await asyncio.gather(*(self.ask(index, line) for index in range(self.count)))
        first = next((a for a in answers if not a.get("error")), answers[0])
        combined = dict(first)
        if "node" in combined:  # the box's, not the answering worker's (the workers are listed below)
            combined["node"] = self.config.node.id
        combined["ok"] = all(a.get("ok") for a in answers)
        problems = [p for a in answers for p in a.get("problems", []) if p not in first.get("problems", [])]
        if problems:
            combined["problems"] = list(first.get("problems", [])) + problems
        errors = [f"worker {i}: {a['error']}" for i, a in enumerate(answers) if a.get("error")]
        if errors:
            combined["error"] = "; ".join(errors)
        combined["workers"] = self.workers()
        return combined

    async def ask(self, index: int, line: bytes) -> dict[str, Any]:
        """Worker `index`'s answer to a control request line (an "error" when it gives none)."""
        path = control.socket_path(self.config, index)
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path, limit=control.MAX_LINE), 2.0)
        except (OSError, asyncio.TimeoutError) as e:
            return {"ok": False, "error": f"not answering on {path} ({e})"}
        try:
            writer.write(line if line.endswith(b"\n") else line + b"\n")
            await writer.drain()
            answer = await asyncio.wait_for(reader.readline(), ASK_TIMEOUT)
            return json.loads(answer)
        except (OSError, ValueError, asyncio.TimeoutError) as e:
            return {"ok": False, "error": f"no answer ({e or type(e).__name__})"}
        finally:
            writer.close()
