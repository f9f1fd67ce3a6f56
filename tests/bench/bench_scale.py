"""Scale: the most subscriber legs one forwarder carries with under 1% loss, on this machine. One
publisher at a call's rate (VP8-sized video, 30 frames/s of 3-4 packets of 1100 B: 110 packets/s, about
1 Mbit/s, and Opus-sized audio, 50 packets/s of 160 B) is fanned out to N subscribers. Three forwarders:
the box with one worker, the box with a worker per core, and Janus (Debian's package, VideoRoom,
`event_loops = 2`: its better threading setting in bench_sfu) in a lab namespace (tests/bench/janus.py).
Peers are Chrome-like (sfu_load.py, janus_peer.py): real ICE, DTLS and SRTP, transport-wide numbers and
transport-cc feedback.

The box's N climbs the STEPS ladder on one box, subscribers added from step to step, until a step loses
1% or more. Janus's fan-out is built whole for each step, at about a second a leg, so its rungs are
searched instead (`_next_rung`), within a time budget, from the rung above the box's figure.

The load generator shares the machine: the bench's own thread only sends the publisher's 160 packets/s,
and forked sinks (tests/bench/leg_sink.py) read the subscribers' sockets and count RTP media. Each step
warms up, idles, then measures HOLD seconds of media and waits GRACE seconds for the last of it; loss is
1 - received / (sent × N). CPU columns are cores used over the hold: the forwarder's process tree, the
generator (this process and its sinks), and the rest of the machine (anything else running); drop
columns say where datagrams were lost to full receive buffers.

`EDGECALL_SCALE_FORWARDERS` picks forwarders (comma-separated: w1, all, janus; all three by default): Janus's
steps take half an hour.
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil

from appliance.sfu import sdp
from tests.bench.box import UNLIMITED_APP, tree_cpu
from tests.bench.janus import janus_fanout, janus_missing, janus_version
from appliance.plumbing.udp import udp_drops
from tests.bench.leg_sink import BoxLeg, JanusLeg, Leg, Sink
from tests.bench.sfu_load import AUDIO_PT, VIDEO_PT, LoadPeer
from tests.lab.appliance import REPO, box_config, free_port

STEPS = (50, 100, 200, 300, 400, 500, 600, 700, 800, 1000, 1200, 1600)
MAX_LOSS = 0.01
WARMUP, HOLD, GRACE = 1.0, 5.0, 1.0  # seconds: media before the measure, measured, waited for after
FRAME_RATE, VIDEO_PACKETS = 30, (4, 4, 3)  # packets per frame in turn: 110 packets/s
AUDIO_INTERVAL = 0.02
VIDEO_SIZE, AUDIO_SIZE = 1100, 160
SINK_LEGS = 200  # legs per sink process
KEEPALIVE_INTERVAL = 10.0  # the publisher's consent checks while subscribers are added (a path is dropped after 30 s)
START_TIMEOUT = 60.0
MAX_FAILED_CONNECTS = 10  # per step, each made again; past that the box's steps end
JANUS_LOOPS = 2
JANUS_BUDGET = 2100.0  # seconds for all of Janus's steps, fan-outs included: three or four of them
CORES = psutil.cpu_count() or 1
SECRET = "open-secret"


class Publisher(Protocol):
    def send_rtp(self, pt: int, seq: int, ts: int, ssrc: int, payload: bytes) -> None: ...


class CallMedia:
    """One publisher's audio and video at a call's packet rate, sequence numbers and timestamps running
    on from one send to the next (no gaps: no NACKs)."""

    def __init__(self, publisher: Publisher, ssrcs: dict[str, int]) -> None:
        self.publisher, self.ssrcs = publisher, ssrcs
        self.video_seq = self.audio_seq = self.frames = self.audio_frames = 0

    def send(self, seconds: float) -> int:
        """Send for `seconds` (video frames and audio packets on their own clocks); packets sent."""
        schedule = sorted([(k / FRAME_RATE, True) for k in range(round(seconds * FRAME_RATE))]
                          + [(k * AUDIO_INTERVAL, False) for k in range(round(seconds / AUDIO_INTERVAL))])
        video, audio = bytes(VIDEO_SIZE), bytes(AUDIO_SIZE)
        sent = 0
        start = time.perf_counter()
        for at, is_video in schedule:
            lag = start + at - time.perf_counter()
            if lag > 0:
                time.sleep(lag)
            if is_video:
                count = VIDEO_PACKETS[self.frames % len(VIDEO_PACKETS)]
                self.frames += 1
                for i in range(count):
                    self.video_seq += 1
                    marker = 0x80 if i == count - 1 else 0  # the frame's last packet
                    self.publisher.send_rtp(VIDEO_PT | marker, self.video_seq, self.frames * 3000,
                                            self.ssrcs["video"], video)
                sent += count
            else:
                self.audio_seq += 1
                self.audio_frames += 1
                self.publisher.send_rtp(AUDIO_PT, self.audio_seq, self.audio_frames * 960, self.ssrcs["audio"], audio)
                sent += 1
        return sent


@dataclass
class Step:
    n: int
    sent: int  # by the publisher, in the hold
    received: int  # by all subscribers together
    dropped: int  # by the kernel at the subscribers' sockets
    forwarder_dropped: int  # by the kernel at the forwarder's own sockets (its receive buffers were full)
    forwarder_cores: float
    generator_cores: float
    other_cores: float
    rss: int  # the forwarder's process tree, bytes
    processes: int  # in that tree

    @property
    def share(self) -> float:
        return self.received / max(self.sent * self.n, 1)

    @property
    def loss(self) -> float:
        return 1 - self.share


def _busy() -> float:
    """CPU seconds the whole machine has been busy."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def _rss(server: psutil.Process) -> int:
    total = 0
    for proc in (server, *server.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += proc.memory_info().rss
    return total


def _forwarder_drops(server: psutil.Process) -> int:
    """Datagrams the kernel dropped at the UDP sockets of the forwarder's process tree."""
    inodes: set[int] = set()
    for proc in (server, *server.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess, FileNotFoundError):
            for fd in os.listdir(f"/proc/{proc.pid}/fd"):
                with contextlib.suppress(FileNotFoundError):
                    target = os.readlink(f"/proc/{proc.pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(int(target[8:-1]))
    return udp_drops(inodes, server.pid)


def _measure(media: CallMedia, sinks: Sequence[Sink], server: psutil.Process, n: int) -> Step:
    """One step: warm up and idle, then HOLD seconds measured and GRACE for the stragglers."""
    media.send(WARMUP)
    time.sleep(GRACE)

    def received() -> tuple[int, int]:
        counts = [sink.counts() for sink in sinks]
        return sum(c[0] for c in counts), sum(c[1] for c in counts)

    def generator() -> float:
        return time.process_time() + sum(sink.cpu() for sink in sinks)

    got, dropped = received()
    forwarder_dropped = _forwarder_drops(server)
    forwarder, load, busy, start = tree_cpu(server), generator(), _busy(), time.monotonic()
    sent = media.send(HOLD)
    elapsed = time.monotonic() - start
    forwarder, load, busy = tree_cpu(server) - forwarder, generator() - load, _busy() - busy
    time.sleep(GRACE)
    got_after, dropped_after = received()
    return Step(n, sent, got_after - got, dropped_after - dropped, _forwarder_drops(server) - forwarder_dropped,
                forwarder / elapsed, load / elapsed,
                max(busy - forwarder - load, 0.0) / elapsed, _rss(server), len(server.children(recursive=True)) + 1)


def _row(name: str, step: Step) -> None:
    print(f"{name:<12} {step.n:>5} {step.share:>9.2%} {step.loss:>7.2%} {step.forwarder_cores:>9.2f} "
          f"{step.generator_cores:>9.2f} {step.other_cores:>6.2f} {step.forwarder_dropped:>9} {step.dropped:>9}",
          flush=True)


def _sinks(legs: Sequence[Leg]) -> list[Sink]:
    return [Sink(legs[i:i + SINK_LEGS]) for i in range(0, len(legs), SINK_LEGS)]


@contextlib.contextmanager
def _box(workers: int) -> Iterator[tuple[psutil.Process, str]]:
    """A loopback box with `workers` (0: one per core) and an app without limits, until the block ends:
    its supervisor's process and the app's API base URL."""
    with tempfile.TemporaryDirectory(prefix="edgecall-bench-") as tmp:
        config = Path(tmp) / "box.toml"
        api_port = free_port("tcp")
        text = box_config(api_port, free_port("udp"), free_port("udp", "tcp"), UNLIMITED_APP, workers)
        config.write_text(text.replace(
            "edgecall-test-state", f"edgecall-bench-state-scale-{workers}"))
        proc = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--config", str(config), "--log-level",
                                 "warning"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            _wait_ready(proc)
            yield psutil.Process(proc.pid), f"http://127.0.0.1:{api_port}/v1/apps/open-app"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(proc: subprocess.Popen) -> None:
    """Until the supervisor says every worker is ready (it prints "Stop with Ctrl-C.")."""
    assert proc.stdout is not None
    out, deadline = b"", time.monotonic() + START_TIMEOUT
    while b"Stop with Ctrl-C" not in out:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
            raise RuntimeError(f"the box was not ready within {START_TIMEOUT} s")
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            raise RuntimeError(f"the box exited at start ({proc.wait()})")
        out += chunk


def _media_pts(api: str, publisher: str) -> frozenset[int]:
    """The payload types the box numbers the publisher's audio and video with toward a subscriber (its
    own, per session, the same for every new session): from the offer of a subscription made for this
    and closed again."""
    def call(method: str, path: str, body: dict | None) -> dict:
        request = urllib.request.Request(f"{api}{path}", None if body is None else json.dumps(body).encode(),
                                         {"Authorization": f"Bearer {SECRET}"}, method=method)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b"{}")

    session = call("POST", "/sessions/new", None)["sessionId"]
    offer = call("POST", f"/sessions/{session}/tracks/new", {"tracks": [
        {"location": "remote", "sessionId": publisher, "trackName": name} for name in ("audio", "video")]})
    sections = sdp.parse(offer["sessionDescription"]["sdp"], "offer").sections
    call("PUT", f"/sessions/{session}/tracks/close", {"tracks": [{"mid": s.mid} for s in sections], "force": True})
    return frozenset(c.pt for s in sections for c in s.codecs if c.name.lower() != "rtx")


def _subscribe(api: str, publisher: LoadPeer, count: int, peers: list[LoadPeer]) -> tuple[list[LoadPeer], list[str]]:
    """`count` more subscribers of the publisher, one made again (a new PeerConnection, as an app would)
    whenever one did not connect, MAX_FAILED_CONNECTS times at most: those connected, and why the others
    failed. Every peer made goes into `peers` first, for the caller to close."""
    connected: list[LoadPeer] = []
    failures: list[str] = []
    keepalive_at = time.monotonic() + KEEPALIVE_INTERVAL
    while len(connected) < count and len(failures) <= MAX_FAILED_CONNECTS:
        subscriber = LoadPeer(api, SECRET, chrome=True)
        peers.append(subscriber)
        try:
            subscriber.subscribe(publisher.session)
        except (OSError, RuntimeError) as e:
            failures.append(f"{type(e).__name__}: {e}")
            continue
        connected.append(subscriber)
        if time.monotonic() >= keepalive_at:
            keepalive_at += KEEPALIVE_INTERVAL
            publisher.keepalive()
    return connected, failures


def _box_steps(name: str, workers: int) -> list[Step]:
    """The box's steps, subscribers added to one box from step to step."""
    steps: list[Step] = []
    peers: list[LoadPeer] = []
    sinks: list[Sink] = []
    with _box(workers) as (server, api):
        try:
            publisher = LoadPeer(api, SECRET, chrome=True)
            peers.append(publisher)
            media = CallMedia(publisher, publisher.publish())
            media_pts = _media_pts(api, publisher.session)
            legs = 0
            for n in STEPS:
                added, failures = _subscribe(api, publisher, n - legs, peers)
                legs += len(added)
                sinks += _sinks([BoxLeg(peer, media_pts) for peer in added])
                if failures:
                    print(f"{name:<12} {n:>5} {len(failures)} subscribers did not connect and were made again "
                          f"(first: {failures[0]})", flush=True)
                if legs < n:
                    print(f"{name:<12} {n:>5} not run: over {MAX_FAILED_CONNECTS} subscribers did not connect",
                          flush=True)
                    break
                publisher.keepalive()
                steps.append(_measure(media, sinks, server, n))
                _row(name, steps[-1])
                if steps[-1].loss >= MAX_LOSS:
                    break
        finally:
            for sink in sinks:
                sink.stop()
            for peer in peers:
                peer.close()
    return steps


def _janus_steps(name: str, beyond: int) -> list[Step]:
    """Janus's steps, each on a fresh Janus: tests/bench/janus.py builds a fan-out whole, at about a second a
    leg, so rungs of the ladder are searched rather than climbed, while the time budget lasts: first the
    rung above `beyond` (the box's figure: does Janus carry more?), then `_next_rung`s."""
    steps: list[Step] = []
    carried: dict[int, bool] = {}  # rung index -> carried under MAX_LOSS
    index = next((i for i, n in enumerate(STEPS) if n > beyond), len(STEPS) - 1)
    deadline, per_leg = time.monotonic() + JANUS_BUDGET, 1.0
    while index >= 0:
        n = STEPS[index]
        if time.monotonic() + n * per_leg > deadline:
            print(f"{name:<12} {n:>5} not run: its fan-out (about {n * per_leg:.0f} s) would pass the "
                  f"{JANUS_BUDGET:.0f} s budget", flush=True)
            break
        begun = time.monotonic()
        try:
            with janus_fanout(n, JANUS_LOOPS, chrome=True) as fanout:
                per_leg = (time.monotonic() - begun) / n
                sinks = _sinks([JanusLeg(peer) for peer in fanout.subscribers])
                try:
                    steps.append(_measure(CallMedia(fanout.publisher, fanout.ssrcs), sinks,
                                          psutil.Process(fanout.janus_pid), n))
                finally:
                    for sink in sinks:
                        sink.stop()
        except Exception as e:  # Janus is someone else's program: its failure must not hide our figures
            print(f"{name:<12} {n:>5} failed: {type(e).__name__}: {e}", flush=True)
            break
        _row(name, steps[-1])
        carried[index] = steps[-1].loss < MAX_LOSS
        index = _next_rung(carried, steps)
    return steps


def _next_rung(carried: dict[int, bool], steps: Sequence[Step]) -> int:
    """The rung to try next, -1 when the knee lies between two rungs tried: down while none carried; up
    from the highest that carried to the first rung where its CPU per leg (forwarder and generator) would
    fill the machine; then halving the rungs between the highest that carried and the lowest that did not."""
    low = max((i for i, ok in carried.items() if ok), default=-1)
    high = min((i for i, ok in carried.items() if not ok and i > low), default=len(STEPS))
    if high - low <= 1:
        return -1
    if low < 0:
        return high - 1
    if high < len(STEPS):
        return (low + high) // 2
    best = max((s for s in steps if s.loss < MAX_LOSS), key=lambda s: s.n)
    full = 0.9 * CORES * best.n / max(best.forwarder_cores + best.generator_cores, 1e-6)
    return max(low + 1, next((i for i, n in enumerate(STEPS) if n >= full), len(STEPS) - 1))


def _most(steps: Sequence[Step]) -> int:
    """The largest N of the steps that lost under MAX_LOSS (0 for none)."""
    return max((s.n for s in steps if s.loss < MAX_LOSS), default=0)


def _verdict(name: str, steps: Sequence[Step], forwarder_limit: float) -> str:
    """The summary line of one forwarder, with what limited its figure: the first step over 1% loss."""
    most = _most(steps)
    line = f"most legs under 1% loss: {name} {most}"
    over = [s for s in steps if s.loss >= MAX_LOSS and s.n > most]
    if not over:
        return f"{line} (or more: no step run lost 1%, the largest was {max((s.n for s in steps), default=0)})"
    knee = min(over, key=lambda s: s.n)
    lost = knee.sent * knee.n - knee.received
    if knee.dropped * 2 >= lost:
        return (f"{line}: NOT the forwarder's figure: at N={knee.n} the generator's own sockets dropped "
                f"{knee.dropped} of the {lost} packets lost (the generator was the limit)")
    cores = (f"forwarder {knee.forwarder_cores:.2f}, generator {knee.generator_cores:.2f}, other "
             f"{knee.other_cores:.2f} cores")
    if knee.forwarder_cores + knee.generator_cores + knee.other_cores >= 0.9 * CORES:
        limit = f"the machine's {CORES} cores were busy ({cores})"
    elif knee.forwarder_cores >= 0.9 * forwarder_limit:
        limit = f"the forwarder used the {forwarder_limit:g} cores it can ({cores})"
    else:
        limit = f"under a full CPU on average ({cores}; the forwarder can use {forwarder_limit:g})"
    if knee.forwarder_dropped:
        limit += f"; its own sockets dropped {knee.forwarder_dropped} datagrams in, at full receive buffers"
    return f"{line} (at N={knee.n}, {knee.loss:.1%} lost: {limit})"


def main() -> None:
    video_rate = round(FRAME_RATE * sum(VIDEO_PACKETS) / len(VIDEO_PACKETS))
    print(f"one publisher: video {FRAME_RATE} frames/s of {'/'.join(map(str, VIDEO_PACKETS))} packets of "
          f"{VIDEO_SIZE} B ({video_rate} packets/s), audio {round(1 / AUDIO_INTERVAL)} packets/s of {AUDIO_SIZE} B; "
          "Chrome-like peers")
    print(f"N subscribers in steps of {', '.join(map(str, STEPS))} until one loses {MAX_LOSS:.0%} or more; each step "
          f"{WARMUP:g} s warm-up, {HOLD:g} s measured, {GRACE:g} s grace")
    print(f"cores used over the hold ({CORES} here): fwd = the forwarder's process tree; gen = the load generator "
          f"(this process sends, forked sinks of {SINK_LEGS} subscribers each read); other = the rest of the machine")
    print("drops = datagrams the kernel dropped at full receive buffers: fwd at the forwarder's own sockets (media "
          "and RTCP in), gen at the subscribers' (lost by the generator, not the forwarder)")
    no_janus = janus_missing()
    if no_janus is None:
        print(f"janus: {janus_version()} VideoRoom, event_loops = {JANUS_LOOPS}, in a lab namespace; a fresh Janus "
              f"per step, steps searched from the rung above the box's figure, {JANUS_BUDGET / 60:.0f} min at most")
    print(f"{'forwarder':<12} {'N':>5} {'delivered':>9} {'loss':>7} {'fwd cores':>9} {'gen cores':>9} {'other':>6} "
          f"{'fwd drops':>9} {'gen drops':>9}", flush=True)
    wanted = set(os.environ.get("EDGECALL_SCALE_FORWARDERS", "w1,all,janus").split(","))
    runs: list[tuple[str, list[Step], float]] = []
    for name, workers, key in (("edgecall/w1", 1, "w1"), (f"edgecall/w{CORES}", 0, "all")):
        if key in wanted:
            runs.append((name, _box_steps(name, workers), float(workers or CORES)))
    if no_janus is None and "janus" in wanted:
        name = f"janus/el{JANUS_LOOPS}"
        runs.append((name, _janus_steps(name, _most(runs[-1][1]) if runs else 0), float(CORES)))
    for name, steps, _ in runs:
        if steps:
            largest = max(steps, key=lambda s: s.n)
            print(f"memory: {name} at N={largest.n}: {largest.rss / 2**20:.0f} MB RSS (its process tree: "
                  f"{largest.processes} process{'es' if largest.processes > 1 else ''})")
    for name, steps, limit in runs:
        print(_verdict(name, steps, limit))
    if no_janus is not None:
        print(no_janus)
