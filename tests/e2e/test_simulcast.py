"""Simulcast in the lab (issue 5; Firefox in issue 15): a publisher sends three layers, subscribers
pinned to one layer get that layer's resolution, and one that follows its bandwidth goes down behind
a rate limit and back up when it is lifted; all of them Chromium, or all Firefox. Figures print with -s."""
import asyncio
import collections

import pytest

from tests.e2e.test_sfu import INBOUND, PULL, flowing, until
from tests.lab.browser import BROWSER_TEST
from tests.lab.media_lab import (ENGINES, METRICS, PUBLISH_VIDEO, URL, VIDEO_IN, browsers_on, client, delta,
                                 media_lab, repair_metrics, start_box, stop_box)

pytestmark = [*BROWSER_TEST, pytest.mark.lab, pytest.mark.slow]

# 1280x720 is the smallest capture for which libwebrtc sends three layers (Firefox's too).
CAPTURE = {"width": 1280, "height": 720, "frameRate": 30}
LAYERS = [{"rid": "f"}, {"rid": "h", "scaleResolutionDownBy": 2}, {"rid": "q", "scaleResolutionDownBy": 4}]
WIDTH = {"f": 1280, "h": 640, "q": 320}
LIMIT = "300kbit"
SQUEEZE = "80kbit"  # below the cheapest layer, above the audio
PUBLISH_AUDIO = """
async () => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: false});
  return calls.push([[stream.getAudioTracks()[0], "mic"]]);
}
"""
UPDATE = "(items) => calls.update(items)"
SWAP = {"q": "f", "f": "q"}
AUDIO_IN = """
async () => {
  for (const s of (await calls.pc.getStats()).values())
    if (s.type === "inbound-rtp" && s.kind === "audio")
      return {samples: s.totalSamplesReceived, concealed: s.concealedSamples};
  return null;
}
"""


async def widths(page, seconds: float) -> collections.Counter:
    """The decoded frame width, sampled every half second."""
    seen = collections.Counter()
    for _ in range(int(seconds * 2)):
        seen[(await page.evaluate(VIDEO_IN) or {}).get("frameWidth")] += 1
        await asyncio.sleep(0.5)
    return seen


async def at_their_layers(pinned: dict) -> None:
    """Until each page of `pinned` (by RID) decodes its layer's width."""
    for rid, page in pinned.items():
        await until(page, VIDEO_IN, lambda s, rid=rid: s and s["frameWidth"] == WIDTH[rid], tries=100)


