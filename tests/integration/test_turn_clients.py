"""The TURN service against coturn's own client, `turnutils_uclient`, with `turnutils_peer` echoing.

Loopback is opened on purpose in the box's config (`allow_peers`), as the issue asks of tests.
"""
import json
import shutil
import socket
import time

import pytest

from appliance.stun import Attr
from appliance.turn import parse_username
from tests.lab.appliance import box_config, free_port, has_ipv6_loopback, request
from tests.lab.tls import self_signed
from tests.lab.turn_client import EchoPeer, TurnUdpClient, run_uclient, uclient

pytestmark = pytest.mark.skipif(not shutil.which("turnutils_uclient"), reason="coturn's turnutils are not installed")

SECRET = "test-rest-secret"
MESSAGES = ["-n", "40", "-l", "120", "-z", "5", "-m", "2"]


@pytest.fixture(scope="module")
def turn_box(tmp_path_factory):
    """One box for the module: TURN on UDP, TCP, TLS and IPv6 UDP, relays on 127.0.0.1 and ::1."""
    tmp = tmp_path_factory.mktemp("turn")
    cert, key = self_signed(tmp)
    plain, tls, api = free_port("udp", "tcp"), free_port("tcp"), free_port("tcp")
    v6 = has_ipv6_loopback()
    listen = [f"udp://127.0.0.1:{plain}", f"tcp://127.0.0.1:{plain}", f"tls://127.0.0.1:{tls}"]
    if v6:
        listen.append(f"udp://[::1]:{plain}")
    text = box_config(api, free_port("udp"), plain).replace(
        f'listen = ["udp://127.0.0.1:{plain}", "tcp://127.0.0.1:{plain}"]',
        f"listen = {json.dumps(listen)}\ntls_cert = \"{cert}\"\ntls_key = \"{key}\""
        + ('\nrelay_address_v6 = "::1"' if v6 else ""),
    )
    return text, {"plain": plain, "tls": tls, "v6": v6}


@pytest.fixture
def box(appliance, turn_box):
    text, ports = turn_box
    running = appliance(text)
    running.ports = ports
    return running


@pytest.fixture
def peer():
    p = EchoPeer()
    yield p
    p.close()


def _ice_servers(box, path="generate-ice-servers", body=None):
    status, raw = request(
        "POST", box.url(f"/v1/turn/keys/test-key/credentials/{path}"),
        body=json.dumps(body or {"ttl": 600}).encode(), headers={"Authorization": "Bearer test-key-token"},
    )
    return status, json.loads(raw) if raw else None


def _credentials(box, **body):
    status, answer = _ice_servers(box, body=body or None)
    assert status == 201
    turn = answer["iceServers"][-1]
    return turn["username"], turn["credential"]


def _assert_no_loss(result):
    assert result.sent > 0 and result.received == result.sent and result.lost == 0, result.output[-2000:]


@pytest.mark.parametrize(
    "mode, flags",
    [
        ("udp channel", []),
        ("udp send indications", ["-s"]),
        ("tcp", ["-t"]),
        ("tcp send indications", ["-t", "-s"]),
        ("dont-fragment", ["-g"]),
    ],
)
def test_uclient_with_api_credentials_relays_without_loss(box, peer, mode, flags):
    username, password = _credentials(box, ttl=600, customIdentifier="user-1")
    result = uclient("127.0.0.1", box.ports["plain"], "-e", peer.host, "-r", str(peer.port), "-u", username,
                     "-w", password, *MESSAGES, *flags)
    _assert_no_loss(result)


def test_uclient_over_tls(box, peer):
    username, password = _credentials(box)
    result = uclient("127.0.0.1", box.ports["tls"], "-t", "-S", "-e", peer.host, "-r", str(peer.port), "-u", username,
                     "-w", password, *MESSAGES)
    _assert_no_loss(result)


def test_uclient_with_the_rest_secret(box, peer):
    result = uclient("127.0.0.1", box.ports["plain"], "-e", peer.host, "-r", str(peer.port), "-W", SECRET,
                     "-u", "user-2", *MESSAGES)
    _assert_no_loss(result)


def test_uclient_ipv6_relay(box):
    if not box.ports["v6"]:
        pytest.skip("no IPv6 loopback on this machine")
    peer6 = EchoPeer("::1")
    try:
        result = uclient("::1", box.ports["plain"], "-x", "-e", "::1", "-r", str(peer6.port), "-W", SECRET,
                         "-u", "user-6", *MESSAGES)
    finally:
        peer6.close()
    _assert_no_loss(result)


def test_uclient_tcp_relay_rfc6062(box):
    result = uclient("127.0.0.1", box.ports["plain"], "-T", "-W", SECRET, "-u", "user-t", *MESSAGES)
    _assert_no_loss(result)


