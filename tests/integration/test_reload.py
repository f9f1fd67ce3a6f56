"""Reloading a real box with a live aiortc call through it: `appliance reload` and SIGHUP change an app's
secret and add a TURN key in place. Media keeps flowing, the session and a TURN allocation live on,
the old secret is refused and the new one taken, and a credential of the new key allocates and relays
(coturn's turnutils_uclient). A broken file changes nothing and every problem is said with its line."""
from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import VideoStreamTrack

from appliance.stun import Attr, Class, Method
from tests.lab.appliance import APPLIANCE, REPO, RunningBox, box_config, free_port, healthz, request
from tests.lab.calls_api import AsyncApi, connected, publish, subscribe
from tests.lab.turn_client import EchoPeer, TurnUdpClient, uclient

pytestmark = pytest.mark.skipif(not shutil.which("turnutils_uclient"), reason="coturn's turnutils are not installed")

OLD_SECRET, NEW_SECRET = "test-app-secret", "reloaded-app-secret"
NEW_KEY = '\n[[turn.keys]]\nid = "new-key"\ntoken = "new-key-token"\n'
# How long a change made by SIGHUP may take to show (a bound on the polling, not a measurement).
DEADLINE = 10.0


@dataclass
class Call:
    publisher: RTCPeerConnection
    subscriber: RTCPeerConnection
    track: MediaStreamTrack  # the subscriber's: the publisher's video, through the SFU
    sessions: tuple[str, str]

    async def frames(self, count: int) -> None:
        """`count` more frames reach the subscriber (each within a bound)."""
        for _ in range(count):
            await asyncio.wait_for(self.track.recv(), 10)

    def connected(self) -> bool:
        return self.publisher.connectionState == self.subscriber.connectionState == "connected"


@contextlib.asynccontextmanager
async def call_through(box: RunningBox) -> AsyncIterator[Call]:
    api = AsyncApi(box, secret=OLD_SECRET)
    publisher, subscriber = RTCPeerConnection(), RTCPeerConnection()
    try:
        published = await publish(api, publisher, {"v": VideoStreamTrack()})
        await connected(publisher)
        tracks: list[MediaStreamTrack] = []
        subscriber.on("track", tracks.append)
        subscribed = await subscribe(api, subscriber, [{"sessionId": published, "trackName": "v"}])
        await connected(subscriber)
        call = Call(publisher, subscriber, tracks[0], (published, subscribed))
        await call.frames(5)
        yield call
    finally:
        await publisher.close()
        await subscriber.close()


def start(appliance) -> tuple[RunningBox, str, int]:
    """A loopback box; its config's text, and its TURN port."""
    turn = free_port("udp", "tcp")
    text = box_config(free_port("tcp"), free_port("udp"), turn)
    return appliance(text), text, turn


