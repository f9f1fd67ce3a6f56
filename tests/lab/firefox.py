"""Fixtures: Debian's Firefox ESR driven through Marionette (Playwright's own Firefox cannot be
downloaded here), on loopback (`firefox`) or inside a lab host's network namespace (`firefox_in`).
../shared/TESTING.md has the prefs fake media needs: without `media.navigator.permission.fake`
Firefox treats the fake camera as no capture and gathers no loopback candidates, so ICE to a
127.0.0.1 server never starts."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from .appliance import free_port
from .netns import enter_netns

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
SCRIPT_TIMEOUT = 60  # seconds a script may take (a pull waits for the PeerConnection to connect)
MARIONETTE_PORT = 2828  # inside a lab namespace, whose loopback is its own


def write_profile(profile: Path, prefs: dict[str, Any]) -> None:
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "user.js").write_text("".join(f'user_pref("{k}", {json.dumps(v)});\n' for k, v in prefs.items()))


def command(profile: Path) -> list[str]:
    return [FIREFOX, "--headless", "--marionette", "--no-remote", "--profile", str(profile)]


def connect(port: int, process: subprocess.Popen):
    """A Marionette session with the Firefox `process` once it listens on `port` (in the calling
    thread's network namespace)."""
    from marionette_driver.marionette import Marionette

    deadline = time.monotonic() + START_DEADLINE
    while True:
        client = Marionette(host="127.0.0.1", port=port, startup_timeout=5)
        try:
            client.start_session()
        except Exception:  # noqa: BLE001 - not listening yet: Marionette raises several kinds
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Firefox ESR did not start Marionette on port {port}") from None
            time.sleep(0.5)
            continue
        client.timeout.script = SCRIPT_TIMEOUT
        return client


def close(client, process: subprocess.Popen) -> None:
    if client is not None:
        try:
            client.delete_session()
        except Exception:  # noqa: BLE001 - the browser may be gone already
            pass
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _skip_without_firefox() -> None:
    if not shutil.which(FIREFOX):
        pytest.skip(f"Firefox ESR not found at {FIREFOX} (./build.sh setup installs Debian's firefox-esr)")


@pytest.fixture
def firefox(tmp_path: Path):
    """A headless Firefox ESR with fake camera and microphone: a Marionette client (scripts run with
    `sandbox=None` reach the page's own globals)."""
    _skip_without_firefox()
    port = free_port("tcp")
    profile = tmp_path / "firefox-profile"
    write_profile(profile, {**PREFS, "marionette.port": port})
    process = subprocess.Popen(command(profile), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    client = None
    try:
        client = connect(port, process)
        yield client
    finally:
        close(client, process)


# --- Firefox inside a lab namespace ------------------------------------------------------------------

# Wraps a Playwright-style page function (`async (arg) => value`) for Marionette, whose async
# scripts are function bodies that call their last argument with the result.
EVALUATE = """
const [arg, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => (%s)(arg))().then(value => done({value: value === undefined ? null : value}),
                                e => done({error: String(e && e.stack || e)}));
"""


class FirefoxPage:
    """One window of a `FirefoxBrowser`, with the part of Playwright's Page the lab tests use
    (`goto`, `add_script_tag`, `evaluate`), so that the same helpers drive either engine."""

    def __init__(self, browser: FirefoxBrowser, handle: str) -> None:
        self.browser = browser
        self.handle = handle

    async def goto(self, url: str) -> None:
        await self.browser.run(self.handle, lambda client: client.navigate(url))

    async def add_script_tag(self, content: str) -> None:
        await self.browser.run(self.handle, lambda client: client.execute_script(content, sandbox=None))

    async def evaluate(self, script: str, arg: Any = None) -> Any:
        """`script` (a JavaScript function) called with `arg` in the page; its (awaited) value."""
        result = await self.browser.run(self.handle, lambda client: client.execute_async_script(
            EVALUATE % script, script_args=[arg], sandbox=None))
        if "error" in result:
            raise RuntimeError(f"Firefox: {result['error']}")
        return result["value"]

    async def click(self, selector: str) -> None:
        await self.evaluate("(selector) => document.querySelector(selector).click()", selector)


class FirefoxBrowser:
    """A Firefox running in a lab namespace. Marionette listens on the namespace's own loopback, so
    every call goes through one thread that lives in that namespace (and serializes the calls,
    which Marionette needs: one session, one current window)."""

    def __init__(self, client, executor: ThreadPoolExecutor, window: str) -> None:
        self.client = client
        self.executor = executor
        self.current = window  # the window Marionette's calls act on
        self.unused: str | None = window  # the window Firefox opened with, until a page takes it

    async def run(self, handle: str | None, call: Callable[[Any], Any]) -> Any:
        """`call(client)` on the namespace's thread, with window `handle` current."""
        def switched():
            if handle is not None and handle != self.current:
                self.client.switch_to_window(handle, focus=False)
                self.current = handle
            return call(self.client)
        return await asyncio.get_running_loop().run_in_executor(self.executor, switched)

    async def new_context(self) -> FirefoxBrowser:
        """Playwright's contexts keep pages' storage apart; the lab's pages keep none, so a
        Firefox page is a window of the one profile."""
        return self

    async def new_page(self) -> FirefoxPage:
        handle, self.unused = self.unused, None
        if handle is None:
            handle = (await self.run(None, lambda client: client.open(type="window", focus=False)))["handle"]
        return FirefoxPage(self, handle)


@pytest.fixture
def firefox_page(firefox):
    """The `firefox` fixture's window as a FirefoxPage: the page interface the Chromium tests use,
    its Marionette calls in a thread of their own (the event loop goes on meanwhile)."""
    executor = ThreadPoolExecutor(max_workers=1)
    browser = FirefoxBrowser(firefox, executor, firefox.current_window_handle)
    yield FirefoxPage(browser, browser.current)
    executor.shutdown()


@contextlib.asynccontextmanager
async def firefox_in(host, secure_origins: Iterable[str] = ()) -> AsyncIterator[FirefoxBrowser]:
    """A headless Firefox ESR inside a lab host's network namespace (its packets cross the lab's
    links), with its home and profile in the host's directory. `secure_origins` count as secure
    contexts (getUserMedia needs one; the lab's box serves plain http on a lab address)."""
    _skip_without_firefox()
    home = host.dir / "firefox-home"
    profile = home / "profile"
    hosts = ",".join(urlsplit(origin).hostname or "" for origin in secure_origins)
    write_profile(profile, {**PREFS, "marionette.port": MARIONETTE_PORT, "dom.securecontext.allowlist": hosts})
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"), "MOZ_CRASHREPORTER_DISABLE": "1"}
    process = host.popen(command(profile), log="firefox", env=env)
    executor = ThreadPoolExecutor(max_workers=1, initializer=enter_netns, initargs=(host.netns,))
    loop = asyncio.get_running_loop()
    client = None
    try:
        client = await loop.run_in_executor(executor, partial(connect, MARIONETTE_PORT, process))
        window = await loop.run_in_executor(executor, lambda: client.current_window_handle)
        yield FirefoxBrowser(client, executor, window)
    finally:
        await loop.run_in_executor(executor, partial(close, client, process))
        executor.shutdown()