def test_wrong_password_is_refused(box, peer):
    status, output = run_uclient("127.0.0.1", box.ports["plain"], "-e", peer.host, "-r", str(peer.port),
                                 "-W", "not-the-secret", "-u", "user-x", "-n", "3", "-m", "1")
    assert status != 0 and "Cannot complete Allocation" in output


def test_credentials_api_shapes(box):
    status, answer = _ice_servers(box)
    assert status == 201
    stun, turn = answer["iceServers"]
    plain, tls = box.ports["plain"], box.ports["tls"]
    assert f"stun:127.0.0.1:{plain}" in stun["urls"]
    assert turn["urls"][:3] == [f"turn:127.0.0.1:{plain}?transport=udp", f"turn:127.0.0.1:{plain}?transport=tcp",
                                f"turns:127.0.0.1:{tls}?transport=tcp"]
    expiry, identifier = parse_username(turn["username"])
    assert 590 <= expiry - time.time() <= 610 and identifier == ""
    status, legacy = _ice_servers(box, "generate", {"ttl": 10**9, "customIdentifier": "user4523958"})
    assert status == 201 and isinstance(legacy["iceServers"], dict)
    expiry, identifier = parse_username(legacy["iceServers"]["username"])
    assert identifier == "user4523958"
    assert expiry - time.time() <= 48 * 3600  # the TTL is capped
    status, error = _ice_servers(box, body={"ttl": "long"})
    assert status == 400 and error["errorCode"] == "invalid_params"


def test_a_revoked_credential_loses_its_allocation_and_cannot_allocate_again(box):
    username, password = _credentials(box)
    client = TurnUdpClient(("127.0.0.1", box.ports["plain"]), username, password)
    try:
        allocated = client.allocate()
        assert Attr.XOR_RELAYED_ADDRESS in allocated, allocated
        status, _ = request("POST", box.url(f"/v1/turn/keys/test-key/credentials/{username}/revoke"),
                            headers={"Authorization": "Bearer test-key-token"})
        assert status == 204
        refreshed = client.request(0x004, (Attr.LIFETIME, 600))  # Refresh
        assert refreshed.get(Attr.ERROR_CODE)[0] in (401, 437), refreshed
        again = TurnUdpClient(("127.0.0.1", box.ports["plain"]), username, password)
        try:
            assert again.allocate().get(Attr.ERROR_CODE)[0] == 401
        finally:
            again.close()
    finally:
        client.close()
    status, _ = request("POST", box.url("/v1/turn/keys/test-key/credentials/not-a-username/revoke"),
                        headers={"Authorization": "Bearer test-key-token"})
    assert status == 404


def test_turn_metrics(box, peer):
    username, password = _credentials(box, customIdentifier="metered")
    _assert_no_loss(uclient("127.0.0.1", box.ports["plain"], "-e", peer.host, "-r", str(peer.port), "-u", username,
                            "-w", password, "-n", "10", "-m", "1", "-l", "100", "-c"))
    status, body = box.get("/metrics")
    text = body.decode()
    line = next(l for l in text.splitlines() if l.startswith('edgecall_turn_bytes_to_client_total{identifier="metered"}'))
    assert float(line.split()[-1]) >= 1000
    assert 'edgecall_turn_dropped_total{reason="no_permission"}' in text
    assert 'edgecall_turn_dropped_by_identifier_total{identifier="metered"}' in text
    # Prometheus refuses a whole scrape that names a metric family twice.
    families = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert len(families) == len(set(families)), sorted(f for f in families if families.count(f) > 1)


def test_stun_binding_is_answered_on_every_listener(box):
    """The STUN service: a Binding request on UDP, TCP and TLS gets the client's own address back."""
    import ssl

    from appliance.stun import Class, Message, Method, StreamFramer

    def over_stream(sock):
        request = Message(Method.BINDING, Class.REQUEST)
        sock.sendall(request.encode(fingerprint=True))
        framer = StreamFramer()
        while (frame := framer.next()) is None:
            framer.feed(sock.recv(2048))
        return request, Message.parse(frame), sock.getsockname()

    results = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(5)
        request = Message(Method.BINDING, Class.REQUEST)
        udp.sendto(request.encode(), ("127.0.0.1", box.ports["plain"]))
        results.append((request, Message.parse(udp.recv(2048)), udp.getsockname()))
    with socket.create_connection(("127.0.0.1", box.ports["plain"]), timeout=5) as tcp:
        results.append(over_stream(tcp))
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", box.ports["tls"]), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            results.append(over_stream(tls))
    for request, response, local in results:
        assert response.message_class == Class.SUCCESS and response.transaction_id == request.transaction_id
        assert tuple(response.get(Attr.XOR_MAPPED_ADDRESS)) == ("127.0.0.1", local[1])
