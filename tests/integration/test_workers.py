"""A box of several worker processes (`[sfu] workers`, `[turn] workers`), with real parts on loopback:
the kernel spreads the media port's flows over the workers (SO_REUSEPORT), aiortc clients with real
ICE, DTLS and SRTP, a track crossing from one worker to another on a local trunk, coturn's client
through TURN workers, and a worker killed and started again while the others' calls go on."""
from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import time

import psutil
import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import VideoStreamTrack
from prometheus_client.parser import text_string_to_metric_families

from appliance import control
from appliance.config import load_config
from tests.integration.test_failover import Frames, Watched, pull
from tests.lab.appliance import APPLIANCE, REPO, box_config, free_port, request
from tests.lab.calls_api import AsyncApi as Api
from tests.lab.calls_api import connected, publish
from appliance.stun import Attr
from tests.lab.turn_client import EchoPeer, TurnUdpClient, uclient

WORKERS = 2
CLIENTS_AT_MOST = 24  # TURN clients from new source ports until every worker holds one (bounded)
SUBSCRIBERS_AT_MOST = 12  # pages join until every worker holds a session (each lands on one at random)


def workers_config() -> str:
    return box_config(free_port("tcp"), free_port("udp"), free_port("udp", "tcp"), workers=WORKERS)


@pytest.fixture
def box(appliance):
    return appliance(workers_config())


def workers(box) -> list[dict]:
    """What the supervisor says of each worker (the control socket: `appliance status`)."""
    status = control.request(load_config(str(box.config_path)), "status")
    assert status["node"] == load_config(str(box.config_path)).node.id  # the box's name, not a worker's
    return status["workers"]


def metric(api: str, name: str) -> float:
    """A worker's own figure (its /metrics answers for the whole box unless asked for its own)."""
    status, body = request("GET", f"http://{api}/metrics?worker=only")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    return sum(s.value for s in families[name].samples) if name in families else 0.0


