"""The box's JavaScript client (/sdk/edgecall.js, issue 16) in Chromium: pages import it from the box
and use only its public API (the contract meeting pages are built on), against the real SFU."""
from tests.e2e.test_sfu import until
from tests.lab.browser import BROWSER_TEST

pytestmark = BROWSER_TEST

APP = "/v1/apps/test-app"
# Imports the client from the box into the page and connects `window.call`; records the events it
# fires and the API requests it makes (method, and the path after the session's id: "tracks/new").
SETUP = """
async ([module, base]) => {
  const { Edgecall } = await import(module);
  window.Edgecall = Edgecall;
  window.events = [];
  window.requests = [];
  window.locals = {};
  window.remotes = {};
  const fetch0 = window.fetch.bind(window);
  window.fetch = (url, init = {}) => {
    const path = new URL(url).pathname.split("/sessions/")[1].replace(/^[0-9a-f]{32}[/]?/, "");
    requests.push(`${init.method || "GET"} ${path}`);
    return fetch0(url, init);
  };
  const describe = (type, d) => type === "statechange" ? d.state
    : type === "reconnected" ? d
    : type === "datachannel" ? {name: d.name, location: d.location, replaced: d.previous !== d.channel}
    : {sessionId: d.sessionId, trackName: d.trackName, mid: d.mid, kind: d.kind};
  // The token as a function (a page renews short-lived tokens that way); test_sdk_firefox.py passes a string.
  window.call = new Edgecall({base, token: async () => "test-app-secret"});
  for (const type of ["track", "trackended", "statechange", "reconnected", "datachannel"])
    call.addEventListener(type, (e) => events.push({type, detail: describe(type, e.detail)}));
  await call.connect();
  return call.sessionId;
}
"""
# Camera and/or microphone, each pushed under its name (concurrently: one renegotiation).
PUSH = """
async ([names, constraints, simulcast]) => {
  const stream = await navigator.mediaDevices.getUserMedia(constraints);
  const tracks = [...stream.getAudioTracks(), ...stream.getVideoTracks()];
  const pushed = await Promise.all(tracks.map((track, i) => call.push(track,
    {name: names[i], simulcast: track.kind === "video" ? simulcast : null})));
  for (const local of pushed) locals[local.name] = local;
  return pushed.map(l => ({name: l.name, kind: l.kind, mid: l.mid, sessionId: l.sessionId}));
}
"""
PULL_MANY = """
async (items) => {
  const pulled = await call.pullMany(items);
  for (const r of pulled) remotes[`${r.sessionId}/${r.trackName}`] = r;
  return pulled.map(r => ({sessionId: r.sessionId, trackName: r.trackName, mid: r.mid, kind: r.kind,
                           live: r.track.readyState === "live"}));
}
"""
INBOUND = "async () => (await call.stats()).inbound"
ENDED = "() => events.filter(e => e.type === 'trackended').map(e => e.detail)"
ERROR = """
async ([script, arg]) => {
  try { await (eval(script))(arg); return null; }
  catch (e) {
    const failures = (e.failures || []).map(f => f && f.errorCode);
    return {name: e.name, errorCode: e.errorCode, failures, message: e.message};
  }
}
"""


def decoding(*mids, frames=10):
    return lambda inbound: all(((inbound.get(m) or {}).get("framesDecoded") or 0) > frames for m in mids)


def more_frames(mid, than):
    return lambda inbound: (inbound.get(mid) or {}).get("framesDecoded", 0) > than


async def sdk_page(browser, box, contexts):
    context = await browser.new_context()
    contexts.append(context)
    page = await context.new_page()
    await page.goto(box.url("/"))
    await page.evaluate(SETUP, [box.url("/sdk/edgecall.js"), box.url(APP)])
    return page


async def events(page, kind):
    return [e["detail"] for e in await page.evaluate("() => events") if e["type"] == kind]


