"""A Firefox ESR page (the `firefox` fixture's Marionette client) with the part of Playwright's page
interface the browser tests use, so one test body drives both engines. Marionette is synchronous:
its calls run in a thread, and the event loop (and Chromium's pages) go on meanwhile."""
from __future__ import annotations

import asyncio
import json


class FirefoxPage:
    def __init__(self, firefox) -> None:
        self.firefox = firefox

    async def goto(self, url: str) -> None:
        await asyncio.to_thread(self.firefox.navigate, url)

    async def evaluate(self, script: str, arg=None):
        """`script` is a JavaScript function (async or not), called with `arg` as Playwright does."""
        call = f"({script})({json.dumps(arg)})" if arg is not None else f"({script})()"
        if script.lstrip().startswith("async"):
            wrapped = (f"const done = arguments[arguments.length - 1]; "
                       f"Promise.resolve({call}).then(done, e => done({{error: String(e)}}));")
            return await asyncio.to_thread(self.firefox.execute_async_script, wrapped, sandbox=None,
                                           script_timeout=60000)
        return await asyncio.to_thread(self.firefox.execute_script, f"return {call};", sandbox=None)

    async def click(self, selector: str) -> None:
        await asyncio.to_thread(self.firefox.execute_script, f"document.querySelector({json.dumps(selector)}).click();",
                                sandbox=None)
