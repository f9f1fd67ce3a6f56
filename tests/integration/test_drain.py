"""Draining in the real `appliance run` process: SIGTERM, a second signal, `appliance drain`."""
from __future__ import annotations

import signal
import subprocess
import time

from tests.lab.appliance import APPLIANCE, REPO, healthz


def cli(box, command: str) -> subprocess.CompletedProcess:
    return subprocess.run([*APPLIANCE, command, "--config", str(box.config_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=30)


def test_sigterm_reports_draining_and_keeps_serving_for_the_drain_time(appliance):
    box = appliance(args=("--drain-time", "2"))
    box.proc.send_signal(signal.SIGTERM)
    # Still serving, saying so, until the drain time is over; then it stops cleanly.
    deadline = time.monotonic() + 10
    while (state := healthz(box))["status"] != "draining":
        assert time.monotonic() < deadline, state
    assert state["status_code"] == 503 and state["draining"] is True
    assert box.proc.poll() is None
    assert box.proc.wait(15) == 0
    assert "draining before stop" in box.logs()


def test_a_second_signal_during_the_drain_stops_at_once(appliance):
    box = appliance(args=("--drain-time", "60"))
    box.proc.send_signal(signal.SIGTERM)
    while healthz(box)["status"] != "draining":
        time.sleep(0.05)
    box.proc.send_signal(signal.SIGTERM)
    box.proc.wait(10)  # a hang bound, far below the 60 s drain


def test_drain_and_undrain_commands_toggle_a_running_box(appliance):
    box = appliance()
    assert cli(box, "drain").stdout == "draining\n"
    assert healthz(box)["status_code"] == 503
    status = cli(box, "status")
    assert status.returncode == 0 and "draining for" in status.stdout
    assert cli(box, "undrain").stdout == "serving\n"
    assert healthz(box)["status"] == "ok"
    box.stop()
    result = cli(box, "drain")
    assert result.returncode == 1 and "no box answers on its control socket" in result.stderr
