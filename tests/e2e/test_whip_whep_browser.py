"""WHIP and WHEP in Chromium with clients nobody here wrote: medooze's whip.js and whep.js (npm
`whip-whep`, installed by ./build.sh setup into tests/e2e/clients), loaded unchanged into the page.
A publisher pushes camera and microphone with a publish token, players view with a play token, the
publisher restarts ICE by PATCH mid-stream and pictures keep coming. Also the player of the early
WHEP draft (empty POST, answer PATCHed back as fetch() sends a string), written here after
Cloudflare's example player, and simulcast layers chosen by query. Figures print with -s."""
import asyncio
from pathlib import Path

import pytest

from tests.e2e.test_sfu import until
from tests.lab.browser import BROWSER_TEST
from tests.lab.calls_api import Api

pytestmark = BROWSER_TEST

CLIENTS = Path(__file__).parent / "clients" / "node_modules" / "whip-whep"

# The library's files, as ES modules from blob: URLs (unchanged: no bundler, no edits).
LOAD = """
async ([whip, whep]) => {
  const load = async (source) => import(URL.createObjectURL(new Blob([source], {type: "text/javascript"})));
  window.WHIPClient = (await load(whip)).WHIPClient;
  window.WHEPClient = (await load(whep)).WHEPClient;
}
"""
PUBLISH = """
async ([url, token, encodings, capture]) => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: capture || true});
  window.pc = new RTCPeerConnection({bundlePolicy: "max-bundle"});
  pc.addTransceiver(stream.getAudioTracks()[0], {direction: "sendonly"});
  pc.addTransceiver(stream.getVideoTracks()[0], {direction: "sendonly", sendEncodings: encodings || undefined});
  window.whip = new WHIPClient();
  await whip.publish(pc, url, token);
  await new Promise((resolve, reject) => {
    const check = () => pc.connectionState === "connected" ? resolve() :
                        pc.connectionState === "failed" ? reject(new Error("failed")) : setTimeout(check, 20);
    check();
  });
  return {etag: whip.etag, resource: String(whip.resourceURL), iceServers: pc.getConfiguration().iceServers};
}
"""
# The player as medooze's README writes it, timed from the POST to the first frame on a <video>.
VIEW = """
async ([url, token]) => {
  window.pc = new RTCPeerConnection({bundlePolicy: "max-bundle"});
  pc.addTransceiver("audio", {direction: "recvonly"});
  pc.addTransceiver("video", {direction: "recvonly"});
  const video = document.createElement("video");
  video.muted = true; video.autoplay = true; document.body.append(video);
  const firstFrame = new Promise(resolve => video.requestVideoFrameCallback(() => resolve(performance.now())));
  pc.ontrack = (event) => { if (event.track.kind === "video") video.srcObject = new MediaStream([event.track]); };
  const connected = new Promise(resolve => pc.addEventListener("connectionstatechange",
    () => pc.connectionState === "connected" && resolve(performance.now())));
  window.whep = new WHEPClient();
  const start = performance.now();
  await whep.view(pc, url, token);
  const answered = performance.now();
  return {joinMs: (await firstFrame) - start, answeredMs: answered - start, connectedMs: (await connected) - start};
}
"""
# draft-ietf-wish-whep-00, as Cloudflare's example player speaks it: an empty POST, the box's offer,
# the answer PATCHed back with no Content-Type of its own (fetch() labels a string text/plain).
VIEW_DRAFT_00 = """
async ([url, token]) => {
  window.pc = new RTCPeerConnection({bundlePolicy: "max-bundle"});
  const video = document.createElement("video");
  video.muted = true; video.autoplay = true; document.body.append(video);
  const firstFrame = new Promise(resolve => video.requestVideoFrameCallback(() => resolve(performance.now())));
  pc.ontrack = (event) => { if (event.track.kind === "video") video.srcObject = new MediaStream([event.track]); };
  const start = performance.now();
  const offer = await fetch(url, {method: "POST", headers: {Authorization: `Bearer ${token}`}});
  if (offer.status !== 201) throw new Error(`POST: ${offer.status} ${await offer.text()}`);
  await pc.setRemoteDescription({type: "offer", sdp: await offer.text()});
  await pc.setLocalDescription(await pc.createAnswer());
  const resource = new URL(offer.headers.get("location"), url);
  const patched = await fetch(resource, {method: "PATCH", body: pc.localDescription.sdp,
                                         headers: {Authorization: `Bearer ${token}`}});
  if (patched.status !== 204) throw new Error(`PATCH: ${patched.status}`);
  return {joinMs: (await firstFrame) - start};
}
"""
VIDEO_IN = """
async () => {
  for (const s of (await pc.getStats()).values())
    if (s.type === "inbound-rtp" && s.kind === "video") return {frames: s.framesDecoded || 0, width: s.frameWidth};
  return {frames: 0};
}
"""
RESTART = """
async () => {
  const before = whip.etag;
  await whip.restart();
  return {before, after: whip.etag, state: pc.iceConnectionState};
}
"""
SIMULCAST = [{"rid": "f"}, {"rid": "h", "scaleResolutionDownBy": 2}, {"rid": "q", "scaleResolutionDownBy": 4}]
WIDTH = {"f": 1280, "h": 640, "q": 320}


