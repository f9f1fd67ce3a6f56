"""TURN relay cost: server CPU seconds per million relayed packets, the box against coturn.

Both servers get the same `turnutils_uclient` load on loopback in the same run (each message is
relayed twice: client to peer and back), with `turnutils_peer` as the echo peer. The load is
bounded by its message count.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from tests.lab.appliance import REPO, box_config, free_port

SECRET = "bench-rest-secret"
CLIENTS, MESSAGES, LENGTH, INTERVAL_MS = 20, 2500, 120, 1
MODES = {"udp channel": [], "udp send": ["-s"], "tcp channel": ["-t"]}


def _wait_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        if any(c.laddr.port == port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def _load(server: psutil.Process, port: int, peer_port: int, flags: list[str]) -> tuple[float, int, int]:
    """Run one bounded load; (server CPU seconds, relayed packets, lost packets)."""
    before = server.cpu_times()
    result = subprocess.run(
        ["turnutils_uclient", "-e", "127.0.0.1", "-r", str(peer_port), "-W", SECRET, "-u", "bench", "-c",
         "-m", str(CLIENTS), "-n", str(MESSAGES), "-l", str(LENGTH), "-z", str(INTERVAL_MS), "-p", str(port),
         *flags, "127.0.0.1"],
        capture_output=True, text=True, timeout=300,
    )
    after = server.cpu_times()
    totals = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\n", result.stdout + result.stderr)
    if not totals:
        raise RuntimeError(f"turnutils_uclient printed no totals:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    sent, received = map(int, totals[-1])
    cpu = (after.user - before.user) + (after.system - before.system)
    return cpu, sent + received, sent - received


def _coturn(port: int, workdir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        ["turnserver", "-n", "--listening-ip", "127.0.0.1", "--listening-port", str(port), "--relay-ip", "127.0.0.1",
         "--min-port", "62000", "--max-port", "62999", "--use-auth-secret", "--static-auth-secret", SECRET,
         "--realm", "edgecall", "--allow-loopback-peers", "--no-tls", "--no-dtls", "--no-cli",
         "--log-file", str(workdir / "coturn.log"), "--simple-log", "--pidfile", str(workdir / "coturn.pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _box(port: int, workdir: Path) -> subprocess.Popen:
    config = workdir / "box.toml"
    # coturn runs with no per-allocation limits and no user quota; so does the box here.
    unlimited = "rate_limit_pps = 0\nrate_limit_bps = 0\nnew_peers_per_second = 0\nuser_quota = 1000"
    text = box_config(free_port("tcp"), free_port("udp"), port).replace(
        'secrets = ["test-rest-secret"]', f'secrets = ["{SECRET}"]\n{unlimited}'
    )
    config.write_text(text.replace("[sfu]", "[sfu]\nenabled = false"))
    return subprocess.Popen(
        [sys.executable, "-m", "appliance", "run", "--config", str(config), "--log-level", "warning"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(workdir / "box.log", "w"),
    )


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="edgecall-bench-") as tmp:
        workdir = Path(tmp)
        peer_port = free_port("udp")
        peer = subprocess.Popen(["turnutils_peer", "-L", "127.0.0.1", "-p", str(peer_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        servers = {}
        try:
            for name, start in (("coturn", _coturn), ("edgecall", _box)):
                port = free_port("udp", "tcp")
                proc = start(port, workdir)
                try:
                    _wait_port(port, proc)
                    server = psutil.Process(proc.pid)
                    servers[name] = {mode: _load(server, port, peer_port, flags) for mode, flags in MODES.items()}
                finally:
                    proc.terminate()
                    proc.wait(10)
        finally:
            peer.terminate()
            peer.wait(10)
    print(f"load: turnutils_uclient -m {CLIENTS} -n {MESSAGES} -l {LENGTH} -z {INTERVAL_MS} per mode, loopback")
    print(f"{'mode':<12} {'server':<9} {'relayed':>9} {'lost':>6} {'CPU s':>7} {'CPU s/Mpkt':>11} {'vs coturn':>9}")
    for mode in MODES:
        anchor = None
        for name, results in servers.items():
            cpu, relayed, lost = results[mode]
            per_million = cpu / relayed * 1e6 if relayed else float("nan")
            anchor = per_million if anchor is None else anchor
            print(f"{mode:<12} {name:<9} {relayed:>9} {lost:>6} {cpu:>7.2f} {per_million:>11.2f} {per_million / anchor:>8.2f}x")