async def test_push_camera_and_microphone_pull_them_read_stats_and_close(appliance, browser):
    box = appliance()
    contexts = []
    try:
        publisher, subscriber = await sdk_page(browser, box, contexts), await sdk_page(browser, box, contexts)
        pushed = await publisher.evaluate(PUSH, [["mic", "cam"], {"audio": True, "video": True}, None])
        pub_id = await publisher.evaluate("() => call.sessionId")
        assert [(p["name"], p["kind"], p["sessionId"]) for p in pushed] == [("mic", "audio", pub_id),
                                                                            ("cam", "video", pub_id)]
        assert await publisher.evaluate("() => requests") == ["POST new", "POST tracks/new"]
        pulled = await subscriber.evaluate(PULL_MANY, [{"sessionId": pub_id, "trackName": n} for n in ("mic", "cam")])
        assert [(p["trackName"], p["kind"], p["live"]) for p in pulled] == [("mic", "audio", True),
                                                                            ("cam", "video", True)]
        mic, cam = (p["mid"] for p in pulled)
        assert [(e["trackName"], e["mid"]) for e in await events(subscriber, "track")] == [("mic", mic), ("cam", cam)]
        inbound = await until(subscriber, INBOUND, lambda s: decoding(cam)(s) and s[mic]["packetsReceived"] > 50)

        # stats(): the connection, each pushed track by name, each pulled one by mid; bitrates from two readings.
        assert set(inbound) == {mic, cam}
        assert inbound[cam]["trackName"] == "cam" and inbound[cam]["sessionId"] == pub_id
        assert inbound[cam]["frameWidth"] > 0 and inbound[cam]["packetsLost"] == 0 and inbound[cam]["jitter"] >= 0
        stats = await until(subscriber, "() => call.stats()", lambda s: (s["inbound"][cam]["bitrate"] or 0) > 0)
        assert stats["connection"]["state"] == "connected" and 0 <= stats["connection"]["rtt"] < 1
        assert stats["outbound"] == {} and 0 <= stats["inbound"][cam]["rtt"] < 1
        sent = await until(publisher, "() => call.stats()", lambda s: (s["outbound"]["cam"]["bitrate"] or 0) > 0)
        assert set(sent["outbound"]) == {"mic", "cam"} and sent["inbound"] == {}
        assert sent["outbound"]["cam"]["packetsSent"] > 0 and sent["outbound"]["cam"]["frameWidth"] > 0
        assert sent["outbound"]["mic"]["kind"] == "audio" and sent["outbound"]["mic"]["muted"] is False

        # The publisher closes its camera: the subscriber's copy ends, the microphone goes on.
        await publisher.evaluate("() => locals.cam.close()")
        ended = await until(subscriber, ENDED, lambda e: len(e) > 0)
        assert [(e["trackName"], e["mid"]) for e in ended] == [("cam", cam)]
        key = f"{pub_id}/cam"
        await until(subscriber, f"() => [remotes['{key}'].ended, remotes['{key}'].track.readyState]",
                    lambda v: v == [True, "ended"])
        packets = (await subscriber.evaluate(INBOUND))[mic]["packetsReceived"]
        await until(subscriber, INBOUND, lambda s: s[mic]["packetsReceived"] > packets + 50)
        assert await subscriber.evaluate("() => call.state") == "connected"

        # The publisher leaves: its forced close ends the microphone for the subscriber too.
        await publisher.evaluate("() => call.close()")
        assert await publisher.evaluate("() => [call.state, locals.mic.track.readyState]") == ["closed", "live"]
        ended = await until(subscriber, ENDED, lambda e: len(e) == 2)
        assert [e["trackName"] for e in ended] == ["cam", "mic"]
    finally:
        for context in contexts:
            await context.close()


