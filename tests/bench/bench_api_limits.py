"""Sessions per second one client gets from `sessions/new` on a real box: at the default per-app caps
(`[[apps]] sessions_per_second`, `max_sessions`), against the anchor of the same box with the caps off in the
same run. One keep-alive connection posting as fast as the box answers, for a bounded time."""
from __future__ import annotations

import asyncio
import time

import aiohttp

from tests.bench.box import UNLIMITED_APP, running_box

SECONDS = 5.0


async def _hammer(url: str, secret: str) -> tuple[int, int]:
    """(201s, 429s) answered within SECONDS."""
    created = refused = 0
    headers = {"Authorization": f"Bearer {secret}"}
    async with aiohttp.ClientSession() as client:
        deadline = time.monotonic() + SECONDS
        while time.monotonic() < deadline:
            async with client.post(url, headers=headers) as res:
                await res.read()
                created += res.status == 201
                refused += res.status == 429
    return created, refused


def main() -> None:
    with running_box(UNLIMITED_APP) as (_, base):
        capped = asyncio.run(_hammer(f"{base}/v1/apps/test-app/sessions/new", "test-app-secret"))
        open_ = asyncio.run(_hammer(f"{base}/v1/apps/open-app/sessions/new", "open-secret"))
    rate, anchor = capped[0] / SECONDS, open_[0] / SECONDS
    print(f"sessions/new from one client for {SECONDS:g} s each, one keep-alive connection:")
    print(f"  default caps (100/s, 5000 live): {rate:7.1f} sessions/s created, {capped[1] / SECONDS:7.1f}/s "
          f"answered 429  {rate / anchor:5.2f} x anchor")
    print(f"  caps off (anchor):               {anchor:7.1f} sessions/s created  1.00 x")
