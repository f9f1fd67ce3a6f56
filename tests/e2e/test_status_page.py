"""Chromium loads the box's status page over its HTTP port and the page's script reads /healthz."""
import pytest

pytestmark = pytest.mark.browser


def test_status_page_in_chromium(appliance, page):
    box = appliance()
    page.goto(box.url("/"))
    page.wait_for_function("document.getElementById('status').textContent === 'ok'", timeout=15000)
    assert page.title() == "Edgecall"
    assert page.inner_text("#node") == "test-box"
    assert page.inner_text("#services") == "api\tok"
    assert page.evaluate("window.isSecureContext")  # http://127.0.0.1 is a secure context: WebRTC APIs exist
