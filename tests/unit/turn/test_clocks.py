"""The TURN core's two clocks. Lifetimes, timers, rates, nonces and usage run on `now`, the event loop's
monotonic time; only what is stamped in Unix time, REST usernames' expiries, is read on the wall clock.
A step of either clock moves only what is measured on it."""
import asyncio

import pytest

from appliance.config import parse_config
from appliance.runner import Box
from appliance.stun import Attr, Class, Method
from appliance.turn import CloseRelay, parse_username
from appliance.turn.nonce import Nonces
from appliance.turn.service import TurnService
from tests.lab.appliance import free_port
from tests.lab.turn_client import TurnUdpClient
from tests.unit.turn.harness import NOW, PEER, Lab, error_code, ok

GUARD = 30.0  # only against a hang: nothing here measures how long a timer took


def test_a_credential_is_refused_once_the_wall_clock_passes_its_expiry_however_little_now_moved():
    lab = Lab()
    client = lab.client(ttl=60)
    ok(client.allocate())
    lab.wall = NOW + 61  # the host's clock was set ahead (or it slept): by Unix time the username has expired
    assert error_code(client.request(Method.REFRESH, now=NOW + 1)) == 401


@pytest.mark.parametrize("step", [-86400.0, 365 * 86400.0])
def test_an_allocations_lifetime_permissions_and_usage_follow_now_whatever_the_wall_clock_does(step):
    lab = Lab()
    client = lab.client()
    ok(client.allocate())  # 600 s
    ok(client.request(Method.CREATE_PERMISSION, (Attr.XOR_PEER_ADDRESS, PEER)))  # 300 s
    relay = next(iter(lab.binder.udp))
    lab.wall = NOW + step
    lab.server.handle_timer(NOW + 299)
    assert lab.server.from_peer(relay, b"x", PEER, NOW + 299) is not None
    assert lab.server.usage_by_identifier(NOW + 299)["alice"].seconds == 299
    lab.server.handle_timer(NOW + 300)
    assert lab.server.from_peer(relay, b"x", PEER, NOW + 300) is None
    lab.server.handle_timer(NOW + 599)
    assert len(lab.server.allocations) == 1
    lab.server.handle_timer(NOW + 600)
    assert not lab.server.allocations and CloseRelay(relay) in lab.take_events()
    assert lab.server.usage_by_identifier(NOW + 600)["alice"].seconds == 600


@pytest.mark.parametrize("step", [-1000.0, 1000.0])
def test_a_nonce_is_fresh_for_its_lifetime_on_now_whatever_the_wall_clock_does(step):
    lab = Lab()  # nonces last 600 s
    client = lab.client()
    ok(client.allocate())
    nonce = client.nonce
    lab.wall = NOW + step  # the username (an hour) is in force either way
    ok(client.request(Method.REFRESH, now=NOW + 599))
    assert client.nonce == nonce  # no 438 on the way
    ok(client.request(Method.REFRESH, now=NOW + 600))
    assert client.nonce != nonce  # stale: 438, and the retry with a fresh one succeeded


def test_a_nonce_does_not_give_away_how_long_the_box_has_been_up():
    uptime = 5000.0
    nonce = Nonces(600, key=b"k" * 32).issue("198.51.100.1", uptime)
    assert int(nonce[:-24], 16) != int(uptime)
    assert Nonces(600, key=b"other").issue("198.51.100.1", uptime)[:-24] != nonce[:-24]


def test_a_revocation_holds_while_the_wall_clock_set_back_keeps_the_credential_in_force():
    lab = Lab()
    client = lab.client(ttl=3600)
    ok(client.allocate())
    assert lab.server.revoke(client.username, NOW) == 1
    assert lab.server.revocations.next_expiry() == NOW + 3600  # when the wall clock should reach the expiry
    lab.wall = NOW + 2600  # set back 1000 s meanwhile: the username is in force for 1000 s more
    lab.server.handle_timer(NOW + 3600)
    assert client.username in lab.server.revocations
    assert error_code(client.allocate(now=NOW + 3600)) == 401
    assert lab.server.revocations.next_expiry() == NOW + 4600
    lab.wall = NOW + 3600
    lab.server.handle_timer(NOW + 4600)
    assert client.username not in lab.server.revocations


# --- the shell: the event loop's clock and the service's wall clock ------------------------------------


def _config(state_dir, turn_port: int):
    return parse_config(f"""
[node]
state_dir = "{state_dir}"
[sfu]
enabled = false
[turn]
listen = ["udp://127.0.0.1:{turn_port}", "tcp://127.0.0.1:{turn_port}"]
secrets = ["rest-secret"]
relay_ports = "61100-61199"
stream_idle_timeout = 0.2
""", "test.toml")


async def test_the_service_runs_the_core_on_the_loops_clock_and_expiries_on_its_wall_clock(tmp_path):
    port = free_port("udp", "tcp")
    wall = 2_000_000_000  # 2033: by the host's clock these credentials are years from being minted
    service = TurnService(Box(_config(tmp_path, port)), wall=lambda: wall)
    await service.start()
    try:
        username, password = service.mint(3600, "alice")
        assert parse_username(username) == (wall + 3600, "alice")
        client = TurnUdpClient(("127.0.0.1", port), username, password)
        try:
            assert (await asyncio.to_thread(client.allocate)).message_class == Class.SUCCESS
        finally:
            client.close()
        [allocation] = service.core.allocations
        loop = asyncio.get_running_loop()
        assert allocation.created <= loop.time() < allocation.expires <= allocation.created + 600
        # The core's timer fires on the loop's clock: a connection that holds nothing is closed.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            assert await asyncio.wait_for(reader.read(), GUARD) == b""
        finally:
            writer.close()
    finally:
        await service.stop()
