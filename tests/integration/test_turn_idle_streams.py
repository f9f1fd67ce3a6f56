"""Idle TURN TCP/TLS connections cannot exhaust the box's files (issue 12, item 3).

The attack: 1,100 TCP connections to the TURN port that never send a byte, against a process
started with systemd's default soft limit of 1024 files; Allocate then answered 508 and the API
reset connections. The box lifts its own limit, closes connections that hold no allocation
after `stream_idle_timeout` (short here), and bounds a TLS handshake that never completes alike.
"""
import json
import re
import resource
import selectors
import socket
import time

import pytest

from appliance.stun import Class, Message
from tests.lab.appliance import box_config, free_port, request
from tests.lab.tls import self_signed
from tests.lab.turn_client import allocate_over_tcp

IDLE = 1100
TIMEOUT = 1  # [turn] stream_idle_timeout for the test
GUARD = 30.0  # only against a hang: the test never measures how long the closing took


@pytest.fixture
def low_soft_limit():
    """Children start with a soft limit of 1024 files, as under systemd's default; this process
    keeps its hard limit, which the idle connections need."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < IDLE + 200:
        pytest.skip(f"the hard limit on open files ({hard}) is below {IDLE + 200}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    yield lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.fixture
def box(appliance, low_soft_limit, tmp_path):
    cert, key = self_signed(tmp_path)
    turn, tls, api = free_port("udp", "tcp"), free_port("tcp"), free_port("tcp")
    text = box_config(api, free_port("udp"), turn).replace(
        f'listen = ["udp://127.0.0.1:{turn}", "tcp://127.0.0.1:{turn}"]',
        f'listen = ["udp://127.0.0.1:{turn}", "tcp://127.0.0.1:{turn}", "tls://127.0.0.1:{tls}"]\n'
        f'tls_cert = "{cert}"\ntls_key = "{key}"\nstream_idle_timeout = {TIMEOUT}',
    )
    running = appliance(text)
    low_soft_limit()  # the box started with 1024; the idle connections are this process's files
    running.turn, running.tls = ("127.0.0.1", turn), ("127.0.0.1", tls)
    return running


def _allocate_over_tcp(box) -> Message:
    """An Allocate over a new TCP connection, with credentials the API mints for the box's key."""
    status, raw = request(
        "POST", box.url("/v1/turn/keys/test-key/credentials/generate-ice-servers"),
        body=json.dumps({"ttl": 600}).encode(), headers={"Authorization": "Bearer test-key-token"},
    )
    assert status == 201
    server = json.loads(raw)["iceServers"][-1]
    return allocate_over_tcp(box.turn, server["username"], server["credential"])


def _wait_until_all_closed(sockets: list[socket.socket]) -> None:
    """Until the box has closed every one (EOF or reset); the guard only stops a hang."""
    selector = selectors.DefaultSelector()
    for sock in sockets:
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
    open_ = len(sockets)
    deadline = time.monotonic() + GUARD
    while open_ and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=1.0):
            try:
                data = key.fileobj.recv(1)
            except ConnectionResetError:
                data = b""
            assert data == b"", "the box sent bytes on an idle connection"
            selector.unregister(key.fileobj)
            open_ -= 1
    selector.close()
    assert open_ == 0, f"{open_} of {len(sockets)} idle connections still open"


def _metric(box, name: str) -> float:
    status, body = box.get("/metrics")
    assert status == 200
    match = re.search(rf"^{re.escape(name)} (\S+)$", body.decode(), re.M)
    return float(match.group(1)) if match else 0.0


def _wait_for_no_streams(box) -> None:
    """Until the box has let go of every client connection it closed (the cap counts them until then)."""
    deadline = time.monotonic() + GUARD
    while _metric(box, "edgecall_turn_streams") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _metric(box, "edgecall_turn_streams") == 0


def test_idle_tcp_connections_are_closed_and_allocate_still_works(box):
    idle = [socket.create_connection(box.turn) for _ in range(IDLE)]
    try:
        # With all of them open: more files than systemd's default soft limit, and the box still serves.
        assert _allocate_over_tcp(box).message_class == Class.SUCCESS
        assert box.get("/healthz")[0] == 200
        _wait_until_all_closed(idle)
    finally:
        for sock in idle:
            sock.close()
    assert _metric(box, 'edgecall_turn_dropped_total{reason="idle_streams"}') >= IDLE
    _wait_for_no_streams(box)
    assert _allocate_over_tcp(box).message_class == Class.SUCCESS


def test_a_tls_handshake_that_never_completes_is_closed(box):
    silent = [socket.create_connection(box.tls) for _ in range(20)]
    try:
        _wait_until_all_closed(silent)
    finally:
        for sock in silent:
            sock.close()
    _wait_for_no_streams(box)
