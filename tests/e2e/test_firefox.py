"""The Calls flow in Firefox ESR, the second browser engine: with max-bundle Firefox offers its later
m-sections as port 0 + a=bundle-only (RFC 8843), which the box must take as bundled, not rejected."""
import time
from pathlib import Path

import pytest

CLIENT = (Path(__file__).parent / "calls_client.js").read_text()

pytestmark = pytest.mark.browser

PUSH_AND_PULL = """
const [base, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => {
  const pub = new Calls(base, 'test-app', 'test-app-secret');
  await pub.open();
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
  const tracks = [...stream.getAudioTracks(), ...stream.getVideoTracks()];
  const pushed = await pub.push(tracks.map((t, i) => [t, ["mic", "cam"][i]]));
  const offer = pub.pc.localDescription.sdp;
  await pub.connected;
  const sub = new Calls(base, 'test-app', 'test-app-secret');
  await sub.open();
  const pulled = await sub.pull(["mic", "cam"].map(trackName => ({sessionId: pub.sessionId, trackName})));
  await sub.connected;
  window.subscriber = sub;
  done({pushed, pulled, bundleOnly: offer.includes("a=bundle-only")});
})().catch(e => done({error: String(e)}));
"""
INBOUND = """
const done = arguments[arguments.length - 1];
window.subscriber.inbound().then(done, e => done({error: String(e)}));
"""


def test_firefox_pushes_camera_and_microphone_and_pulls_them_back(appliance, firefox):
    box = appliance()
    firefox.navigate(box.url("/"))
    firefox.execute_script(CLIENT, sandbox=None)
    result = firefox.execute_async_script(PUSH_AND_PULL, script_args=[box.api], sandbox=None)
    assert "error" not in result, result
    assert result["bundleOnly"], "Firefox no longer offers bundle-only sections: this test checks nothing new"
    assert [(t["trackName"], t.get("kind")) for t in result["pushed"]] == [("mic", "audio"), ("cam", "video")]
    assert all("errorCode" not in t for t in result["pulled"]), result["pulled"]
    mids = {t["trackName"]: t["mid"] for t in result["pulled"]}
    stats = {}
    for _ in range(150):  # bounded: 30 s
        stats = firefox.execute_async_script(INBOUND, sandbox=None)
        if stats.get(mids["cam"], {}).get("count", 0) > 10 and stats.get(mids["mic"], {}).get("count", 0) > 4800:
            break
        time.sleep(0.2)
    assert stats[mids["cam"]]["count"] > 10 and stats[mids["mic"]]["count"] > 4800, stats

# Data channels: Firefox gathers no host candidates for a page that never asked for camera or
# microphone (../shared/TESTING.md), so the page asks for the fake microphone first.
DATA = """
const [base, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => {
  window.keep = await navigator.mediaDevices.getUserMedia({audio: true});
  const pub = new Calls(base, 'test-app', 'test-app-secret');
  await pub.open({dataOffer: true});
  await pub.connected;
  const [chat] = await pub.dataChannels([{location: "local", dataChannelName: "chat"}]);
  const sub = new Calls(base, 'test-app', 'test-app-secret');
  await sub.open();
  await sub.establish();
  await sub.connected;
  const [remote] = await sub.dataChannels([{location: "remote", sessionId: pub.sessionId, dataChannelName: "chat"}]);
  const open = (c) => c.readyState === "open" ? null : new Promise(r => c.addEventListener("open", r, {once: true}));
  await Promise.all([open(pub.channels.chat), open(sub.channels.chat)]);
  window.pub = pub;
  window.sub = sub;
  done({chat, remote});
})().catch(e => done({error: String(e)}));
"""
SEND = """
for (const m of arguments[0]) window.pub.channels.chat.send(typeof m === "string" ? m : new Uint8Array(m));
"""


def test_firefox_data_channel_messages_reach_a_subscriber_in_order(appliance, firefox):
    box = appliance()
    firefox.navigate(box.url("/"))
    firefox.execute_script(CLIENT, sandbox=None)
    result = firefox.execute_async_script(DATA, script_args=[box.api], sandbox=None)
    assert "error" not in result, result
    assert result["chat"]["location"] == "local" and result["remote"]["dataChannelName"] == "chat"
    messages = ["hello", [0, 1, 2, 255], "", "x" * 200_000, "bye"]
    firefox.execute_script(SEND, script_args=[messages], sandbox=None)
    received = []
    for _ in range(150):  # bounded: 30 s
        received = firefox.execute_script("return window.sub.messages.chat;", sandbox=None)
        if len(received) >= len(messages):
            break
        time.sleep(0.2)
    assert received == messages