async def test_pull_many_takes_three_publishers_in_one_renegotiation_all_or_nothing(appliance, browser):
    box = appliance()
    contexts = []
    try:
        publishers = [await sdk_page(browser, box, contexts) for _ in range(3)]
        await publishers[0].evaluate(PUSH, [["mic", "cam"], {"audio": True, "video": True}, None])
        for page in publishers[1:]:
            await page.evaluate(PUSH, [["cam"], {"audio": False, "video": True}, None])
        ids = [await p.evaluate("() => call.sessionId") for p in publishers]
        subscriber = await sdk_page(browser, box, contexts)
        await subscriber.evaluate("() => { requests.length = 0; }")
        pulled = await subscriber.evaluate(PULL_MANY, [{"sessionId": i, "trackName": "cam"} for i in ids])
        assert [p["sessionId"] for p in pulled] == ids and len({p["mid"] for p in pulled}) == 3
        requests = await subscriber.evaluate("() => requests.filter(r => r !== 'GET ')")  # not its stall checks
        assert requests == ["POST tracks/new", "PUT renegotiate"]
        await until(subscriber, INBOUND, decoding(*(p["mid"] for p in pulled)))

        # A track that does not exist rejects with the API's errorCode; pullMany is all or nothing.
        missing = {"sessionId": ids[0], "trackName": "nobody"}
        error = await subscriber.evaluate(ERROR, ["(item) => call.pull(item)", missing])
        assert (error["name"], error["errorCode"], error["failures"]) == (
            "EdgecallError", "not_found_track_error", ["not_found_track_error"]), error
        mixed = [{"sessionId": ids[0], "trackName": "mic"}, missing]
        error = await subscriber.evaluate(ERROR, ["(items) => call.pullMany(items)", mixed])
        assert error["errorCode"] == "not_found_track_error", error
        assert error["failures"] == [None, "not_found_track_error"], error
        # The half that worked was closed again: the session lists it inactive, and nothing else is left open.
        state = await subscriber.evaluate(f"() => fetch('{box.url(APP)}/sessions/' + call.sessionId, "
                                          "{headers: {Authorization: 'Bearer test-app-secret'}}).then(r => r.json())")
        assert [t["status"] for t in state["tracks"]] == ["active"] * 3 + ["inactive"]
        assert len(await subscriber.evaluate("() => events.filter(e => e.type === 'track')")) == 3
    finally:
        for context in contexts:
            await context.close()


# A canvas that changes every frame, as a second video source (a screen share stands in for it).
CANVAS_TRACK = """
async () => {
  const canvas = Object.assign(document.createElement("canvas"), {width: 320, height: 180});
  const g = canvas.getContext("2d");
  let n = 0;
  setInterval(() => { g.fillStyle = `hsl(${(n += 7) % 360} 80% 50%)`; g.fillRect(0, 0, 320, 180); }, 33);
  window.canvasTrack = canvas.captureStream(30).getVideoTracks()[0];
}
"""


async def test_replace_sends_another_track_without_renegotiating(appliance, browser):
    box = appliance()
    contexts = []
    try:
        publisher, subscriber = await sdk_page(browser, box, contexts), await sdk_page(browser, box, contexts)
        await publisher.evaluate(PUSH, [["cam"], {"audio": False, "video": {"width": 640, "height": 480}}, None])
        pub_id = await publisher.evaluate("() => call.sessionId")
        (pulled,) = await subscriber.evaluate(PULL_MANY, [{"sessionId": pub_id, "trackName": "cam"}])
        mid = pulled["mid"]
        before = await until(subscriber, INBOUND, lambda s: decoding(mid)(s) and s[mid]["frameWidth"] == 640)
        await publisher.evaluate(CANVAS_TRACK)
        requests = await publisher.evaluate("() => requests.length")
        await publisher.evaluate("() => locals.cam.replace(canvasTrack)")
        assert await publisher.evaluate("() => locals.cam.track === canvasTrack")
        # The subscriber keeps decoding on the same pull, now the canvas (its size tells).
        after = await until(subscriber, INBOUND, lambda s: s[mid]["frameWidth"] == 320)
        await until(subscriber, INBOUND, more_frames(mid, after[mid]["framesDecoded"] + 30))
        assert after[mid]["framesDecoded"] > before[mid]["framesDecoded"]
        assert await publisher.evaluate("() => requests.length") == requests
        assert await subscriber.evaluate("() => events.filter(e => e.type === 'trackended')") == []
        # Muted, the track still sends (black frames): the subscriber keeps decoding.
        await publisher.evaluate("() => locals.cam.mute(true)")
        assert await publisher.evaluate("() => [locals.cam.muted, canvasTrack.enabled]") == [True, False]
        frames = (await subscriber.evaluate(INBOUND))[mid]["framesDecoded"]
        await until(subscriber, INBOUND, more_frames(mid, frames + 10))
    finally:
        for context in contexts:
            await context.close()


