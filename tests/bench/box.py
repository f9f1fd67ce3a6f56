"""A loopback box for a bench to load: the real `appliance run` on free ports."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil

from tests.lab.appliance import REPO, box_config, free_port

# An app with no limits, for loads that open sessions and send requests as fast as they can.
UNLIMITED_APP = """
[[apps]]
id = "open-app"
secret = "open-secret"
max_sessions = 0
sessions_per_second = 0
requests_per_second = 0
"""


def tree_cpu(server: psutil.Process) -> float:
    """CPU seconds of a server and every process under it (a box's workers and their store), all threads."""
    total = 0.0
    for proc in (server, *server.children(recursive=True)):
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


@contextlib.contextmanager
def running_box(extra: str = "", node: str = "test-box", workers: int = 1) -> Iterator[tuple[subprocess.Popen, str]]:
    """(the box's process, its API's base URL) while the block runs; `extra` is appended TOML; `workers`
    SFU and TURN worker processes (appliance/workers/)."""
    with tempfile.TemporaryDirectory(prefix="edgecall-bench-") as tmp:
        config = Path(tmp) / "box.toml"
        api_port = free_port("tcp")
        text = box_config(api_port, free_port("udp"), free_port("udp", "tcp"), extra, workers)
        config.write_text(text.replace('id = "test-box"', f'id = "{node}"', 1).replace(
            "edgecall-test-state", f"edgecall-bench-state-{node}"))
        proc = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--config", str(config), "--log-level",
                                 "warning"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("Stop with Ctrl-C"):
                    break
            yield proc, f"http://127.0.0.1:{api_port}"
        finally:
            proc.terminate()
            proc.wait(10)
