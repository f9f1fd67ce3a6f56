"""What holding things costs a box in memory: bytes per idle session, per subscriber leg and per TURN
allocation, from the box's USS (and RSS) before and after opening COUNT of each on a real loopback box.

- an idle session: sessions/new and a connected publisher PeerConnection (ICE, DTLS, SRTP; an audio
  and a video track pushed, Chrome-like, tests/bench/sfu_load.py) that sends no media;
- a subscriber session: a connected subscriber PeerConnection pulling one publisher's two tracks (in
  the Chrome-like load: with transport-wide numbering and the send-side estimator that come with it);
- a leg: one pulled track, idle, on one of those subscriber sessions: each pulls LEGS_PER_SESSION
  more tracks in a renegotiation, so that the sessions themselves are not counted in it;
- a TURN allocation: an Allocate over UDP (tests/lab/turn_client.py) with credentials the box's API
  mints, one credential per `user_quota` allocations.

Before the baseline, WARMUP of each are opened and kept, so that what the first one allocates for all
(imports, caches, pools) is not counted. Memory is summed over the box's process and its children.
"""
from __future__ import annotations

import json
import time
import urllib.request

import psutil

from appliance.stun import Class
from tests.bench.box import UNLIMITED_APP, running_box
from tests.bench.sfu_load import LoadPeer
from tests.lab.turn_client import TurnUdpClient

COUNT = 200  # of each: enough for a stable figure per item, few enough for one run of seconds
WARMUP = 5
LEGS_PER_SESSION = 10  # the tracks of 5 publishers, audio and video: COUNT legs on COUNT // 10 sessions
USER_QUOTA = 10  # [turn] user_quota's default: allocations one username may hold
SETTLE = 1.0  # seconds the box is left alone before each reading


def _memory(box: psutil.Process) -> tuple[int, int]:
    """(USS, RSS) of the box's process and its children, once it has settled."""
    time.sleep(SETTLE)
    uss = rss = 0
    for process in (box, *box.children(recursive=True)):
        info = process.memory_full_info()
        uss, rss = uss + info.uss, rss + info.rss
    return uss, rss


def _keepalive(peers: list[LoadPeer]) -> None:
    """A consent check from every peer (the box drops a path 30 s after its last one); the answers
    of the previous round are read and dropped."""
    for peer in peers:
        peer.drain()
        peer.keepalive()


def _publishers(api: str, count: int, peers: list[LoadPeer]) -> list[str]:
    sessions = []
    for _ in range(count):
        peer = LoadPeer(api, "open-secret")
        peers.append(peer)
        peer.publish()
        sessions.append(peer.session)
    return sessions


def _subscribers(api: str, count: int, first: str, peers: list[LoadPeer]) -> list[LoadPeer]:
    """`count` connected subscriber sessions, each pulling `first`'s two tracks."""
    subscribers = []
    for _ in range(count):
        peer = LoadPeer(api, "open-secret")
        peers.append(peer)
        peer.subscribe(first)
        subscribers.append(peer)
    return subscribers


class Allocations:
    """UDP allocations on the box, each from its own client socket, with credentials from the API."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.clients: list[TurnUdpClient] = []
        self.refused = 0
        self._credential: tuple[str, str] = ("", "")
        self._server: tuple[str, int] = ("", 0)

    def _mint(self) -> None:
        # A username is its expiry (and key): a ttl of its own gives each credential a username of its
        # own without a customIdentifier, whose usage totals the box would keep too.
        ttl = 3600 + len(self.clients)
        req = urllib.request.Request(f"{self.base}/v1/turn/keys/test-key/credentials/generate-ice-servers",
                                     data=json.dumps({"ttl": ttl}).encode(), method="POST",
                                     headers={"Authorization": "Bearer test-key-token"})
        with urllib.request.urlopen(req, timeout=10) as res:
            servers = json.loads(res.read())["iceServers"]
        turn = next(s for s in servers if "credential" in s)
        url = next(u for u in turn["urls"] if u.endswith("transport=udp"))
        host, _, port = url.removeprefix("turn:").removesuffix("?transport=udp").rpartition(":")
        self._server, self._credential = (host, int(port)), (turn["username"], turn["credential"])

    def open(self, count: int) -> None:
        for _ in range(count):
            if len(self.clients) % USER_QUOTA == 0:
                self._mint()
            client = TurnUdpClient(self._server, *self._credential)
            self.clients.append(client)
            if client.allocate().message_class != Class.SUCCESS:
                self.refused += 1

    def close(self) -> None:
        for client in self.clients:
            client.close()


def _per_item(before: tuple[int, int], after: tuple[int, int], count: int) -> str:
    uss, rss = ((a - b) / max(count, 1) for a, b in zip(after, before))
    return f"{uss / 1024:8.1f} KiB USS {rss / 1024:8.1f} KiB RSS"


def main() -> None:
    peers: list[LoadPeer] = []
    with running_box(UNLIMITED_APP) as (proc, base):
        api = f"{base}/v1/apps/open-app"
        box = psutil.Process(proc.pid)
        allocations = Allocations(base)
        try:
            publishers = _publishers(api, WARMUP, peers)
            _subscribers(api, 1, publishers[0], peers)[0].subscribe(*publishers[1:])
            allocations.open(WARMUP)
            start = _memory(box)

            publishers += _publishers(api, COUNT, peers)
            _keepalive(peers)
            sessions = _memory(box)

            subscribers = _subscribers(api, COUNT // LEGS_PER_SESSION, publishers[0], peers)
            _keepalive(peers)
            legs_before = _memory(box)
            pulled = publishers[1:1 + LEGS_PER_SESSION // 2]
            for subscriber in subscribers:
                subscriber.subscribe(*pulled)
            _keepalive(peers)
            legs = _memory(box)

            allocations.open(COUNT)
            _keepalive(peers)
            allocated = _memory(box)
        finally:
            allocations.close()
            for peer in peers:
                peer.close()
    leg_count = len(subscribers) * LEGS_PER_SESSION
    rows = [(f"idle session (publisher PeerConnection, 2 tracks, no media; {COUNT})", start, sessions, COUNT),
            (f"subscriber session (PeerConnection pulling 2 tracks, idle; {len(subscribers)})", sessions,
             legs_before, len(subscribers)),
            (f"subscriber leg (one more pulled track, idle; {leg_count})", legs_before, legs, leg_count),
            (f"TURN allocation (UDP, idle; {COUNT - allocations.refused}, {allocations.refused} refused)", legs,
             allocated, COUNT - allocations.refused)]
    print(f"box memory per item, each kind opened after {WARMUP} of it (the process and its children):")
    for label, before, after, count in rows:
        print(f"  {label:<66} {_per_item(before, after, count)}")
    print(f"  the box at the start: {start[0] / 2**20:.1f} MiB USS {start[1] / 2**20:.1f} MiB RSS; "
          f"at the end: {allocated[0] / 2**20:.1f} MiB USS {allocated[1] / 2**20:.1f} MiB RSS")