# tests/e2e/test_simulcast.py: 1280x720 is the smallest capture for which libwebrtc sends three layers.
CAPTURE = {"width": 1280, "height": 720, "frameRate": 30}
LAYERS = [{"rid": "f"}, {"rid": "h", "scaleResolutionDownBy": 2}, {"rid": "q", "scaleResolutionDownBy": 4}]
WIDTH = {"f": 1280, "h": 640, "q": 320}


async def test_simulcast_push_and_set_layer_on_the_subscriber(appliance, browser):
    box = appliance()
    contexts = []
    try:
        publisher, subscriber = await sdk_page(browser, box, contexts), await sdk_page(browser, box, contexts)
        await publisher.evaluate(PUSH, [["cam"], {"audio": False, "video": CAPTURE}, LAYERS])
        pub_id = await publisher.evaluate("() => call.sessionId")
        layers = await until(publisher, "() => call.stats()",
                             lambda s: len(s["outbound"]["cam"].get("layers", {})) == 3)
        assert set(layers["outbound"]["cam"]["layers"]) == set(WIDTH)
        remote = await subscriber.evaluate(
            "async (item) => { const r = await call.pull(item, {preferredRid: 'q'}); window.cam = r; return r.mid; }",
            {"sessionId": pub_id, "trackName": "cam"})
        await until(subscriber, INBOUND, lambda s: decoding(remote)(s) and s[remote]["frameWidth"] == WIDTH["q"])
        for rid in ("f", "h"):
            await subscriber.evaluate("(rid) => cam.setLayer(rid)", rid)
            assert await subscriber.evaluate("() => cam.preferredRid") == rid
            await until(subscriber, INBOUND, lambda s, rid=rid: s[remote]["frameWidth"] == WIDTH[rid])
        error = await subscriber.evaluate(ERROR, ["(rid) => cam.setLayer(rid)", ""])
        assert error["errorCode"] == "invalid_params"
    finally:
        for context in contexts:
            await context.close()


# Each page publishes "chat" and subscribes to the other's: messages go both ways, text and binary.
CHAT = """
async (other) => {
  window.received = [];
  window.chat = await call.publishData("chat");
  if (other) {
    window.incoming = await call.subscribeData(other, "chat");
    incoming.addEventListener("message", (e) =>
      received.push(typeof e.data === "string" ? e.data : Array.from(new Uint8Array(e.data))));
  }
  return {id: chat.id, negotiated: chat.negotiated, label: chat.label};
}
"""
SUBSCRIBE_BACK = """
async (other) => {
  window.incoming = await call.subscribeData(other, "chat");
  incoming.addEventListener("message", (e) =>
    received.push(typeof e.data === "string" ? e.data : Array.from(new Uint8Array(e.data))));
}
"""
OPEN = "() => [chat.readyState, incoming.readyState]"
SEND = "(messages) => { for (const m of messages) chat.send(typeof m === 'string' ? m : new Uint8Array(m)); }"