def test_the_box_runs_its_workers_as_nodes_of_one_store(box):
    listed = workers(box)
    assert [w["index"] for w in listed] == list(range(WORKERS)) and all(w["ready"] and w["pid"] for w in listed)
    assert "runs 2 workers" in "\n".join(box.stdout_lines)
    for worker in listed:  # each answers on its own address too, and sees the others in the store
        status, body = request("GET", f"http://{worker['api']}/healthz")
        assert status == 200, body
        assert json.loads(body)["details"]["cluster"]["nodes"] == [f"test-box-w{i}" for i in range(WORKERS)]
    # One scrape of the box's /metrics, whichever worker answers it, has every worker's samples.
    status, body = box.get("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert {s.labels["worker"] for s in families["edgecall_service_up"].samples} == {str(i) for i in range(WORKERS)}


async def join_until_every_worker_holds_one(api: Api, pub_id: str, listed: list[dict],
                                             subscribers: list[RTCPeerConnection], frames: list[Frames]) -> None:
    """Subscribers of the publisher's track join through `api` until every worker in `listed` holds a
    connected session (each lands on one at random), SUBSCRIBERS_AT_MOST at most; their PeerConnections
    and decoded frames go into `subscribers` and `frames`, for the caller to close."""
    holders: dict[str, float] = {}
    for _ in range(SUBSCRIBERS_AT_MOST):
        pc = RTCPeerConnection()
        received: list = []
        pc.on("track", received.append)
        subscribers.append(pc)
        await pull(api, pc, pub_id)
        await connected(pc)
        frames.append(Frames(received[0]))
        holders = {w["api"]: metric(w["api"], "edgecall_sfu_connected_sessions") for w in listed}
        if all(holders.values()):
            return
    raise AssertionError(f"every session landed on one worker after {len(subscribers)} subscribers: {holders}")


async def test_a_track_crosses_workers_and_a_killed_workers_calls_go_on(box):
    api = Api(box)
    listed = workers(box)
    publisher = RTCPeerConnection()
    subscribers: list[RTCPeerConnection] = []
    frames: list[Frames] = []
    try:
        pub_id = await publish(api, publisher, {"v": VideoStreamTrack()})
        await connected(publisher)
        await join_until_every_worker_holds_one(api, pub_id, listed, subscribers, frames)
        for each in frames:
            await each.after(0.0, 5)
        publishing = next(w for w in listed if metric(w["api"], "edgecall_sfu_published_tracks"))
        other = next(w for w in listed if w is not publishing)
        # The track crossed between workers on a local trunk.
        assert metric(publishing["api"], "edgecall_cluster_trunk_packets_out") > 0
        assert metric(other["api"], "edgecall_cluster_trunk_packets_in") > 0

        # The worker that holds subscribers but not the publisher dies. The supervisor starts it again
        # on the same sockets, as a new node: the sessions of the one before are carried on from the
        # store when their clients' packets reach it (cluster failover). No PeerConnection
        # renegotiates or restarts ICE; every subscriber decodes again.
        watched = [Watched(pc) for pc in (publisher, *subscribers)]
        await asyncio.sleep(2.5)  # a checkpoint or two of every session's media in the store
        killed = time.monotonic()
        os.kill(other["pid"], signal.SIGKILL)
        for _ in range(300):
            again = next(w for w in workers(box) if w["index"] == other["index"])
            if again["ready"] and again["pid"] not in (None, other["pid"]):
                break
            await asyncio.sleep(0.1)
        assert again["ready"] and again["restarts"] == 1 and again["node"] == "test-box-w%d-1" % other["index"], again
        back = time.monotonic() - killed
        for each in frames:
            await each.after(killed, 10)
        freezes = sorted(each.freeze(killed) for each in frames)
        for states in watched:
            assert set(states.signaling) == {"stable"} and states.connection == ["connected"], states.__dict__
        print(f"\nworker {other['index']} SIGKILLed and ready again in {back:.2f} s; {len(frames)} subscribers "
              f"froze for " + ", ".join(f"{f:.2f}" for f in freezes) + " s")
    finally:
        for each in frames:
            each.task.cancel()
        for pc in (publisher, *subscribers):
            await pc.close()


def test_turn_clients_are_spread_over_the_workers_each_relaying_from_its_own_slice(box):
    """Clients from many source ports: the kernel hands each 5-tuple to one worker, whose relayed
    address lies in its slice of relay_ports (61000-61999: 61000-61499 and 61500-61999)."""
    port = turn_port(box)
    username = f"{int(time.time()) + 600}:spread"
    password = base64.b64encode(hmac.new(b"test-rest-secret", username.encode(), hashlib.sha1).digest()).decode()
    clients = []
    slices: dict[int, int] = {}
    try:
        for _ in range(CLIENTS_AT_MOST):
            client = TurnUdpClient(("127.0.0.1", port), username, password)
            clients.append(client)
            answer = client.allocate()
            relayed = answer.get(Attr.XOR_RELAYED_ADDRESS)
            assert relayed is not None, answer
            assert 61000 <= relayed[1] <= 61999, relayed
            slices[relayed[1] // 500] = slices.get(relayed[1] // 500, 0) + 1
            if len(slices) == WORKERS:
                break
        assert sorted(slices) == [122, 123], f"{len(clients)} clients all reached one worker: {slices}"
        for worker in workers(box):
            assert metric(worker["api"], "edgecall_turn_allocations") >= 1
    finally:
        for client in clients:
            client.close()


@pytest.mark.skipif(not shutil.which("turnutils_uclient"), reason="coturn's turnutils are not installed")
def test_coturns_client_relays_through_the_workers_without_loss(box):
    peer = EchoPeer()
    try:
        for _ in range(4):  # each run from new source ports
            result = uclient("127.0.0.1", turn_port(box), "-e", peer.host, "-r", str(peer.port), "-W",
                             "test-rest-secret", "-n", "20", "-l", "120", "-m", "3", "-c")
            assert result.sent > 0 and result.received == result.sent and result.lost == 0, result.output[-2000:]
    finally:
        peer.close()


def turn_port(box) -> int:
    return load_config(str(box.config_path)).turn.listen[0].endpoint.port


def test_reload_and_drain_reach_every_worker(box):
    """`appliance reload` and `appliance drain` go to the supervisor's control socket, which asks every
    worker: a changed app secret is taken by all of them, a drain drains all of them."""
    text = box.config_path.read_text()
    box.config_path.write_text(text.replace('secret = "test-app-secret"', 'secret = "reloaded-app-secret"', 1))
    result = subprocess.run([*APPLIANCE, "reload", "--config", str(box.config_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "apps[test-app].secret" in result.stdout, result.stdout + result.stderr
    for worker in workers(box):
        for secret, status in (("reloaded-app-secret", 201), ("test-app-secret", 401)):
            got, body = request("POST", f"http://{worker['api']}/v1/apps/test-app/sessions/new",
                                headers={"Authorization": f"Bearer {secret}"})
            assert got == status, (worker, secret, got, body)
    result = subprocess.run([*APPLIANCE, "drain", "--config", str(box.config_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "draining", result.stdout + result.stderr
    for worker in workers(box):
        status, body = request("GET", f"http://{worker['api']}/healthz")
        assert json.loads(body)["draining"], (worker, status, body)


def test_sigterm_drains_every_worker_once_and_leaves_no_process(appliance):
    box = appliance(workers_config(), args=("--drain-time", "0.5"))
    children = psutil.Process(box.proc.pid).children(recursive=True)
    assert {"nats-server", *("python" for _ in range(WORKERS))} <= {c.name().split(".")[0] for c in children}
    assert box.stop() == 0, box.logs()[-3000:]
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert box.logs().count("draining before stop") == WORKERS and "worker exited" not in box.logs()
