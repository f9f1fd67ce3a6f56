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

from tests.bench.box import tree_cpu
from tests.lab.appliance import REPO, box_config, free_port

SECRET = "bench-rest-secret"
CLIENTS, MESSAGES, LENGTH, INTERVAL_MS = 20, 2500, 120, 1
MODES = {"udp channel": [], "udp send": ["-s"], "tcp channel": ["-t"]}
WORKERS = 2  # the box is measured with one worker and with this many
LOADERS, THROUGHPUT_MESSAGES = 4, 2000  # the throughput load: clients processes at once, messages per session


def _wait_port(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        if any(c.laddr.port == port for c in psutil.net_connections("tcp") if c.status == psutil.CONN_LISTEN):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def _uclient(port: int, peer_port: int, flags: list[str], messages: int = MESSAGES,
             interval_ms: int = INTERVAL_MS) -> subprocess.Popen:
    return subprocess.Popen(
        ["turnutils_uclient", "-e", "127.0.0.1", "-r", str(peer_port), "-W", SECRET, "-u", "bench", "-c",
         "-m", str(CLIENTS), "-n", str(messages), "-l", str(LENGTH), "-z", str(interval_ms), "-p", str(port),
         *flags, "127.0.0.1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _totals(client: subprocess.Popen) -> tuple[int, int]:
    """(sent, received) that a finished turnutils_uclient printed."""
    output, _ = client.communicate(timeout=300)
    totals = re.findall(r"tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\n", output)
    if not totals:
        raise RuntimeError(f"turnutils_uclient printed no totals:\n{output[-2000:]}")
    sent, received = map(int, totals[-1])
    return sent, received


def _load(server: psutil.Process, port: int, peer_port: int, flags: list[str]) -> tuple[float, int, int]:
    """Run one bounded load; (server CPU seconds, relayed packets, lost packets)."""
    before = tree_cpu(server)
    sent, received = _totals(_uclient(port, peer_port, flags))
    cpu = tree_cpu(server) - before
    return cpu, sent + received, sent - received


def _relayers(server: psutil.Process) -> list[psutil.Process]:
    """The processes that relay: the box's workers (children running the appliance), else the server."""
    workers = [p for p in server.children() if "appliance" in " ".join(p.cmdline())]
    return workers or [server]


def _throughput(server: psutil.Process, port: int, peer_port: int) -> tuple[float, float, float]:
    """As fast as the clients go (UDP channels, LOADERS clients at once, each bounded by its
    message count): (relayed packets per second, share lost, relayed packets per CPU second of the
    busiest relaying process: what the box would relay with each worker on a core of its own)."""
    relayers = _relayers(server)
    before = [sum(p.cpu_times()[:2]) for p in relayers]
    start = time.perf_counter()
    clients = [_uclient(port, peer_port, [], THROUGHPUT_MESSAGES, 0) for _ in range(LOADERS)]
    totals = []
    for client in clients:
        try:
            totals.append(_totals(client))
        except RuntimeError as e:
            # Unpaced, turnutils_uclient sometimes loses an Allocate answer, allocates again (437 from
            # coturn as from the box) and gives up at its channel bind: its session counts for nothing.
            print(f"a throughput client gave up: {str(e).splitlines()[-1]}")
    wall = time.perf_counter() - start
    busiest = max(sum(p.cpu_times()[:2]) - b for p, b in zip(relayers, before))
    sent, received = sum(t[0] for t in totals), sum(t[1] for t in totals)
    return (sent + received) / wall, (sent - received) / max(sent, 1), (sent + received) / busiest


def _coturn(port: int, workdir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        ["turnserver", "-n", "--listening-ip", "127.0.0.1", "--listening-port", str(port), "--relay-ip", "127.0.0.1",
         "--min-port", "62000", "--max-port", "62999", "--use-auth-secret", "--static-auth-secret", SECRET,
         "--realm", "edgecall", "--allow-loopback-peers", "--no-tls", "--no-dtls", "--no-cli",
         "--log-file", str(workdir / "coturn.log"), "--simple-log", "--pidfile", str(workdir / "coturn.pid")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )


def _box(port: int, workdir: Path, workers: int = 1) -> subprocess.Popen:
    config = workdir / f"box-{workers}.toml"
    # coturn runs with no per-allocation limits and no user quota; so does the box here.
    unlimited = "rate_limit_pps = 0\nrate_limit_bps = 0\nnew_peers_per_second = 0\nuser_quota = 1000"
    text = box_config(free_port("tcp"), free_port("udp"), port, workers=workers).replace(
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
        throughput = {}
        starts = {"coturn": _coturn, "edgecall": _box, f"edgecall×{WORKERS}": lambda p, w: _box(p, w, WORKERS)}
        try:
            for name, start in starts.items():
                port = free_port("udp", "tcp")
                proc = start(port, workdir)
                try:
                    _wait_port(port, proc)
                    time.sleep(1.0 if name.startswith("edgecall") else 0.0)  # every worker ready
                    server = psutil.Process(proc.pid)
                    servers[name] = {mode: _load(server, port, peer_port, flags) for mode, flags in MODES.items()}
                    throughput[name] = _throughput(server, port, peer_port)
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
    print(f"throughput: {LOADERS} turnutils_uclient at once, -m {CLIENTS} -n {THROUGHPUT_MESSAGES} -z 0 "
          f"(UDP channels; the clients and the echo peer share the machine's {psutil.cpu_count()} cores)")
    for name, (rate, lost, ceiling) in throughput.items():
        print(f"{name:<12} {rate:>8.0f} relayed packets/s, lost {lost:.2%}; {ceiling:>8.0f} per CPU second of "
              "its busiest relaying process")
    one, many = throughput["edgecall"], throughput[f"edgecall×{WORKERS}"]
    print(f"TURN {WORKERS} workers/1 worker {many[2] / one[2]:.2f}x packets per busiest worker's CPU second "
          f"(each worker on a core of its own); {many[0] / one[0]:.2f}x packets/s measured here, where the "
          "load generators share the cores")
