"""The health check a slot on trial must pass: the units' states (as systemctl would say them), then the
box's own /healthz over HTTP, from the configuration the boot step chose."""
from __future__ import annotations

import http.server
import threading

import pytest

from appliance.update.health import probe
from tests.lab.appliance import free_port

ACTIVE = {"appliance-config.service": "active", "appliance-net.service": "inactive", "appliance.service": "active"}


@pytest.fixture
def box(tmp_path):
    """A /healthz on loopback answering what the test sets, and a configuration naming it."""
    answer = {"status": 200}

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(answer["status"] if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    port = free_port()
    server = http.server.HTTPServer(("127.0.0.1", port), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = tmp_path / "appliance.toml"
    config.write_text(f'[api]\nlisten = "127.0.0.1:{port}"\n[turn]\nenabled = false\n')
    yield str(config), answer
    server.shutdown()
    server.server_close()


def test_healthy_when_the_units_run_and_healthz_answers_200(box):
    path, answer = box
    assert probe(path, ACTIVE.get).healthy
    answer["status"] = 503
    health = probe(path, ACTIVE.get)
    assert not health.healthy and not health.final and health.reason.endswith("/healthz answers 503")


@pytest.mark.parametrize("unit", list(ACTIVE))
def test_a_failed_unit_is_final(box, unit):
    health = probe(box[0], (ACTIVE | {unit: "failed"}).get)
    assert (health.healthy, health.final, health.reason) == (False, True, f"{unit} failed")


def test_a_service_still_starting_is_waited_for(box):
    health = probe(box[0], (ACTIVE | {"appliance.service": "activating"}).get)
    assert (health.healthy, health.final, health.reason) == (False, False, "appliance.service is activating")


def test_no_configuration_to_serve_with_is_not_healthy(tmp_path):
    health = probe(str(tmp_path / "missing.toml"), ACTIVE.get)
    assert not health.healthy and health.reason.startswith("no configuration to serve with")