async def test_data_channels_both_ways(appliance, browser):
    box = appliance()
    contexts = []
    try:
        a, b = await sdk_page(browser, box, contexts), await sdk_page(browser, box, contexts)
        a_id, b_id = (await a.evaluate("() => call.sessionId")), (await b.evaluate("() => call.sessionId"))
        published = await a.evaluate(CHAT, None)
        assert published["negotiated"] and published["label"] == "chat" and published["id"] is not None
        await b.evaluate(CHAT, a_id)
        await a.evaluate(SUBSCRIBE_BACK, b_id)
        for page in (a, b):
            await until(page, OPEN, lambda state: state == ["open", "open"])
        messages = ["hello", [0, 1, 2, 255], "x" * 100_000, "bye"]
        await a.evaluate(SEND, messages)
        await b.evaluate(SEND, ["and back"])
        assert await until(b, "() => received", lambda got: len(got) >= len(messages)) == messages
        assert await until(a, "() => received", lambda got: len(got) >= 1) == ["and back"]
        # Unknown publishers are refused with the API's code, and the client's queue goes on.
        error = await b.evaluate(ERROR, ["(id) => call.subscribeData(id, 'nothing')", a_id])
        assert error["name"] == "EdgecallError" and error["errorCode"] is not None
        await b.evaluate(SEND, ["still"])
        assert await until(a, "() => received", lambda got: len(got) >= 2) == ["and back", "still"]
    finally:
        for context in contexts:
            await context.close()


async def test_after_the_box_restarts_the_client_reconnects_and_media_flows_again(appliance, browser):
    """A box that restarts has forgotten every session: ICE fails, and each client makes a new
    session on the box that answers now, pushes its tracks again and fires "reconnected"; the app
    announces the new session id and the subscriber pulls from it."""
    box = appliance()
    contexts = []
    try:
        publisher, subscriber = await sdk_page(browser, box, contexts), await sdk_page(browser, box, contexts)
        await publisher.evaluate(PUSH, [["cam"], {"audio": False, "video": True}, None])
        await publisher.evaluate(CHAT, None)
        old_pub = await publisher.evaluate("() => call.sessionId")
        old_sub = await subscriber.evaluate("() => call.sessionId")
        (pulled,) = await subscriber.evaluate(PULL_MANY, [{"sessionId": old_pub, "trackName": "cam"}])
        await until(subscriber, INBOUND, decoding(pulled["mid"]))

        toml = box.config_path.read_text()
        box.stop()
        box = appliance(toml)  # the same ports: the clients' next requests reach the new box
        reconnected = "() => events.filter(e => e.type === 'reconnected').map(e => e.detail)"
        (pub_event,) = await until(publisher, reconnected, lambda e: len(e) == 1, tries=300)
        (sub_event,) = await until(subscriber, reconnected, lambda e: len(e) == 1, tries=300)
        new_pub = await publisher.evaluate("() => call.sessionId")
        assert pub_event == {"sessionId": new_pub, "previousSessionId": old_pub} and new_pub != old_pub
        assert sub_event["previousSessionId"] == old_sub and sub_event["sessionId"] != old_sub
        for page in (publisher, subscriber):
            states = [e["detail"] for e in await page.evaluate("() => events") if e["type"] == "statechange"]
            assert states[-2:] == ["reconnecting", "connected"], states
        # The publisher's track, pushed again under the same name on its new session.
        assert await publisher.evaluate("() => [locals.cam.sessionId, locals.cam.name]") == [new_pub, "cam"]
        # Its data channel opened again, a new RTCDataChannel on the new session.
        assert await events(publisher, "datachannel") == [{"name": "chat", "location": "local", "replaced": True}]
        # The subscriber's pull of the old session could not be made again: it ended.
        ended = await until(subscriber, ENDED, lambda e: len(e) == 1)
        assert ended[0]["sessionId"] == old_pub
        # The app announces the new session; the subscriber pulls from it, and frames decode again.
        (again,) = await subscriber.evaluate(PULL_MANY, [{"sessionId": new_pub, "trackName": "cam"}])
        await until(subscriber, INBOUND, decoding(again["mid"]))
    finally:
        for context in contexts:
            await context.close()

