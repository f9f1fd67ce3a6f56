"""The control socket, the drain state and what /healthz and /metrics make of them, in-process."""
from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from appliance import control
from appliance.api.server import make_app
from appliance.config import parse_config
from appliance.control import ControlService, Untrusted, socket_path
from appliance.service import StartError
from appliance.runner import Box
from tests.lab.appliance import free_port

REPORT = {
    "announced": True,
    "state": "announced",
    "probes": {"api": {"ok": True, "detail": "ok"}, "turn udp://203.0.113.10:3478": {"ok": False, "detail": "timeout"}},
    "bgp": {"sessions": [{"name": "peer_192_0_2_1", "neighbor": "192.0.2.1", "asn": 65000, "state": "up",
                          "info": "Established", "since": "12:00:00", "exported": ["203.0.113.10/32"]}],
            "announced": ["203.0.113.10/32"], "error": None},
}


@pytest.fixture
def runtime(monkeypatch):
    """The box's runtime directory, the tests' own (short: a socket's path has at most 107 bytes)."""
    directory = tempfile.mkdtemp(prefix="ec-")
    monkeypatch.setattr(control, "SYSTEM_DIR", os.path.join(directory, "edgecall"))
    os.mkdir(control.SYSTEM_DIR, 0o700)
    yield directory
    shutil.rmtree(directory)


def config_of_a_box():
    # api.listen names the control socket; nothing listens on the port itself here.
    return parse_config(f'[api]\nlisten = "127.0.0.1:{free_port()}"\n[turn]\nenabled = false\n', "test.toml")


@pytest.fixture
async def box(runtime):
    the_box = Box(config_of_a_box())
    service = ControlService(the_box)
    the_box.services.append(service)
    await service.start()
    yield the_box
    await service.stop()


async def ask(box, command: str, **fields):
    return await asyncio.to_thread(control.request, box.config, command, **fields)


async def test_drain_and_undrain_toggle_the_state(box):
    assert (await ask(box, "status"))["draining"] is False
    answer = await ask(box, "drain")
    assert answer["ok"] and answer["draining"] and answer["draining_for"] >= 0
    assert box.drain.active
    assert (await ask(box, "undrain"))["draining"] is False
    assert not box.drain.active


async def test_reports_are_kept_with_their_age(box):
    assert (await ask(box, "status"))["agent"] is None
    await ask(box, "report", report=REPORT)
    agent = (await ask(box, "status"))["agent"]
    assert agent["state"] == "announced" and agent["age_seconds"] >= 0
    assert agent["bgp"]["sessions"][0]["name"] == "peer_192_0_2_1"


