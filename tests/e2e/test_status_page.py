"""Chromium loads the box's status page over its HTTP port and the page's script reads /healthz."""
from tests.lab.browser import BROWSER_TEST

pytestmark = BROWSER_TEST


async def test_status_page_in_chromium(appliance, page):
    box = appliance()
    await page.goto(box.url("/"))
    await page.wait_for_function("document.getElementById('status').textContent === 'ok'", timeout=15000)
    assert await page.title() == "Edgecall"
    assert await page.inner_text("#node") == "test-box"
    rows = (await page.inner_text("#services")).splitlines()
    assert "api\tok" in rows and all(row.endswith("\tok") for row in rows), rows
    assert await page.evaluate("window.isSecureContext")  # http://127.0.0.1 is a secure context: WebRTC APIs exist
