"""SFU forwarding cost: the box's CPU seconds per million forwarded packets, one publisher (audio +
video) fanned out to N subscribers, against an anchor measured in the same run: the same datagrams
fanned out by a bare Python UDP loop (recvfrom + N sendto, no SRTP, no rewriting), the floor of
any Python forwarder on this machine.

The load client (tests/bench/sfu_load.py) does real ICE, DTLS and SRTP and encodes nothing. Each
run is bounded by its packet count; subscribers drain their sockets while it runs.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from tests.bench.sfu_load import AUDIO_PT, VIDEO_PT, LoadPeer
from tests.lab.appliance import REPO, box_config, free_port

FANOUT = (1, 10, 50)
FORWARDED = 100_000  # forwarded packets per run: inbound = FORWARDED / N
FORWARD_RATE = 60_000  # forwarded packets per second asked of either forwarder: inbound rate = this / N


def _rate(n: int) -> float:
    return min(8000.0, FORWARD_RATE / n)
VIDEO_SHARE = 3  # of every 4 packets, 3 video (1100 bytes) and 1 audio (160 bytes)

ANCHOR = r"""
import socket, sys
n = int(sys.argv[1])
rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
rx.bind(("127.0.0.1", 0))
tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
targets = [("127.0.0.1", int(p)) for p in sys.argv[2:2 + n]]
print(rx.getsockname()[1], flush=True)
while True:
    data = rx.recv(2048)
    if data == b"stop":
        break
    for target in targets:
        tx.sendto(data, target)
"""


def _pace(count: int, rate: float, send) -> None:
    start = time.perf_counter()
    for i in range(count):
        send(i)
        if i % 50 == 49:
            lag = start + (i + 1) / rate - time.perf_counter()
            if lag > 0:
                time.sleep(lag)


def _box_run(n: int, workdir: Path) -> tuple[float, int]:
    config = workdir / f"box-{n}.toml"
    api_port = free_port("tcp")
    config.write_text(box_config(api_port, free_port("udp"), free_port("udp", "tcp")))
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--config", str(config), "--log-level",
                             "warning"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peers: list[LoadPeer] = []
    try:
        for line in proc.stdout:
            if line.startswith("Stop with Ctrl-C"):
                break
        api = f"http://127.0.0.1:{api_port}/v1/apps/test-app"
        publisher = LoadPeer(api, "test-app-secret")
        peers.append(publisher)
        ssrcs = publisher.publish()
        for _ in range(n):
            subscriber = LoadPeer(api, "test-app-secret")
            peers.append(subscriber)
            subscriber.subscribe(publisher.session)
        audio, video = b"\x00" * 160, b"\x00" * 1100
        server = psutil.Process(proc.pid)
        received = 0

        sent = {"video": 0, "audio": 0}  # each stream's own sequence: no gaps, so no NACKs

        def send(i: int) -> None:
            nonlocal received
            kind = "video" if i % 4 < VIDEO_SHARE else "audio"
            seq = sent[kind] = sent[kind] + 1
            if kind == "video":
                publisher.send_rtp(VIDEO_PT, seq & 0xFFFF, seq * 30, ssrcs["video"], video)
            else:
                publisher.send_rtp(AUDIO_PT, seq & 0xFFFF, seq * 960, ssrcs["audio"], audio)
            if i % 50 == 49:
                received += sum(p.drain() for p in peers[1:])

        before = server.cpu_times()
        _pace(FORWARDED // n, _rate(n), send)
        time.sleep(0.3)
        after = server.cpu_times()
        received += sum(p.drain() for p in peers[1:])
        return (after.user - before.user) + (after.system - before.system), received
    finally:
        for peer in peers:
            peer.close()
        proc.terminate()
        proc.wait(10)


def _anchor_run(n: int) -> tuple[float, int]:
    import socket

    sinks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    for sink in sinks:
        sink.bind(("127.0.0.1", 0))
        sink.setblocking(False)
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    proc = subprocess.Popen([sys.executable, "-c", ANCHOR, str(n), *(str(s.getsockname()[1]) for s in sinks)],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.connect(("127.0.0.1", port))
        server = psutil.Process(proc.pid)
        received = 0

        def drain() -> int:
            count = 0
            for sink in sinks:
                while True:
                    try:
                        sink.recv(4096)
                    except BlockingIOError:
                        break
                    count += 1
            return count

        def send(i: int) -> None:
            nonlocal received
            tx.send(b"\x80" * (1112 if i % 4 < VIDEO_SHARE else 172))
            if i % 50 == 49:
                received += drain()

        before = server.cpu_times()
        _pace(FORWARDED // n, _rate(n), send)
        time.sleep(0.3)
        after = server.cpu_times()
        received += drain()
        tx.send(b"stop")
        return (after.user - before.user) + (after.system - before.system), received
    finally:
        proc.wait(10)
        for sink in sinks:
            sink.close()


def main() -> None:
    print(f"one publisher (3:1 video 1100 B : audio 160 B), {FORWARD_RATE} packets/s out, {FORWARDED} per run")
    print(f"{'N':>3} {'forwarder':<10} {'delivered':>9} {'CPU s':>7} {'CPU s/Mpkt':>11} {'vs anchor':>9}")
    with tempfile.TemporaryDirectory(prefix="edgecall-bench-") as tmp:
        for n in FANOUT:
            anchor_cpu, anchor_got = _anchor_run(n)
            box_cpu, box_got = _box_run(n, Path(tmp))
            anchor = anchor_cpu / max(anchor_got, 1) * 1e6
            box = box_cpu / max(box_got, 1) * 1e6
            print(f"{n:>3} {'anchor':<10} {anchor_got:>9} {anchor_cpu:>7.2f} {anchor:>11.2f} {1:>8.2f}x")
            print(f"{n:>3} {'edgecall':<10} {box_got:>9} {box_cpu:>7.2f} {box:>11.2f} {box / anchor:>8.2f}x")
