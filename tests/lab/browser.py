"""Fixture: Debian's Chromium driven by Playwright (never `playwright install`: nothing can be downloaded)."""
from __future__ import annotations

import os
import shutil

import pytest

CHROMIUM = os.environ.get("EDGECALL_CHROMIUM", "/usr/bin/chromium")
# ../shared/TESTING.md: fake media devices, and no background calls to Google's hosts (the network is closed).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium for the whole session; tests open their own contexts and pages."""
    if not shutil.which(CHROMIUM):
        pytest.skip(f"Chromium not found at {CHROMIUM} (./build.sh setup installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (its own cookies and storage) with one page."""
    context = browser.new_context()
    yield context.new_page()
    context.close()