def tokens(box, name: str) -> dict[str, str]:
    api = Api(box)
    out = {}
    for kind in ("publish", "play"):
        status, minted = api("POST", f"/streams/{name}/tokens", {"kind": kind, "ttl": 600})
        assert status == 201, minted
        out[kind] = minted["token"]
    return out


def whip_whep_clients() -> list[str]:
    """The sources of whip.js and whep.js (skips when npm did not install them)."""
    if not (CLIENTS / "whip.js").exists():
        pytest.skip(f"{CLIENTS} is missing (./build.sh setup installs the npm package whip-whep)")
    return [(CLIENTS / "whip.js").read_text(), (CLIENTS / "whep.js").read_text()]


@pytest.fixture
def clients():
    return whip_whep_clients()


async def page_with_clients(browser, box, clients, contexts):
    context = await browser.new_context()
    contexts.append(context)
    page = await context.new_page()
    await page.goto(box.url("/"))
    await page.evaluate(LOAD, clients)
    return page


async def frames(page) -> int:
    return (await page.evaluate(VIDEO_IN))["frames"]


async def test_whip_js_publishes_whep_js_and_the_draft_00_player_play_through_an_ice_restart(appliance, browser,
                                                                                           clients):
    box = appliance()
    name = "broadcast"
    token = tokens(box, name)
    contexts: list = []
    try:
        publisher = await page_with_clients(browser, box, clients, contexts)
        published = await publisher.evaluate(PUBLISH, [box.url(f"/v1/apps/test-app/whip/{name}"), token["publish"]])
        # The Link headers became the PeerConnection's ICE servers: the box's STUN and TURN.
        urls = [url for server in published["iceServers"] for url in (
            server["urls"] if isinstance(server["urls"], list) else [server["urls"]])]
        assert any(u.startswith("stun:") for u in urls) and any(u.startswith("turn:") for u in urls), urls

        player = await page_with_clients(browser, box, clients, contexts)
        joined = await player.evaluate(VIEW, [box.url(f"/v1/apps/test-app/whep/{name}"), token["play"]])
        draft = await page_with_clients(browser, box, clients, contexts)
        draft_joined = await draft.evaluate(VIEW_DRAFT_00, [box.url(f"/v1/apps/test-app/whep/{name}"), token["play"]])
        print(f"\nWHEP join (POST to first frame on a <video>, loopback): whep.js {joined['joinMs']:.0f} ms, "
              f"draft-00 player {draft_joined['joinMs']:.0f} ms")

        restarted = await publisher.evaluate(RESTART)
        assert restarted["after"] and restarted["after"] != restarted["before"], restarted
        # Pictures keep coming after the restart: checks with the new credentials keep the path.
        for page in (player, draft):
            seen = await frames(page)
            await until(page, VIDEO_IN, lambda stats, seen=seen: stats["frames"] > seen + 30)
        await asyncio.sleep(2)  # past a consent check or two on the new credentials
        seen = await frames(player)
        await until(player, VIDEO_IN, lambda stats: stats["frames"] > seen + 30)

        await publisher.evaluate("() => whip.stop()")
        status = await player.evaluate("async ([url, token]) => (await fetch(url, {method: 'POST', headers: "
                                       "{Authorization: `Bearer ${token}`, 'Content-Type': 'application/sdp'}, "
                                       "body: 'v=0\\r\\n'})).status",
                                       [box.url(f"/v1/apps/test-app/whep/{name}"), token["play"]])
        assert status == 404  # the stream ended with its DELETE
    finally:
        for context in contexts:
            await context.close()


