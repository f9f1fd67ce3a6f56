"""The real `appliance` process: start, serve, signals, systemd notify, refusing bad input."""
import json
import signal
import socket
import subprocess

from tests.lab.appliance import APPLIANCE, REPO, box_config, free_port, healthz, request


def test_serves_healthz_and_stops_cleanly_on_sigterm(appliance):
    box = appliance(args=("--log-format", "json"))
    assert healthz(box) | {"status_code": 200, "status": "ok", "node": "test-box"} == healthz(box)
    assert any("is serving" in line for line in box.stdout_lines)
    # An operator's secrets go to the journal masked (only generated demo defaults are printed whole).
    assert any("id test-app  secret tes…" in line for line in box.stdout_lines)
    assert not any("test-app-secret" in line for line in box.stdout_lines)
    assert box.stop(signal.SIGTERM) == 0
    events = [json.loads(line) for line in box.logs().splitlines()]
    assert [e["msg"] for e in events if e["logger"] == "runner"][-2:] == ["stopping", "stopped"]


def test_ctrl_c_stops_it(appliance):
    box = appliance()
    assert box.stop(signal.SIGINT) == 0


def test_sdnotify_ready_watchdog_and_stopping(appliance, tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(10)
        box = appliance(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
        messages = [sock.recv(1000).decode() for _ in range(3)]
        assert messages[0].startswith("READY=1")
        assert "WATCHDOG=1" in messages[1:]
        box.stop()
        rest = []
        while "STOPPING=1" not in rest:
            rest.append(sock.recv(1000).decode())
    assert rest[-1] == "STOPPING=1"


def test_a_bad_config_starts_nothing(tmp_path):
    api = free_port("tcp")
    bad = tmp_path / "bad.toml"
    bad.write_text(box_config(api, free_port("udp"), free_port("udp", "tcp"), '\n[bgp]\nlocal_asn = "x"\nrouter_id = "192.0.2.1"\n'))
    result = subprocess.run([*APPLIANCE, "run", "--config", str(bad)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert f'{bad}:' in result.stderr and 'bgp.local_asn: expected an AS number' in result.stderr
    assert "is serving" not in result.stdout
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", api))  # nothing was left listening on the API port


def test_a_taken_port_is_named_and_nothing_is_left_running(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "c.toml"
        config.write_text(box_config(port, free_port("udp"), free_port("udp", "tcp")))
        result = subprocess.run([*APPLIANCE, "run", "--config", str(config)], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (api.listen): address already in use" in result.stderr


def test_check_config_command(tmp_path):
    bad = tmp_path / "three.toml"
    bad.write_text('[api]\nlisten = "127.0.0.1:99999"\n\n[sfu]\nudp = "[::1]"\n\n[turn]\nrelay_ports = "1-2-3"\n')
    result = subprocess.run([*APPLIANCE, "check-config", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    problems = [line for line in result.stderr.splitlines() if line.startswith(str(bad))]
    assert [p.split(":")[1:3] for p in problems] == [["2", " api.listen"], ["5", " sfu.udp"], ["8", " turn.relay_ports"]]


def test_api_over_a_real_socket(appliance):
    box = appliance()
    status, body = request("POST", box.url("/v1/apps/test-app/sessions/new"), headers={"Authorization": "Bearer other-app-secret"})
    assert status == 401 and json.loads(body)["errorCode"] == "unauthorized"
    status, body = box.get("/metrics")
    assert status == 200 and b"edgecall_service_up" in body