async def test_bad_requests_are_answered_not_fatal(box):
    assert "unknown command" in (await ask(box, "reboot"))["error"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        await asyncio.to_thread(sock.connect, socket_path(box.config))
        await asyncio.to_thread(sock.sendall, b"not json\n")
        answer = json.loads(await asyncio.to_thread(sock.recv, 4096))
    assert answer["ok"] is False and "expected one JSON object" in answer["error"]
    assert (await ask(box, "status"))["ok"]


async def test_a_second_box_on_the_same_api_endpoint_cannot_take_the_socket(box):
    with pytest.raises(StartError, match="another box with this api.listen answers on it"):
        await ControlService(Box(box.config)).start()
    assert (await ask(box, "status"))["ok"]


async def test_the_socket_of_a_box_that_died_is_replaced_and_a_stopped_box_removes_its_own(runtime):
    config = config_of_a_box()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(socket_path(config))
    service = ControlService(Box(config))
    await service.start()
    assert (await asyncio.to_thread(control.request, config, "status"))["ok"]
    await service.stop()
    assert os.listdir(control.SYSTEM_DIR) == []


# --- attacks: another local user must neither keep the box from starting nor answer in its name ---

NOBODY = pwd.getpwnam("nobody").pw_uid
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user takes root")

# Binds `path` (@name: an abstract socket), then serves as `uid` when given (the venv may be root's
# alone; listen() records who serves, as SO_PEERCRED reports), answering every command as the box would.
IMPOSTOR = r"""
import json, os, socket, sys
path, uid = sys.argv[1], int(sys.argv[2])
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind("\0" + path[1:] if path.startswith("@") else path)
if uid >= 0:
    os.setuid(uid)
server.listen()
print("ready", flush=True)
while True:
    client, _ = server.accept()
    client.recv(65536)
    client.sendall(json.dumps({"ok": True, "node": "impostor", "draining": False}).encode() + b"\n")
    client.close()
"""


@pytest.fixture
def impostor():
    started = []

    def start(path: str, uid: int = -1) -> None:
        proc = subprocess.Popen([sys.executable, "-c", IMPOSTOR, path, str(uid)], stdout=subprocess.PIPE, text=True)
        started.append(proc)
        assert proc.stdout.readline() == "ready\n"

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


async def test_a_squatter_on_the_old_abstract_name_neither_stops_the_box_nor_answers_for_it(runtime, impostor):
    config = config_of_a_box()
    impostor(f"@edgecall/control/{config.api.listen}", NOBODY if os.geteuid() == 0 else -1)
    service = ControlService(Box(config))
    await service.start()
    try:
        assert (await asyncio.to_thread(control.request, config, "status"))["node"] == "edge-1"
    finally:
        await service.stop()


@as_root
async def test_a_directory_another_user_made_first_is_refused_by_box_and_client(runtime, impostor, monkeypatch):
    # Where no runtime directory is given (/tmp/edgecall-<uid>), another user may make it first, with a socket in it.
    shared = os.path.join(runtime, "tmp")
    os.mkdir(shared)
    os.chmod(shared, 0o1777)
    monkeypatch.setattr(control, "SYSTEM_DIR", os.path.join(shared, "edgecall-0"))
    os.mkdir(control.SYSTEM_DIR, 0o755)
    os.chown(control.SYSTEM_DIR, NOBODY, NOBODY)
    config = config_of_a_box()
    impostor(socket_path(config), NOBODY)
    with pytest.raises(StartError, match=rf"edgecall-0 is owned by uid {NOBODY}, not by root or by this user"):
        await ControlService(Box(config)).start()
    with pytest.raises(Untrusted, match=f"owned by uid {NOBODY}"):
        control.request(config, "status")


@as_root
async def test_the_client_refuses_a_server_of_another_user(runtime, impostor):
    config = config_of_a_box()
    impostor(socket_path(config), NOBODY)
    with pytest.raises(Untrusted, match=rf"served by uid {NOBODY}, neither root nor the directory's owner \(uid 0\)"):
        control.request(config, "status")


async def test_a_directory_others_can_write_to_is_refused(runtime):
    os.chmod(control.SYSTEM_DIR, 0o777)
    config = config_of_a_box()
    with pytest.raises(StartError, match=r"edgecall is not a directory that only its owner can write to \(drwxrwxrwx\)"):
        await ControlService(Box(config)).start()
    with pytest.raises(Untrusted, match="only its owner can write to"):
        control.request(config, "status")


async def test_healthz_says_draining_with_503_and_metrics_show_it(box):
    async with TestClient(TestServer(make_app(box))) as client:
        res = await client.get("/healthz")
        assert res.status == 200 and (await res.json())["draining"] is False
        box.drain.start(0.0, "test")
        box.agent.update(REPORT, 0.0)
        res = await client.get("/healthz")
        body = await res.json()
        assert res.status == 503 and body["status"] == "draining" and body["draining"] is True
        assert body["details"]["agent"]["probes"]["api"]["ok"] is True
        families = {f.name: f for f in text_string_to_metric_families(await (await client.get("/metrics")).text())}
    samples = {(f, tuple(sorted(s.labels.items()))): s.value for f in families for s in families[f].samples}
    assert samples[("edgecall_draining", ())] == 1
    assert samples[("edgecall_anycast_announced", ())] == 1
    assert samples[("edgecall_anycast_prefix_exported", (("prefix", "203.0.113.10/32"),))] == 1
    assert samples[("edgecall_bgp_session_established", (("neighbor", "192.0.2.1"), ("session", "peer_192_0_2_1")))] == 1
    assert samples[("edgecall_probe_ok", (("probe", "turn udp://203.0.113.10:3478"),))] == 0
    assert samples[("edgecall_announce_report_age_seconds", ())] > 0


def test_drain_time_already_served_counts():
    box = Box(parse_config("", "test.toml"))
    assert box.drain.remaining(10.0, 100.0) == 0.0
    box.drain.start(100.0, "appliance drain")
    box.drain.start(104.0, "stopping")  # already draining: the first start counts
    assert box.drain.remaining(10.0, 104.0) == 6.0
    assert box.drain.remaining(10.0, 120.0) == 0.0


def test_the_service_unit_makes_the_directory_the_box_and_its_clients_use():
    unit = (Path(__file__).parents[2] / "systemd" / "appliance.service").read_text()
    assert f"RuntimeDirectory={os.path.basename(control.SYSTEM_DIR)}\n" in unit
    assert "RuntimeDirectoryMode=0700\n" in unit and control.SYSTEM_DIR == "/run/edgecall"