@pytest.mark.parametrize("engine", ENGINES)
async def test_pinned_and_automatic_subscribers_get_their_layers(lab, engine):
    box, pub, sub, slow = media_lab(lab, slow=True)
    process = start_box(box)
    try:
        async with browsers_on(engine, pub, sub, slow) as (pub_browser, sub_browser, slow_browser):
            _, publisher = await client(pub_browser, URL)
            published = await publisher.evaluate(PUBLISH_VIDEO, ["cam", LAYERS, CAPTURE])
            await publisher.evaluate(PUBLISH_AUDIO)
            track = {"sessionId": published["id"], "trackName": "cam"}
            pinned, mids = {}, {}
            first_frame = {}  # from the pull request to the first decoded frame (a figure)
            loop = asyncio.get_running_loop()
            for rid in ("q", "f"):
                _, page = await client(sub_browser, URL)
                asked = loop.time()
                (pulled,) = await page.evaluate(PULL, [{**track, "simulcast": {"preferredRid": rid}}])
                await until(page, VIDEO_IN, lambda s: s and s["framesDecoded"] > 0, tries=100)
                first_frame[rid] = round(loop.time() - asked, 2)
                await until(page, INBOUND, flowing([pulled["mid"]]))
                pinned[rid], mids[rid] = page, pulled["mid"]
            box.run(["tc", "qdisc", "add", "dev", "eth2", "root", "tbf", "rate", LIMIT, "burst", "16kb",
                     "latency", "200ms"])
            _, automatic = await client(slow_browser, URL)
            pulled = await automatic.evaluate(PULL, [track, {**track, "trackName": "mic"}])
            await until(automatic, INBOUND, flowing([t["mid"] for t in pulled]))

            # Behind the limit: the estimate settles and the leg takes the lowest layer (tries of
            # the next one up show now and then).
            settled = loop.time() + 8
            await at_their_layers(pinned)
            # Meanwhile the pinned two swap layers (tracks/update) and go on decoding, though one of
            # them moves back in the VP8 picture ids (each layer counts its own).
            for rid, page in pinned.items():
                await page.evaluate(UPDATE, [{**track, "mid": mids[rid], "simulcast": {"preferredRid": SWAP[rid]}}])
            pinned = {SWAP[rid]: page for rid, page in pinned.items()}
            await at_their_layers(pinned)
            decoded = {rid: (await page.evaluate(VIDEO_IN))["framesDecoded"] for rid, page in pinned.items()}
            await asyncio.sleep(2)
            swapped = {rid: (await page.evaluate(VIDEO_IN))["framesDecoded"] - decoded[rid]  # in 2 s at the new size
                       for rid, page in pinned.items()}
            await asyncio.sleep(max(0.0, settled - loop.time()))
            limited = await widths(automatic, 10)
            box.run(["tc", "qdisc", "del", "dev", "eth2", "root"])
            lifted_at = loop.time()
            # Up, and (a figure only) to the top layer: the times are printed; the waits are bounded.
            await until(automatic, VIDEO_IN, lambda s: s and s["frameWidth"] > WIDTH["q"], tries=150)
            up_after = loop.time() - lifted_at
            try:
                await until(automatic, VIDEO_IN, lambda s: s and s["frameWidth"] == WIDTH["f"], tries=75)
                top_after = f"{loop.time() - lifted_at:.1f} s"
            except AssertionError:
                top_after = "not within 15 s"
            after = await widths(automatic, 6)
            # Below the cheapest layer: the video pauses (tries of it now and then), the audio goes on.
            box.run(["tc", "qdisc", "add", "dev", "eth2", "root", "tbf", "rate", SQUEEZE, "burst", "16kb",
                     "latency", "200ms"])
            await asyncio.sleep(8)
            audio_before, video_before = await automatic.evaluate(AUDIO_IN), await automatic.evaluate(VIDEO_IN)
            await asyncio.sleep(6)
            audio = delta(await automatic.evaluate(AUDIO_IN), audio_before)
            squeezed = delta(await automatic.evaluate(VIDEO_IN), video_before)
            # From the publisher's page: the squeezed link has no room for a fetch.
            paused = repair_metrics(await publisher.evaluate(METRICS))["paused_legs"]
            pinned_widths = {rid: (await page.evaluate(VIDEO_IN))["frameWidth"] for rid, page in pinned.items()}
    finally:
        stop_box(process)
    print(f"\n{engine} simulcast f/h/q from {CAPTURE}: pinned {pinned_widths}, first frame after {first_frame} s"
          f"; swapped, frames decoded in 2 s {swapped}; automatic behind {LIMIT}: widths {dict(limited)}"
          f"; behind {SQUEEZE}: video paused {paused:.0f} times, {squeezed['framesDecoded']} frames in 6 s, audio "
          f"{audio['samples']} samples ({audio['concealed']} concealed)"
          f"; limit lifted: up after {up_after:.1f} s, top layer after {top_after}, then {dict(after)}")
    assert pinned_widths == {"q": WIDTH["q"], "f": WIDTH["f"]}
    assert all(frames >= 10 for frames in swapped.values()), swapped
    assert limited.most_common(1)[0][0] == WIDTH["q"], limited
    assert after.most_common(1)[0][0] > WIDTH["q"], after
    assert paused >= 1
    assert audio["samples"] - audio["concealed"] > 0.8 * 48000 * 6, audio
