"""The meeting page in real browsers: four pages (three Chromium, one Firefox ESR) join one room on a
loopback box and each decodes the other three; a screen share replaces its person's tile; chat
messages arrive; a page that leaves disappears from the others' grids; a reload rejoins. Writes
screenshots of the call to build/screenshots/ and prints the page's load time and transfer size on a
phone-sized viewport (run with -s)."""
import asyncio
import time
from pathlib import Path

import pytest

from tests.lab.appliance import box_config, free_port
from tests.lab.browser import BROWSER_TEST

pytestmark = BROWSER_TEST

SHOTS = Path(__file__).parents[2] / "build" / "screenshots"
ROOM = "standup"
MEET = '\n[meet]\napp = "test-app"\n'

# Per remote tile: its person's name, whether its video plays pictures, its size and whether it shows a screen.
TILES = """
() => [...document.querySelectorAll('#grid .tile:not(.self)')].map(t => {
  const v = t.querySelector('video');
  return {name: t.querySelector('.name').textContent, width: v.videoWidth, height: v.videoHeight,
          playing: v.readyState >= 2 && !v.paused, screen: t.classList.contains('screen')};
})
"""
DECODED = """
async () => {
  const stats = await meeting.call.stats();
  return Object.values(stats.inbound).filter(s => typeof s.framesDecoded === "number").map(s => s.framesDecoded);
}
"""
MESSAGES = "() => [...document.querySelectorAll('#messages li')].map(li => li.textContent)"
# A "screen": a square canvas, so its tile is told apart from a 16:9 camera by its shape.
SHARE = """
async () => {
  const canvas = Object.assign(document.createElement('canvas'), {width: 960, height: 960});
  const g = canvas.getContext('2d');
  setInterval(() => { g.fillStyle = `hsl(${Date.now() / 10 % 360} 70% 50%)`; g.fillRect(0, 0, 960, 960); }, 40);
  await meeting.share(canvas.captureStream(25).getVideoTracks()[0]);
}
"""


async def until(read, condition, seconds: float = 30.0):
    """`read()` every 0.1 s until `condition` holds for its value (bounded); the value."""
    value = None
    for _ in range(int(seconds / 0.1)):
        value = await read()
        if condition(value):
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"condition never held; last value {value!r}")


def everyone_seen(names: set[str]):
    return lambda tiles: {t["name"] for t in tiles} == names and all(t["playing"] and t["width"] > 0 for t in tiles)


ADMIN = "meeting-admin-token"


@pytest.fixture
def box(appliance):
    api = free_port("tcp")
    text = box_config(api, free_port("udp"), free_port("udp", "tcp"), MEET)
    return appliance(text.replace(f'listen = "127.0.0.1:{api}"', f'listen = "127.0.0.1:{api}"\nadmin_token = "{ADMIN}"'))


async def dashboard_shot(browser, box, sessions: int) -> None:
    """The operator's view of the call: the dashboard, once it shows the call's sessions."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = await context.new_page()
        await page.goto(box.url("/dashboard"))
        await page.fill("#token", ADMIN)
        await page.click("#login button")
        await page.wait_for_function(f"document.getElementById('sessions').textContent === '{sessions}'",
                                     timeout=20000)
        await asyncio.sleep(2.5)  # a second snapshot: measured bitrates
        await page.screenshot(path=str(SHOTS / "dashboard-4-people.png"), full_page=True)
    finally:
        await context.close()


async def test_four_people_meet_share_chat_leave_and_rejoin(box, browser, firefox_page):
    """P0 to P2 in Chromium, P3 in Firefox ESR."""
    names = [f"P{i}" for i in range(4)]
    contexts, pages = [], []
    try:
        for name in names[:3]:
            context = await browser.new_context(viewport={"width": 960, "height": 640})
            contexts.append(context)
            page = await context.new_page()
            await page.goto(box.url(f"/meet/{ROOM}?name={name}&autojoin=1"))
            pages.append(page)
        pages.append(firefox_page)
        await pages[3].goto(box.url(f"/meet/{ROOM}?name=P3&autojoin=1"))
        for page, name in zip(pages, names):
            await until(lambda page=page: page.evaluate(TILES), everyone_seen(set(names) - {name}))
            decoded = await page.evaluate(DECODED)
            await until(lambda page=page: page.evaluate(DECODED),
                        lambda now, before=decoded: len(now) == 3 and all(n > b for n, b in zip(now, before)))
        SHOTS.mkdir(parents=True, exist_ok=True)
        await pages[0].screenshot(path=str(SHOTS / "meet-4-people.png"))
        await dashboard_shot(browser, box, sessions=4)

        # P0 shares a screen: the others' P0 tile shows it (square), in place of the camera.
        await pages[0].evaluate(SHARE)
        for page in pages[1:]:
            tiles = await until(lambda page=page: page.evaluate(TILES),
                                lambda tiles: any(t["name"] == "P0" and t["screen"] and t["width"] == t["height"] > 0
                                                  for t in tiles))
            assert len(tiles) == 3
        await pages[1].screenshot(path=str(SHOTS / "meet-screen-share.png"))

        # Chat: P1 says hello, everyone reads it.
        await until(lambda: pages[1].evaluate("() => meeting.send('hello from P1')"), bool)
        for page in pages:
            await until(lambda page=page: page.evaluate(MESSAGES), lambda texts: "P1hello from P1" in texts)

        # P3 leaves: its tile is gone from the others' grids within 2 s.
        left = time.monotonic()
        await pages[3].click("#leave")
        for page in pages[:3]:
            await until(lambda page=page: page.evaluate(TILES), lambda tiles: "P3" not in {t["name"] for t in tiles},
                        seconds=2.0)
        print(f"\nleave: the tile was gone from the three other grids after {time.monotonic() - left:.2f} s")

        # P2 reloads: it joins again (a new participant) and everyone sees everyone once more.
        await pages[2].reload()
        for page, name in zip(pages[:3], names[:3]):
            await until(lambda page=page: page.evaluate(TILES), everyone_seen(set(names[:3]) - {name}))
    finally:
        for context in contexts:
            await context.close()


async def test_the_meeting_page_is_light_on_a_phone(box, browser):
    context = await browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = await context.new_page()
        await page.goto(box.url(f"/meet/{ROOM}"))
        await page.wait_for_load_state("load")
        timing = await page.evaluate("""() => {
          const nav = performance.getEntriesByType('navigation')[0];
          const all = [nav, ...performance.getEntriesByType('resource')];
          return {loadMs: nav.loadEventEnd - nav.startTime, bytes: all.reduce((s, e) => s + (e.transferSize || 0), 0),
                  files: all.length};
        }""")
        print(f"\n/meet on a 390x844 viewport (loopback): load {timing['loadMs']:.0f} ms, "
              f"{timing['bytes'] / 1024:.1f} KiB in {timing['files']} files")
        assert await page.is_visible("#join") and await page.is_visible("#name")
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / "meet-phone-lobby.png"))
    finally:
        await context.close()
