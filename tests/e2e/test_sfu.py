"""The Calls flow in Chromium against the box's SFU (CALLS_API.md section 2): pages served by the
box push camera and microphone, other pages pull them by (sessionId, trackName)."""
import asyncio
from pathlib import Path

from tests.lab.browser import BROWSER_TEST

pytestmark = BROWSER_TEST

CLIENT = (Path(__file__).parent / "calls_client.js").read_text()

PUBLISH = """
async ([names, audio]) => {
  if (!calls.sessionId) await calls.open();
  const stream = await navigator.mediaDevices.getUserMedia({audio, video: true});
  const tracks = [...stream.getAudioTracks(), ...stream.getVideoTracks()];
  const pushed = await calls.push(tracks.map((t, i) => [t, names[i]]));
  await calls.connected;
  return {id: calls.sessionId, tracks: pushed};
}
"""
PULL = """
async (items) => {
  if (!calls.sessionId) await calls.open();
  const tracks = await calls.pull(items);
  await calls.connected;
  return tracks;
}
"""
INBOUND = "() => calls.inbound()"
# Chrome fills audioLevel of a synchronization source only from the ssrc-audio-level extension.
AUDIO_LEVELS = """
() => calls.pc.getReceivers().filter(r => r.track.kind === "audio")
  .flatMap(r => r.getSynchronizationSources().map(s => s.audioLevel === undefined ? null : s.audioLevel))
"""
REMOTE_INBOUND = """
async () => {
  const out = {};
  for (const s of (await calls.pc.getStats()).values())
    if (s.type === "remote-inbound-rtp") out[s.kind] = {packetsLost: s.packetsLost, roundTripTime: s.roundTripTime};
  return out;
}
"""
RECEIVED = """
async () => {
  const out = {};
  const stats = [...(await calls.pc.getStats()).values()];
  for (const s of stats)
    if (s.type === "inbound-rtp") {
      const remote = stats.find(r => r.type === "remote-outbound-rtp" && r.id === s.remoteId) || {};
      out[s.kind] = {packetsLost: s.packetsLost, jitter: s.jitter, reportsSent: remote.reportsSent,
                     packetsSent: remote.packetsSent};
    }
  const pair = stats.find(s => s.type === "candidate-pair" && s.nominated && s.state === "succeeded") || {};
  out.roundTripTime = pair.currentRoundTripTime;
  return out;
}
"""
# Enough to show media flows: video frames decoded, and 0.1 s of audio at 48 kHz.
ENOUGH = {"video": 10, "audio": 4800}


async def page_for(browser, box, contexts):
    context = await browser.new_context()
    contexts.append(context)
    page = await context.new_page()
    await page.goto(box.url("/"))
    await page.add_script_tag(content=CLIENT)
    await page.evaluate("([api]) => { window.calls = new Calls(api, 'test-app', 'test-app-secret'); }", [box.api])
    return page


async def until(page, script, condition, arg=None, tries=150):
    """Evaluate `script` every 0.2 s until `condition` holds for its value (bounded); the value."""
    value = None
    for _ in range(tries):
        value = await page.evaluate(script, arg)
        if condition(value):
            return value
        await asyncio.sleep(0.2)
    raise AssertionError(f"condition never held; last value {value!r}")


def flowing(mids):
    """A condition: each mid's media has gone past ENOUGH."""
    return lambda stats: all(m in stats and stats[m]["count"] > ENOUGH[stats[m]["kind"]] for m in mids)


