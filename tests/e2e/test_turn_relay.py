"""Two Chromium pages connect through the box's TURN only (iceTransportPolicy "relay"), with
credentials each page fetches from the box's HTTP API, and video frames decode on the far side."""
import asyncio

import pytest

from tests.lab.browser import BROWSER_TEST

pytestmark = BROWSER_TEST

# In-page helpers: fetch credentials (CORS + bearer, as a browser app does), then non-trickle offer/answer.
SETUP = """
async ([api, transport]) => {
  const res = await fetch(api + "/v1/turn/keys/test-key/credentials/generate-ice-servers", {
    method: "POST", headers: {Authorization: "Bearer test-key-token"}, body: JSON.stringify({ttl: 600}),
  });
  if (res.status !== 201) throw new Error("credentials: HTTP " + res.status);
  let servers = (await res.json()).iceServers;
  if (transport) servers = servers.filter(s => s.username).map(s => ({...s, urls: s.urls.filter(u => u.startsWith("turn:") && u.endsWith("transport=" + transport))}));
  window.pc = new RTCPeerConnection({iceServers: servers, iceTransportPolicy: "relay"});
  window.gathered = () => new Promise(r => {
    if (pc.iceGatheringState === "complete") r();
    pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && r());
  });
  return servers.flatMap(s => s.urls);
}
"""
OFFER = """
async () => {
  const stream = await navigator.mediaDevices.getUserMedia({video: true});
  stream.getTracks().forEach(t => pc.addTrack(t, stream));
  await pc.setLocalDescription(await pc.createOffer());
  await gathered();
  return pc.localDescription.toJSON();
}
"""
ANSWER = """
async (offer) => {
  await pc.setRemoteDescription(offer);
  await pc.setLocalDescription(await pc.createAnswer());
  await gathered();
  return pc.localDescription.toJSON();
}
"""
FRAMES_DECODED = """
async () => {
  for (const s of (await pc.getStats()).values())
    if (s.type === "inbound-rtp" && s.kind === "video") return s.framesDecoded || 0;
  return 0;
}
"""
SELECTED_PAIR = """
async () => {
  const stats = await pc.getStats();
  for (const s of stats.values())
    if (s.type === "transport" && s.selectedCandidatePairId) {
      const pair = stats.get(s.selectedCandidatePairId);
      const local = stats.get(pair.localCandidateId);
      return {type: local.candidateType, relayProtocol: local.relayProtocol};
    }
  return null;
}
"""


async def _selected_pair(page, tries: int = 100):
    """The local candidate of the selected pair, once ICE has selected one (bounded polling)."""
    for _ in range(tries):
        pair = await page.evaluate(SELECTED_PAIR)
        if pair:
            return pair
        await asyncio.sleep(0.1)
    raise AssertionError("no selected candidate pair")


@pytest.mark.parametrize("transport", [None, "tcp"])
async def test_two_pages_connect_through_turn_only(appliance, browser, transport):
    box = appliance()
    contexts = [await browser.new_context() for _ in range(2)]
    try:
        sender, receiver = [await c.new_page() for c in contexts]
        for page in (sender, receiver):
            await page.goto(box.url("/"))
            urls = await page.evaluate(SETUP, [box.api, transport])
            assert urls and all("transport=tcp" in u for u in urls if u.startswith("turn")) == (transport == "tcp")
        answer = await receiver.evaluate(ANSWER, await sender.evaluate(OFFER))
        await sender.evaluate("async (a) => pc.setRemoteDescription(a)", answer)
        await receiver.wait_for_function(f"({FRAMES_DECODED})().then(n => n > 10)", timeout=30000, polling=250)
        for page in (sender, receiver):
            pair = await _selected_pair(page)
            assert pair["type"] == "relay"
            if transport:
                assert pair["relayProtocol"] == transport
    finally:
        for context in contexts:
            await context.close()
