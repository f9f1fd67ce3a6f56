"""The README's main command, exactly as a newcomer types it: `./build.sh run`."""
import json
import signal
import socket
import time

import pytest

from tests.lab.appliance import REPO, request, start_process


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # As the box binds: connections of an earlier run lingering in TIME-WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_build_sh_run_serves_the_demo_box(tmp_path):
    if not all(_port_free(p) for p in (8080, 3478)):
        pytest.skip("the demo box's ports (8080, 3478) are taken on this machine")
    proc, lines, ready = start_process(["./build.sh", "run"], tmp_path / "run.log", cwd=REPO)
    try:
        assert ready.wait(120), "no banner"
        assert any("http://127.0.0.1:8080/" in line for line in lines), lines
        secret_line = next(line for line in lines if "secret" in line)
        assert "id demo" in secret_line
        deadline = time.monotonic() + 30
        while True:
            try:
                status, body = request("GET", "http://127.0.0.1:8080/healthz")
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        assert status == 200 and json.loads(body)["status"] == "ok"
        secret = secret_line.split("secret", 1)[1].strip()
        status, _ = request("POST", "http://127.0.0.1:8080/v1/apps/demo/x", headers={"Authorization": f"Bearer {secret}"})
        assert status == 404  # authorized with the printed secret; no such endpoint
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