async def test_push_pull_close_and_pull_again(appliance, browser):
    box = appliance()
    contexts = []
    try:
        publisher, subscriber = await page_for(browser, box, contexts), await page_for(browser, box, contexts)
        published = await publisher.evaluate(PUBLISH, [["mic", "cam"], True])
        pub_id = published["id"]
        assert [t["trackName"] for t in published["tracks"]] == ["mic", "cam"]
        pulled = await subscriber.evaluate(PULL, [{"sessionId": pub_id, "trackName": n} for n in ("mic", "cam")])
        assert [(t["trackName"], t["sessionId"]) for t in pulled] == [("mic", pub_id), ("cam", pub_id)]
        mic, cam = (t["mid"] for t in pulled)
        await until(subscriber, INBOUND, flowing([mic, cam]))
        # The audio level header extension (RFC 6464) reaches the subscriber under its own id.
        levels = await until(subscriber, AUDIO_LEVELS, lambda v: v and all(level is not None for level in v))
        assert all(0 <= level <= 1 for level in levels)
        # The SFU's receiver reports reach the publisher: its stats show loss and a round-trip time.
        remote = await until(publisher, REMOTE_INBOUND, lambda r: r.get("video", {}).get("roundTripTime"))
        assert remote["video"]["packetsLost"] == 0 and remote["video"]["roundTripTime"] < 1.0
        # And the subscriber's: jitter and loss of the SFU's streams from their sequence numbers and
        # timestamps, the round trip from the ICE consent checks the box answers (a receive-only
        # endpoint has no RTCP way to it in Chrome), the packets and bytes the SFU's reports count.
        received = await until(subscriber, RECEIVED, lambda r: r.get("roundTripTime") and "video" in r)
        assert 0 < received["roundTripTime"] < 1.0
        for kind in ("audio", "video"):
            assert received[kind]["packetsLost"] == 0 and 0 <= received[kind]["jitter"] < 0.1, received
            assert received[kind]["reportsSent"] > 0 and received[kind]["packetsSent"] > 0, received
        # The publisher's audio level (RFC 6464), per track, in GET session.
        described = await until(publisher, "() => calls.session()",
                                lambda s: "audioLevel" in s["tracks"][0])
        assert -127 <= described["tracks"][0]["audioLevel"] <= 0 and "audioLevel" not in described["tracks"][1]

        # The publisher closes its video with a negotiated close; the subscriber's copy ends.
        cam_mid = published["tracks"][1]["mid"]
        assert await publisher.evaluate("(mid) => calls.close([mid])", cam_mid) == [{"mid": cam_mid}]
        state = await until(subscriber, "() => calls.session()",
                            lambda s: [t["status"] for t in s["tracks"]] == ["active", "inactive"])
        assert [t["trackName"] for t in state["tracks"]] == ["mic", "cam"]
        # No more frames arrive for it; the subscriber app, told by GET, closes its copy and the track ends.
        frames = (await subscriber.evaluate(INBOUND))[cam]["count"]
        await asyncio.sleep(1.0)
        assert (await subscriber.evaluate(INBOUND))[cam]["count"] - frames <= 2
        assert await subscriber.evaluate("(mid) => calls.close([mid])", cam) == [{"mid": cam}]
        assert await subscriber.evaluate("(mid) => calls.received[mid].readyState", cam) == "ended"

        # A new video track under the same name, pulled again into the same PeerConnection.
        await publisher.evaluate(PUBLISH, [["cam"], False])
        (again,) = await subscriber.evaluate(PULL, [{"sessionId": pub_id, "trackName": "cam"}])
        assert again["mid"] not in (mic, cam)
        await until(subscriber, INBOUND, flowing([again["mid"]]))
    finally:
        for context in contexts:
            await context.close()


async def test_five_subscribers_pull_one_publisher(appliance, browser):
    box = appliance()
    contexts = []
    try:
        publisher = await page_for(browser, box, contexts)
        pub_id = (await publisher.evaluate(PUBLISH, [["mic", "cam"], True]))["id"]
        subscribers = [await page_for(browser, box, contexts) for _ in range(5)]
        items = [{"sessionId": pub_id, "trackName": n} for n in ("mic", "cam")]
        pulls = await asyncio.gather(*(s.evaluate(PULL, items) for s in subscribers))
        await asyncio.gather(*(until(s, INBOUND, flowing([t["mid"] for t in p])) for s, p in zip(subscribers, pulls)))
    finally:
        for context in contexts:
            await context.close()


async def test_one_subscriber_pulls_three_publishers(appliance, browser):
    box = appliance()
    contexts = []
    try:
        publishers = [await page_for(browser, box, contexts) for _ in range(3)]
        ids = [(await p.evaluate(PUBLISH, [["cam"], False]))["id"] for p in publishers]
        subscriber = await page_for(browser, box, contexts)
        pulled = await subscriber.evaluate(PULL, [{"sessionId": i, "trackName": "cam"} for i in ids])
        assert [t["sessionId"] for t in pulled] == ids
        await until(subscriber, INBOUND, flowing([t["mid"] for t in pulled]))
    finally:
        for context in contexts:
            await context.close()


