"""What a page's PeerConnection did around a box's failure (issue 19), recorded inside the page.

A watcher installed in each page before the failure samples the PeerConnection every SAMPLE_MS (its
own clock is the wall clock, Date.now(), which the test's time.time() shares): video frames decoded
(a subscriber) or encoded (the publisher), receiver reports from the SFU, signalingState and
connectionState. It also counts every offer/answer step and ICE restart the page makes from then on
(wrapping the PeerConnection's methods) and every state change event. Sampling in the page keeps the
samples evenly spaced whatever the test process is doing meanwhile (killing a box, polling the router).
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

SAMPLE_MS = 50
# The offer/answer steps and the ICE restart: none may happen once the watcher is in.
NEGOTIATION = ("createOffer", "createAnswer", "setLocalDescription", "setRemoteDescription", "restartIce")
BAR = 1.5  # the acceptance bar for a subscriber's freeze, in seconds: printed beside each figure
# A stretch this long without a new frame is a stall, not the spacing of frames (15 fps: 0.07 s; on the
# lab's two busy cores the page's samples themselves are at times 0.15 s apart).
MIN_STALL = 0.5

WATCH = """
([intervalMs, negotiation]) => {
  const pc = calls.pc;
  const ufrag = (d) => { const m = d && /a=ice-ufrag:(\\S+)/.exec(d.sdp); return m ? m[1] : null; };
  const w = window.failover = {
    pc, samples: [], calls: {}, signaling: [], connection: [], ice: [], negotiationneeded: 0,
    ufrag: ufrag(pc.localDescription), remoteUfrag: ufrag(pc.remoteDescription), ufragOf: ufrag,
  };
  for (const name of negotiation) {
    const original = pc[name].bind(pc);
    w.calls[name] = 0;
    pc[name] = (...args) => { w.calls[name]++; return original(...args); };
  }
  pc.addEventListener("signalingstatechange", () => w.signaling.push([Date.now(), pc.signalingState]));
  pc.addEventListener("connectionstatechange", () => w.connection.push([Date.now(), pc.connectionState]));
  pc.addEventListener("iceconnectionstatechange", () => w.ice.push([Date.now(), pc.iceConnectionState]));
  pc.addEventListener("negotiationneeded", () => { w.negotiationneeded++; });
  let busy = false;  // a getStats slower than the interval is not overlapped by the next
  w.timer = setInterval(async () => {
    if (busy) return;
    busy = true;
    try {
      let frames = null, reports = null;
      for (const s of (await pc.getStats()).values()) {
        if (s.kind !== "video") continue;
        if (s.type === "inbound-rtp") frames = s.framesDecoded || 0;
        if (s.type === "outbound-rtp") frames = (frames || 0) + (s.framesEncoded || 0);
        if (s.type === "remote-inbound-rtp") reports = (reports || 0) + (s.roundTripTimeMeasurements || 0);
      }
      w.samples.push([Date.now(), frames, reports, pc.signalingState, pc.connectionState]);
    } finally {
      busy = false;
    }
  }, intervalMs);
}
"""
# (wall ms, frames) of every sample so far.
FRAMES_SO_FAR = "() => window.failover.samples.map(row => [row[0], row[1]])"
# Everything recorded; the watcher stops.
REPORT = """
() => {
  const w = window.failover;
  clearInterval(w.timer);
  return {samples: w.samples, calls: w.calls, signaling: w.signaling, connection: w.connection, ice: w.ice,
          negotiationneeded: w.negotiationneeded, samePc: calls.pc === w.pc,
          ufrag: [w.ufrag, w.ufragOf(calls.pc.localDescription)],
          remoteUfrag: [w.remoteUfrag, w.ufragOf(calls.pc.remoteDescription)]};
}
"""


@dataclass(frozen=True)
class Stall:
    """The longest stretch without a new frame (or report) that ends after the failure or never ends:
    its first and last instants, in seconds after the failure (`resumed` None: nothing came after it
    up to the last sample)."""

    last_before: float
    resumed: float | None
    until: float  # the last sample's time (the stall's end when it never ended)

    @property
    def seconds(self) -> float:
        return (self.until if self.resumed is None else self.resumed) - self.last_before

    def describe(self, bar: float | None = None) -> str:
        against = f" (bar {bar} s)" if bar is not None else ""
        if self.resumed is None:
            return f"{self.seconds:.2f} s and counting{against}: nothing new since {self.last_before:+.2f} s"
        return f"{self.seconds:.2f} s{against}: last {self.last_before:+.2f} s, next {self.resumed:+.2f} s"


def stalls(series: Sequence[tuple[float, int]], failed_at: float) -> list[Stall]:
    """From (wall s, count) samples: every stretch without the count rising that ends after
    `failed_at`, the last one still open at the last sample (often a single sample's spacing)."""
    if len(series) < 2:
        return []
    rises = [series[0][0]] + [at for (_, before), (at, count) in zip(series, series[1:]) if count > before]
    end = series[-1][0] - failed_at
    closed = [Stall(a - failed_at, b - failed_at, end) for a, b in zip(rises, rises[1:]) if b > failed_at]
    return [*closed, Stall(rises[-1] - failed_at, None, end)]


def longest_stall(series: Sequence[tuple[float, int]], failed_at: float) -> Stall | None:
    """The freeze: the longest of `stalls` (None without two samples)."""
    return max(stalls(series, failed_at), key=lambda stall: stall.seconds, default=None)


def decoding_again(series: Sequence[tuple[float, int]], failed_at: float, frames: int, by: float) -> bool:
    """Whether a subscriber decodes again: no stall of MIN_STALL or more is open at the last sample,
    the last one after the failure ended within `by` seconds of it, and `frames` frames came since
    (or since the failure, when there was none). Frames that trickle out of buffers just after the
    failure and then stop do not count, nor does a relapse."""
    found = stalls(series, failed_at)
    if not found or found[-1].seconds >= MIN_STALL:
        return False
    frozen = [stall for stall in found[:-1] if stall.seconds >= MIN_STALL]
    since = frozen[-1].resumed if frozen else 0.0
    if since is None or since > by:
        return False
    counts = [count for at, count in series if at - failed_at >= since]
    return bool(counts) and counts[-1] - counts[0] >= frames


@dataclass
class Watched:
    """One page's record (REPORT), read into what the test asserts and prints."""

    report: dict
    samples: list[list] = field(init=False)

    def __post_init__(self) -> None:
        self.samples = self.report["samples"]

    def series(self, column: int) -> list[tuple[float, int]]:
        """(wall s, value) of one sampled column (1: frames, 2: receiver reports), where it was read."""
        return [(row[0] / 1000, row[column]) for row in self.samples if row[column] is not None]

    def frames_at(self, wall: float) -> int:
        """Frames counted at the last sample before `wall` (s), or the first."""
        series = self.series(1)
        before = [count for at, count in series if at <= wall]
        return before[-1] if before else series[0][1]

    def states(self, column: int) -> list[str]:
        """The distinct values a state column took, in the order first seen."""
        return list(dict.fromkeys(row[column] for row in self.samples))

    def widest_sampling_gap(self) -> float:
        """The widest spacing of two samples, s: a freeze shorter than about this cannot be seen."""
        times = [row[0] / 1000 for row in self.samples]
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)

    def negotiation_problems(self) -> list[str]:
        """Why this page's call was not carried on untouched since the watcher went in (empty: it was)."""
        r = self.report
        problems = [f"{name} called {count} times" for name, count in r["calls"].items() if count]
        signaling = {state for _, state in r["signaling"]} | set(self.states(3))
        if signaling != {"stable"}:
            problems.append(f"signalingState left stable: samples {self.states(3)}, events {r['signaling']}")
        connection = {state for _, state in r["connection"]} | set(self.states(4))
        if connection & {"failed", "closed"}:
            problems.append(f"connectionState became {sorted(connection & {'failed', 'closed'})}: {r['connection']}")
        if r["ufrag"][0] != r["ufrag"][1] or r["remoteUfrag"][0] != r["remoteUfrag"][1]:
            problems.append(f"ICE credentials changed (an ICE restart): local {r['ufrag']}, remote {r['remoteUfrag']}")
        if not r["samePc"]:
            problems.append("the page made a new PeerConnection")
        return problems

    def state_line(self) -> str:
        r = self.report
        events = " > ".join(state for _, state in r["connection"]) or "no change"
        ice = " > ".join(state for _, state in r["ice"]) or "no change"
        steps = sum(r["calls"].values())
        return (f"connectionState {events}; iceConnectionState {ice}; signalingState {'/'.join(self.states(3))}; "
                f"offer/answer steps {steps}, negotiationneeded {r['negotiationneeded']}")


def spread(values: Sequence[float]) -> str:
    """The median and the worst of some freezes, against the bar."""
    if not values:
        return "none measured"
    return f"median {statistics.median(values):.2f} s, worst {max(values):.2f} s (bar {BAR} s)"
