"""Fixture: Debian's Firefox ESR driven through Marionette (Playwright's own Firefox cannot be
downloaded here). ../shared/TESTING.md has the prefs fake media needs: without
`media.navigator.permission.fake` Firefox treats the fake camera as no capture and gathers no
loopback candidates, so ICE to a 127.0.0.1 server never starts."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from .appliance import free_port

FIREFOX = os.environ.get("EDGECALL_FIREFOX", "/usr/bin/firefox-esr")
PREFS = {
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.navigator.permission.fake": True,
    "media.peerconnection.ice.loopback": True,
    # The network is closed: nothing in the background may try to leave the machine.
    "app.update.enabled": False,
    "app.normandy.enabled": False,
    "browser.shell.checkDefaultBrowser": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
}
START_DEADLINE = 60.0


@pytest.fixture
def firefox(tmp_path: Path):
    """A headless Firefox ESR with fake camera and microphone: a Marionette client (scripts run with
    `sandbox=None` reach the page's own globals)."""
    if not shutil.which(FIREFOX):
        pytest.skip(f"Firefox ESR not found at {FIREFOX} (./build.sh setup installs Debian's firefox-esr)")
    from marionette_driver.marionette import Marionette

    port = free_port("tcp")
    profile = tmp_path / "firefox-profile"
    profile.mkdir()
    prefs = {**PREFS, "marionette.port": port}
    (profile / "user.js").write_text("".join(f'user_pref("{k}", {json.dumps(v)});\n' for k, v in prefs.items()))
    proc = subprocess.Popen([FIREFOX, "--headless", "--marionette", "--no-remote", "--profile", str(profile)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    client = None
    try:
        deadline = time.monotonic() + START_DEADLINE
        while client is None:
            try:
                client = Marionette(host="127.0.0.1", port=port, startup_timeout=5)
                client.start_session()
            except Exception:  # noqa: BLE001 - not listening yet: Marionette raises several kinds
                client = None
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Firefox ESR did not start Marionette on port {port}") from None
                time.sleep(0.5)
        client.timeout.script = 60
        yield client
    finally:
        if client is not None:
            try:
                client.delete_session()
            except Exception:  # noqa: BLE001 - the browser may be gone already
                pass
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