async def test_update_points_a_pulled_transceiver_at_another_publisher(appliance, browser):
    box = appliance()
    contexts = []
    try:
        first, second = [await page_for(browser, box, contexts) for _ in range(2)]
        ids = [(await p.evaluate(PUBLISH, [["cam"], False]))["id"] for p in (first, second)]
        subscriber = await page_for(browser, box, contexts)
        (pulled,) = await subscriber.evaluate(PULL, [{"sessionId": ids[0], "trackName": "cam"}])
        mid = pulled["mid"]
        before = await until(subscriber, INBOUND, flowing([mid]))
        update = {"tracks": [{"location": "remote", "mid": mid, "sessionId": ids[1], "trackName": "cam",
                              "simulcast": {"preferredRid": "h", "priorityOrdering": "asciibetical"}}]}
        result = await subscriber.evaluate(
            "(body) => calls.call('PUT', `/sessions/${calls.sessionId}/tracks/update`, body)", update)
        assert result == {"requiresImmediateRenegotiation": False,
                          "tracks": [{"mid": mid, "sessionId": ids[1], "trackName": "cam"}]}
        # The same transceiver keeps decoding, now the second publisher's video.
        await until(subscriber, INBOUND, lambda s: s[mid]["count"] > before[mid]["count"] + 30)
        state = await subscriber.evaluate("() => calls.session()")
        assert state["tracks"][0]["sessionId"] == ids[1]
    finally:
        for context in contexts:
            await context.close()


async def test_push_and_pull_over_ice_tcp_only(appliance, browser):
    """ICE-TCP (RFC 6544 passive candidates on [sfu] tcp) when UDP cannot reach the box."""
    from tests.lab.appliance import box_config, free_port

    tcp = free_port("tcp")
    box = appliance(box_config(free_port("tcp"), free_port("udp"), free_port("udp", "tcp"))
                    .replace("[sfu]\n", f'[sfu]\ntcp = "127.0.0.1:{tcp}"\n'))
    contexts = []
    try:
        publisher, subscriber = await page_for(browser, box, contexts), await page_for(browser, box, contexts)
        for page in (publisher, subscriber):
            await page.evaluate("([api]) => { window.calls = new Calls(api, 'test-app', 'test-app-secret', "
                                "{tcpOnly: true}); }", [box.api])
        pub_id = (await publisher.evaluate(PUBLISH, [["mic", "cam"], True]))["id"]
        pulled = await subscriber.evaluate(PULL, [{"sessionId": pub_id, "trackName": n} for n in ("mic", "cam")])
        await until(subscriber, INBOUND, flowing([t["mid"] for t in pulled]))
        pair = await subscriber.evaluate("""async () => {
          const stats = await calls.pc.getStats();
          for (const s of stats.values())
            if (s.type === "transport" && s.selectedCandidatePairId)
              return stats.get(stats.get(s.selectedCandidatePairId).remoteCandidateId).protocol;
        }""")
        assert pair == "tcp"
    finally:
        for context in contexts:
            await context.close()


async def test_an_sfu_offer_after_the_browser_recycled_an_m_line(appliance, browser):
    """Chrome gives a new transceiver the m-line of a stopped one (with a new mid); the SFU's next offer to that
    session must list its m-sections in the browser's order, or the browser refuses it. The SFU's own offers
    recycle a closed pull's m-line the same way, so a long session does not grow with every track it pulled."""
    box = appliance()
    contexts = []
    try:
        publisher, other = await page_for(browser, box, contexts), await page_for(browser, box, contexts)
        published = await publisher.evaluate(PUBLISH, [["mic", "cam"], True])
        cam_mid = published["tracks"][1]["mid"]
        assert await publisher.evaluate("(mid) => calls.close([mid])", cam_mid) == [{"mid": cam_mid}]
        again = await publisher.evaluate(PUBLISH, [["cam2"], False])
        new_mid = again["tracks"][0]["mid"]
        mids = await publisher.evaluate("() => calls.pc.getTransceivers().map(t => t.mid)")
        other_id = (await other.evaluate(PUBLISH, [["cam"], False]))["id"]
        # The SFU offers the publisher's own session a pull: its m-lines must match the browser's.
        (pulled,) = await publisher.evaluate(PULL, [{"sessionId": other_id, "trackName": "cam"}])
        await until(publisher, INBOUND, flowing([pulled["mid"]]))
        assert new_mid != cam_mid and len(mids) >= 2
        # And the SFU recycles too: a pull after a closed one takes the closed m-line, the session does not grow.
        m_lines = "() => calls.pc.remoteDescription.sdp.split('\\r\\n').filter(l => l.startsWith('m=')).length"
        before = await publisher.evaluate(m_lines)
        assert await publisher.evaluate("(mid) => calls.close([mid])", pulled["mid"]) == [{"mid": pulled["mid"]}]
        (again,) = await publisher.evaluate(PULL, [{"sessionId": other_id, "trackName": "cam"}])
        await until(publisher, INBOUND, flowing([again["mid"]]))
        assert await publisher.evaluate(m_lines) == before and again["mid"] != pulled["mid"]
    finally:
        for context in contexts:
            await context.close()
