"""Fixture: the real `appliance` process, started with a given config on free ports, stopped after the test."""
from __future__ import annotations

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
APPLIANCE = [sys.executable, "-m", "appliance"]
START_DEADLINE = 30.0
# What test boxes keep across restarts (TURN revocations): never the real /var/lib/edgecall.
STATE_DIR = os.path.join(tempfile.gettempdir(), "edgecall-test-state")


def free_port(*protocols: str) -> int:
    """A port free for every protocol given ("tcp", "udp") on 127.0.0.1 at the time of asking."""
    protocols = protocols or ("tcp",)
    kinds = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}
    for _ in range(100):
        with socket.socket(socket.AF_INET, kinds[protocols[0]]) as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            others_free = True
            for proto in protocols[1:]:
                with socket.socket(socket.AF_INET, kinds[proto]) as other:
                    try:
                        other.bind(("127.0.0.1", port))
                    except OSError:
                        others_free = False
            if others_free:
                return port
    raise RuntimeError("no free port found")


def has_ipv6_loopback() -> bool:
    """Whether ::1 can be bound here (containers may run without IPv6)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def box_config(api: int, media: int, turn: int, extra: str = "", workers: int = 1) -> str:
    """A loopback box's TOML with the given ports; `extra` is appended as more TOML. `workers`: the
    SFU's and TURN's worker processes (0: one per core, the product's default); tests of one box
    run one process unless they test workers."""
    return f"""
[node]
id = "test-box"
state_dir = "{STATE_DIR}"

[api]
listen = "127.0.0.1:{api}"

[[apps]]
id = "test-app"
secret = "test-app-secret"

[[apps]]
id = "other-app"
secret = "other-app-secret"

[sfu]
udp = "127.0.0.1:{media}"
workers = {workers}

[turn]
workers = {workers}
listen = ["udp://127.0.0.1:{turn}", "tcp://127.0.0.1:{turn}"]
secrets = ["test-rest-secret"]
relay_ports = "61000-61999"  # outside the kernel's ephemeral range, where free_port() picks
allow_peers = ["127.0.0.0/8", "::1/128"]

[[turn.keys]]
id = "test-key"
token = "test-key-token"
{extra}"""


@dataclass
class RunningBox:
    proc: subprocess.Popen
    config_path: Path
    api: str
    stderr_path: Path
    stdout_lines: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.api + path

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        return request("GET", self.url(path), headers=headers)

    def logs(self) -> str:
        return self.stderr_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send `sig` and wait (the timeout only guards against a hang); the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        # Longer than the 5 s a Calls operation may wait for a PeerConnection to connect.
        with urllib.request.urlopen(req, timeout=15) as res:
            return res.status, res.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _pump(stream, lines: list[str], ready: threading.Event) -> None:
    for line in stream:
        lines.append(line.rstrip("\n"))
        if line.startswith("Stop with Ctrl-C"):
            ready.set()
    ready.set()


PR_SET_PDEATHSIG = 1


def dies_with_parent() -> None:
    """A child's preexec_fn: the kernel sends it SIGTERM when the test process dies, however it dies
    (a SIGTERM or SIGKILL to pytest, a CI timeout), so no server outlives a run whose teardown never ran."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_process(
    args: list[str], stderr_path: Path, env: dict[str, str] | None = None, cwd: Path = REPO
) -> tuple[subprocess.Popen, list[str], threading.Event]:
    stderr = open(stderr_path, "w")
    proc = subprocess.Popen(
        args, cwd=cwd, stdout=subprocess.PIPE, stderr=stderr, text=True, env={**os.environ, **(env or {})},
        start_new_session=True, preexec_fn=dies_with_parent,
    )
    stderr.close()
    lines: list[str] = []
    ready = threading.Event()
    threading.Thread(target=_pump, args=(proc.stdout, lines, ready), daemon=True).start()
    return proc, lines, ready


@pytest.fixture
def appliance(tmp_path: Path):
    """Start the real appliance: `appliance(toml_text=None, args=(), env=None) -> RunningBox`.

    With no text, a loopback box on free ports (box_config). The box is stopped after the test.
    """
    boxes: list[RunningBox] = []

    def start(toml_text: str | None = None, args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> RunningBox:
        if toml_text is None:
            toml_text = box_config(free_port("tcp"), free_port("udp"), free_port("udp", "tcp"))
        index = len(boxes)
        config_path = tmp_path / f"appliance-{index}.toml"
        config_path.write_text(toml_text)
        stderr_path = tmp_path / f"appliance-{index}.log"
        proc, lines, ready = start_process([*APPLIANCE, "run", "--config", str(config_path), *args], stderr_path, env)
        api = "http://" + tomllib.loads(toml_text).get("api", {}).get("listen", "127.0.0.1:8080")
        box = RunningBox(proc, config_path, api, stderr_path, lines)
        boxes.append(box)
        if not ready.wait(START_DEADLINE) or proc.poll() is not None:
            box.stop()
            raise RuntimeError(f"appliance did not start (exit {proc.returncode}):\n{box.logs()}")
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            try:
                if box.get("/healthz")[0] == 200:
                    return box
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"appliance never answered /healthz:\n{box.logs()}")

    yield start
    for box in boxes:
        box.stop()


def healthz(box: RunningBox) -> dict:
    status, body = box.get("/healthz")
    return {"status_code": status, **json.loads(body)}