async def test_whep_players_choose_simulcast_layers_by_query(appliance, browser, clients):
    box = appliance()
    contexts: list = []
    try:
        publisher = await page_with_clients(browser, box, clients, contexts)
        await publisher.evaluate(PUBLISH, [box.url("/v1/apps/test-app/whip/layers"), "test-app-secret", SIMULCAST,
                                           {"width": 1280, "height": 720, "frameRate": 30}])
        widths = {}
        for rid in ("q", "f"):
            player = await page_with_clients(browser, box, clients, contexts)
            await player.evaluate(VIEW, [box.url(f"/v1/apps/test-app/whep/layers?layer={rid}"), "test-app-secret"])
            widths[rid] = (await until(player, VIDEO_IN, lambda stats, rid=rid: stats.get("width") == WIDTH[rid]))["width"]
        print(f"\nWHEP layers by query: {widths}")
        assert widths == {"q": 320, "f": 1280}
    finally:
        for context in contexts:
            await context.close()



# Firefox gathers no host candidates for a page that never asked for camera or microphone
# (../shared/TESTING.md): a player page asks first.
FIREFOX_VIEW = "async ([url, token]) => { window.keep = await navigator.mediaDevices.getUserMedia({audio: true}); " \
               "return (" + VIEW.strip() + ")([url, token]); }"


async def test_firefox_publishes_with_whip_js_and_plays_with_whep_js(appliance, browser, clients, firefox_page):
    """Both ways across engines: Firefox publishes and Chromium plays; Chromium publishes and Firefox plays."""
    box = appliance()
    contexts: list = []
    fox = firefox_page
    try:
        await fox.goto(box.url("/"))
        await fox.evaluate(LOAD, clients)
        await fox.evaluate(PUBLISH, [box.url("/v1/apps/test-app/whip/from-firefox"), "test-app-secret", None, None])
        player = await page_with_clients(browser, box, clients, contexts)
        joined = await player.evaluate(VIEW, [box.url("/v1/apps/test-app/whep/from-firefox"), "test-app-secret"])
        await until(player, VIDEO_IN, lambda stats: stats["frames"] > 30)

        publisher = await page_with_clients(browser, box, clients, contexts)
        await publisher.evaluate(PUBLISH, [box.url("/v1/apps/test-app/whip/to-firefox"), "test-app-secret", None, None])
        await fox.goto(box.url("/"))
        await fox.evaluate(LOAD, clients)
        fox_joined = await fox.evaluate(FIREFOX_VIEW, [box.url("/v1/apps/test-app/whep/to-firefox"), "test-app-secret"])
        for _ in range(150):
            if (await fox.evaluate(VIDEO_IN))["frames"] > 30:
                break
            await asyncio.sleep(0.2)
        assert (await fox.evaluate(VIDEO_IN))["frames"] > 30
        print(f"\nWHEP join (loopback): Chromium playing Firefox {joined['joinMs']:.0f} ms, "
              f"Firefox playing Chromium {fox_joined['joinMs']:.0f} ms")
    finally:
        for context in contexts:
            await context.close()
