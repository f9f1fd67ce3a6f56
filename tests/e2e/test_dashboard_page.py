"""The operator dashboard in Chromium during a call (aiortc publishing and pulling through the Calls API):
the page asks for the admin token (refusing a wrong one), then shows the live session count and the
node's name, draws the last hour's charts, fits a phone's width, and keeps the token across a reload.
Writes screenshots to build/screenshots/dashboard.png (phone, 390x844) and dashboard-desktop.png, and
prints the page's transfer size (run with -s)."""
from __future__ import annotations

import asyncio
from pathlib import Path

from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from tests.lab.appliance import box_config, free_port
from tests.lab.browser import BROWSER_TEST
from tests.lab.calls_api import AsyncApi, connected, publish, subscribe

pytestmark = BROWSER_TEST

SHOTS = Path(__file__).parents[2] / "build" / "screenshots"
ADMIN = "dashboard-admin-token"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
LIVE = "() => document.getElementById('sessions').textContent === '2' && !!document.querySelector('#chart-load svg')"
# What the page cost: the document and every resource it loaded, as the browser transferred them.
TRANSFERRED = """() => [...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]
  .filter(e => !e.name.includes('/events') && !e.name.includes('/v1/usage'))
  .reduce((sum, e) => sum + e.transferSize, 0)"""


async def call(api: AsyncApi, publisher: RTCPeerConnection, subscriber: RTCPeerConnection) -> None:
    """A publisher of audio and video and a subscriber pulling both: two sessions."""
    pub_id = await publish(api, publisher, {"mic": AudioStreamTrack(), "cam": VideoStreamTrack()})
    await connected(publisher)
    await subscribe(api, subscriber, [{"sessionId": pub_id, "trackName": name} for name in ("mic", "cam")])
    await connected(subscriber)


async def test_the_dashboard_shows_a_call_live_on_a_phone_and_a_desktop(appliance, browser):
    api_port = free_port("tcp")
    text = box_config(api_port, free_port("udp"), free_port("udp", "tcp")).replace(
        f'listen = "127.0.0.1:{api_port}"', f'listen = "127.0.0.1:{api_port}"\nadmin_token = "{ADMIN}"')
    box = appliance(text)
    publisher, subscriber = RTCPeerConnection(), RTCPeerConnection()
    contexts = []
    SHOTS.mkdir(parents=True, exist_ok=True)
    try:
        await call(AsyncApi(box), publisher, subscriber)
        for name, viewport in (("dashboard.png", PHONE), ("dashboard-desktop.png", DESKTOP)):
            context = await browser.new_context(viewport=viewport)
            contexts.append(context)
            page = await context.new_page()
            await page.goto(box.url("/dashboard"))
            if viewport is PHONE:
                await page.fill("#token", "not-the-token")
                await page.click("#login button")
                await page.wait_for_function("document.getElementById('login-error').textContent !== ''")
                assert "admin_token" in await page.inner_text("#login-error")
                assert await page.is_hidden("#board")
                transferred = await page.evaluate(TRANSFERRED)
            await page.fill("#token", ADMIN)
            await page.click("#login button")
            await page.wait_for_function(LIVE, timeout=20000)
            assert await page.inner_text("#node") == "test-box"
            assert await page.inner_text("#sessions") == "2"
            assert "test-box (this box)" in await page.inner_text("#nodes")
            assert "mic (audio)" in await page.inner_text("#session-list")
            # Nothing wider than the screen: the tables scroll inside their boxes, the page does not.
            assert await page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
            await asyncio.sleep(2.5)  # one more snapshot, so the bitrates shown are measured ones
            await page.screenshot(path=str(SHOTS / name), full_page=True)
        # The token is kept for the tab: a reload goes straight to the data.
        await page.reload()
        await page.wait_for_function(LIVE, timeout=20000)
        assert await page.is_hidden("#login")
        print(f"dashboard page transfer: {transferred} bytes (HTML, script and stylesheet)")
        assert 0 < transferred < 60_000
    finally:
        for context in contexts:
            await context.close()
        await publisher.close()
        await subscriber.close()