def cli_reload(box: RunningBox) -> subprocess.CompletedProcess:
    return subprocess.run([*APPLIANCE, "reload", "--config", str(box.config_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


async def session_status(box: RunningBox, secret: str, session: str) -> int:
    status, _ = await AsyncApi(box, secret=secret)("GET", f"/sessions/{session}")
    return status


def key_credentials(box: RunningBox, key: str, token: str) -> tuple[str, str]:
    status, raw = request("POST", box.url(f"/v1/turn/keys/{key}/credentials/generate-ice-servers"),
                          json.dumps({"ttl": 600}).encode(), {"Authorization": f"Bearer {token}"})
    assert status == 201, raw
    turn = json.loads(raw)["iceServers"][-1]
    return turn["username"], turn["credential"]


def relays(turn_port: int, username: str, password: str) -> None:
    """turnutils_uclient allocates with the credential and relays to an echo peer without loss."""
    peer = EchoPeer()
    try:
        result = uclient("127.0.0.1", turn_port, "-e", peer.host, "-r", str(peer.port), "-u", username, "-w", password,
                         "-n", "20", "-l", "120", "-z", "5", "-m", "1")
    finally:
        peer.close()
    assert result.sent > 0 and result.received == result.sent and result.lost == 0, result.output[-2000:]


async def test_appliance_reload_changes_a_secret_and_adds_a_turn_key_while_a_call_goes_on(appliance):
    box, text, turn_port = start(appliance)
    async with call_through(box) as call:
        published, subscribed = call.sessions
        username, password = key_credentials(box, "test-key", "test-key-token")
        allocation = TurnUdpClient(("127.0.0.1", turn_port), username, password)
        try:
            assert allocation.allocate().message_class == Class.SUCCESS
            unknown, _ = request("POST", box.url("/v1/turn/keys/new-key/credentials/generate-ice-servers"), b"{}",
                                 {"Authorization": "Bearer new-key-token"})
            assert unknown == 404
            box.config_path.write_text(text.replace(f'secret = "{OLD_SECRET}"', f'secret = "{NEW_SECRET}"')
                                       .replace('id = "test-box"', 'id = "renamed-box"') + NEW_KEY)
            result = await asyncio.to_thread(cli_reload, box)
            assert result.returncode == 0, result.stderr
            assert result.stdout.splitlines()[1:] == [
                "  applied: apps[test-app].secret, turn.keys[new-key]",
                "  needs a restart (the box keeps the running value): node.id"]

            await call.frames(10)  # media goes on flowing
            assert call.connected()
            assert await session_status(box, OLD_SECRET, published) == 401
            assert await session_status(box, NEW_SECRET, published) == 200
            assert await session_status(box, NEW_SECRET, subscribed) == 200
            assert healthz(box)["node"] == "test-box"  # needs a restart: the running value stays
            refreshed = await asyncio.to_thread(allocation.request, Method.REFRESH, (Attr.LIFETIME, 600))
            assert refreshed.message_class == Class.SUCCESS  # the allocation made before lives on
        finally:
            allocation.close()
        await asyncio.to_thread(relays, turn_port, *key_credentials(box, "new-key", "new-key-token"))
        await call.frames(5)
    assert box.proc.poll() is None


async def test_sighup_reloads_the_same_way_and_a_broken_file_changes_nothing(appliance):
    box, text, turn_port = start(appliance)
    async with call_through(box) as call:
        published, _ = call.sessions
        box.config_path.write_text(text.replace(f'secret = "{OLD_SECRET}"', f'secret = "{NEW_SECRET}"') + NEW_KEY)
        box.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + DEADLINE
        while await session_status(box, NEW_SECRET, published) != 200:
            assert time.monotonic() < deadline, box.logs()
            await asyncio.sleep(0.05)
        assert await session_status(box, OLD_SECRET, published) == 401
        assert "reload: reloaded" in box.logs() and "apps[test-app].secret, turn.keys[new-key]" in box.logs()
        await call.frames(10)
        assert call.connected()
        await asyncio.to_thread(relays, turn_port, *key_credentials(box, "new-key", "new-key-token"))

        # Two problems, each on its line: refused whole, by SIGHUP and by `appliance reload`.
        broken = (text.replace(f'secret = "{OLD_SECRET}"', 'secret = "changed-again"')
                  .replace('id = "other-app"', "id = 7").replace('relay_ports = "61000-61999"', 'relay_ports = "a-b"'))
        box.config_path.write_text(broken + NEW_KEY)
        lines = broken.splitlines()
        expected = [f"{box.config_path}:{next(i for i, line in enumerate(lines, 1) if line.startswith(start))}: {key}:"
                    for start, key in (("id = 7", "apps[1].id"), ('relay_ports = "a-b"', "turn.relay_ports"))]
        box.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + DEADLINE
        while "reload refused: nothing changed" not in box.logs():
            assert time.monotonic() < deadline, box.logs()
            await asyncio.sleep(0.05)
        while not all(problem in box.logs() for problem in expected):
            assert time.monotonic() < deadline, box.logs()
            await asyncio.sleep(0.05)
        result = await asyncio.to_thread(cli_reload, box)
        assert result.returncode == 2 and all(problem in result.stderr for problem in expected), result.stderr
        assert await session_status(box, NEW_SECRET, published) == 200
        assert await session_status(box, "changed-again", published) == 401
        await call.frames(5)
        assert call.connected()
