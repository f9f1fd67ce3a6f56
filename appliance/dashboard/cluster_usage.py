"""Usage across a cluster: the box asked gathers the other live boxes' own figures (their /v1/usage
with scope=box, the same window and step, the caller's admin token: boxes of one cluster share their
configuration) and adds them to its own, bucket by bucket. Buckets start at multiples of the step,
so every box's line up. A box that does not answer in time is named in "missing", not guessed."""
from __future__ import annotations

import asyncio
from collections.abc import Iterable

import aiohttp

# How long the box asked waits for another box's figures.
TIMEOUT = 3.0
SUMMED = ("ingressBytes", "egressBytes", "sessions", "allocations")


def merge(by: str, answers: Iterable[list[dict]]) -> list[dict]:
    """The series of several boxes as one: points of the same key and bucket added (bytes, and the
    sessions and allocations each box held at its busiest in the bucket)."""
    merged: dict[str, dict[int, dict]] = {}
    for series in answers:
        for line in series:
            points = merged.setdefault(line[by], {})
            for point in line["points"]:
                into = points.setdefault(point["t"], {"t": point["t"], **{name: 0 for name in SUMMED}})
                for name in SUMMED:
                    into[name] += point[name]
    return [{by: key, "points": [points[t] for t in sorted(points)]} for key, points in merged.items()]


async def gather(apis: dict[str, str], path_qs: str, authorization: str) -> tuple[list[list[dict]], list[str]]:
    """Each box's series (`apis`: node id -> host:port), and the boxes that did not answer."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as client:
        async def one(api: str) -> list[dict] | None:
            try:
                async with client.get(f"http://{api}{path_qs}", headers={"Authorization": authorization}) as answer:
                    if answer.status != 200:
                        return None
                    return (await answer.json())["series"]
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, KeyError):
                return None

        nodes = list(apis)
        results = await asyncio.gather(*(one(apis[node]) for node in nodes))
    answered = [series for series in results if series is not None]
    missing = [node for node, series in zip(nodes, results) if series is None]
    return answered, missing
