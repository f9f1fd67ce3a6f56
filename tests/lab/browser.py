"""Fixture: Debian's Chromium driven by Playwright (never `playwright install`: nothing can be downloaded)."""
from __future__ import annotations

import contextlib
import os
import shutil

import pytest
import pytest_asyncio

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
    "--autoplay-policy=no-user-gesture-required",
]


# Playwright's async API, on the session's event loop: its sync API would hold a loop open on the
# main thread and break every asyncio test that runs after it. Browser tests are async and carry
# `pytest.mark.asyncio(loop_scope="session")` (see BROWSER_TEST below).
BROWSER_TEST = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser():
    """A headless Chromium for the whole session; tests open their own contexts and pages."""
    if not shutil.which(CHROMIUM):
        pytest.skip(f"Chromium not found at {CHROMIUM} (./build.sh setup installs Debian's chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        await chromium.close()


@contextlib.asynccontextmanager
async def browser_in(host, args: tuple[str, ...] = ()):
    """A headless Chromium inside a lab host's network namespace (its packets cross the lab's
    links, where tests add loss or rate limits). Playwright drives it over a pipe, which the
    namespace does not touch."""
    if not shutil.which(CHROMIUM):
        pytest.skip(f"Chromium not found at {CHROMIUM} (./build.sh setup installs Debian's chromium)")
    from playwright.async_api import async_playwright

    wrapper = host.dir / "chromium"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {host.netns} {CHROMIUM} "$@"\n')
    wrapper.chmod(0o755)
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(wrapper), args=[*CHROMIUM_ARGS, *args],
                                                    headless=True)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser):
    """A fresh browser context (its own cookies and storage) with one page."""
    context = await browser.new_context()
    yield await context.new_page()
    await context.close()
