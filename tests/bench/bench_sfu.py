"""SFU forwarding cost: the box's CPU seconds per million forwarded packets, one publisher (audio +
video) fanned out to N subscribers, against an anchor measured in the same run (each the median of
REPEATS runs, alternating): the same datagrams fanned out by a bare Python UDP loop (recvfrom + N sendto, no SRTP, no rewriting), the floor of
any Python forwarder on this machine. Beside them the same load into Janus (Debian's package, its
VideoRoom plugin, in a lab namespace: tests/bench/janus.py) with each of its threading settings, and
after the table how many times the box's CPU per delivered packet is Janus's best.

The load client (tests/bench/sfu_load.py) does real ICE, DTLS and SRTP and encodes nothing. Each
run is bounded by its packet count; subscribers drain their sockets while it runs.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import psutil

from tests.bench.janus import janus_fanout, janus_missing, janus_version
from tests.bench.box import tree_cpu
from tests.bench.sfu_load import AUDIO_PT, VIDEO_PT, LoadPeer
from tests.lab.appliance import REPO, box_config, free_port

FANOUT = (1, 10, 50)
# The anchor and the one-worker box run this many times at each N, alternating so that a drift of the
# machine reaches both, and each prints its median run with the range of all of them: on these VMs the
# box's figure moves about 15% from run to run (with how many packets each wakeup finds), the anchor's less.
REPEATS = 3
FORWARDED = 100_000  # forwarded packets per run: inbound = FORWARDED / N
FORWARD_RATE = 60_000  # forwarded packets per second asked of either forwarder: inbound rate = this / N


def _rate(n: int) -> float:
    return min(8000.0, FORWARD_RATE / n)
VIDEO_SHARE = 3  # of every 4 packets, 3 video (1100 bytes) and 1 audio (160 bytes)
CHROME = True  # both SFUs get what Chrome sends and answers (transport-cc, mid, RTX): sfu_load.py, janus_sdp.py
# Janus's threading settings: its default (a loop thread per handle), then two loops all handles share.
JANUS_LOOPS: tuple[int | None, ...] = (None, 2)
WORKERS = max(2, psutil.cpu_count() or 1)  # the box's row with workers: one per core


class Publisher(Protocol):
    def send_rtp(self, pt: int, seq: int, ts: int, ssrc: int, payload: bytes) -> None: ...


class Subscriber(Protocol):
    def drain(self) -> int: ...

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


def _drive(publisher: Publisher, ssrcs: dict[str, int], subscribers: Sequence[Subscriber], server: psutil.Process,
           n: int) -> tuple[float, int]:
    """The load, the same into either SFU: the forwarder's CPU seconds (all its threads and processes)
    and the packets its subscribers got."""
    audio, video = b"\x00" * 160, b"\x00" * 1100
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
            received += sum(p.drain() for p in subscribers)

    before = tree_cpu(server)
    _pace(FORWARDED // n, _rate(n), send)
    time.sleep(0.3)
    cpu = tree_cpu(server) - before
    received += sum(p.drain() for p in subscribers)
    return cpu, received


def _box_run(n: int, workdir: Path, workers: int = 1) -> tuple[float, int]:
    config = workdir / f"box-{n}-{workers}.toml"
    api_port = free_port("tcp")
    config.write_text(box_config(api_port, free_port("udp"), free_port("udp", "tcp"), workers=workers))
    proc = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--config", str(config), "--log-level",
                             "warning"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peers: list[LoadPeer] = []
    try:
        for line in proc.stdout:
            if line.startswith("Stop with Ctrl-C"):
                break
        api = f"http://127.0.0.1:{api_port}/v1/apps/test-app"
        publisher = LoadPeer(api, "test-app-secret", chrome=CHROME)
        peers.append(publisher)
        ssrcs = publisher.publish()
        for _ in range(n):
            subscriber = LoadPeer(api, "test-app-secret", chrome=CHROME)
            peers.append(subscriber)
            subscriber.subscribe(publisher.session)
        return _drive(publisher, ssrcs, peers[1:], psutil.Process(proc.pid), n)
    finally:
        for peer in peers:
            peer.close()
        proc.terminate()
        proc.wait(10)


def _janus_run(n: int, event_loops: int | None) -> tuple[float, int]:
    with janus_fanout(n, event_loops, CHROME) as fanout:
        return _drive(fanout.publisher, fanout.ssrcs, fanout.subscribers, psutil.Process(fanout.janus_pid), n)


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


def _per_mpkt(cpu: float, got: int) -> float:
    return cpu / max(got, 1) * 1e6


def _row(n: int, forwarder: str, cpu: float, got: int, anchor: float, runs: list[tuple[float, int]] | None = None
         ) -> float:
    """Print one row of the table; the forwarder's CPU seconds per million packets delivered (and, for
    a median of several runs, the range of theirs)."""
    per_mpkt = _per_mpkt(cpu, got)
    spread = ""
    if runs is not None and len(runs) > 1:
        figures = sorted(_per_mpkt(*run) for run in runs)
        spread = f"  median of {len(runs)}: {figures[0]:.2f} to {figures[-1]:.2f}"
    print(f"{n:>3} {forwarder:<10} {got:>9} {cpu:>7.2f} {per_mpkt:>11.2f} {per_mpkt / anchor:>8.2f}x{spread}")
    return per_mpkt


def _median(runs: list[tuple[float, int]]) -> tuple[float, int]:
    """The run whose CPU per packet is the median (the lower middle one of an even count)."""
    return sorted(runs, key=lambda run: _per_mpkt(*run))[(len(runs) - 1) // 2]


def _janus_label(event_loops: int | None) -> str:
    return "janus" if event_loops is None else f"janus/el{event_loops}"


def main() -> None:
    print(f"one publisher (3:1 video 1100 B : audio 160 B), {FORWARD_RATE} packets/s out, {FORWARDED} per run, "
          f"peers {'in Chrome mode' if CHROME else 'plain'}")
    no_janus = janus_missing()
    if no_janus is None:
        print(f"janus: {janus_version()} VideoRoom, WebRTC publisher (Janus unprotects its SRTP) and subscribers, "
              f"full ICE, in a lab namespace; {', '.join(_janus_label(x) for x in JANUS_LOOPS if x)}: "
              "that many event_loops shared by all handles")
    print(f"{'N':>3} {'forwarder':<10} {'delivered':>9} {'CPU s':>7} {'CPU s/Mpkt':>11} {'vs anchor':>9}")
    ratios: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory(prefix="edgecall-bench-") as tmp:
        for n in FANOUT:
            anchor_runs: list[tuple[float, int]] = []
            box_runs: list[tuple[float, int]] = []
            for _ in range(REPEATS):
                anchor_runs.append(_anchor_run(n))
                box_runs.append(_box_run(n, Path(tmp)))
            anchor = _per_mpkt(*_median(anchor_runs))
            _row(n, "anchor", *_median(anchor_runs), anchor, anchor_runs)
            box = _row(n, "edgecall", *_median(box_runs), anchor, box_runs)
            # Every core: the subscribers land on workers at random, and a track crosses to the
            # publisher's other workers on local trunks (one copy each).
            _row(n, f"edgecall×{WORKERS}", *_box_run(n, Path(tmp), WORKERS), anchor)
            if no_janus is not None:
                continue
            janus: list[float] = []
            for event_loops in JANUS_LOOPS:
                try:
                    janus.append(_row(n, _janus_label(event_loops), *_janus_run(n, event_loops), anchor))
                except Exception as e:  # Janus is someone else's program: its failure must not hide our figures
                    print(f"{n:>3} {_janus_label(event_loops):<10} failed: {type(e).__name__}: {e}")
            if janus:
                ratios.append((n, box / min(janus)))
    for n, ratio in ratios:
        print(f"N={n} edgecall/janus {ratio:.2f}x")
    if no_janus is not None:
        print(no_janus)
