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
def until(read, condition):
    """`read()` every 0.2 s until `condition` holds for its value (bounded: 30 s); the last value."""
    value = read()
    for _ in range(150):
        if condition(value):
            break
        time.sleep(0.2)
        value = read()
    return value


def flowing(stats: dict, mids: dict) -> bool:
    """Video frames decoded and audio samples received past what shows media flows."""
    return stats.get(mids["cam"], {}).get("count", 0) > 10 and stats.get(mids["mic"], {}).get("count", 0) > 4800


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
    stats = until(lambda: firefox.execute_async_script(INBOUND, sandbox=None), lambda s: flowing(s, mids))
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
    received = until(lambda: firefox.execute_script("return window.sub.messages.chat;", sandbox=None),
                     lambda got: len(got) >= len(messages))
    assert received == messages

FAN_OUT = """
const [base, subscribers, tcpOnly, done] = [arguments[0], arguments[1], arguments[2], arguments[arguments.length - 1]];
(async () => {
  const pub = new Calls(base, 'test-app', 'test-app-secret', {tcpOnly});
  await pub.open();
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
  await pub.push([...stream.getAudioTracks(), ...stream.getVideoTracks()].map((t, i) => [t, ["mic", "cam"][i]]));
  await pub.connected;
  window.subs = [];
  const pulled = [];
  for (let i = 0; i < subscribers; i++) {
    const sub = new Calls(base, 'test-app', 'test-app-secret', {tcpOnly});
    await sub.open();
    pulled.push(await sub.pull(["mic", "cam"].map(trackName => ({sessionId: pub.sessionId, trackName}))));
    await sub.connected;
    window.subs.push(sub);
  }
  done({pulled});
})().catch(e => done({error: String(e)}));
"""
FAN_OUT_INBOUND = """
const done = arguments[arguments.length - 1];
Promise.all(window.subs.map(s => s.inbound())).then(done, e => done({error: String(e)}));
"""


def _fan_out(box, firefox, subscribers: int, tcp_only: bool) -> None:
    firefox.navigate(box.url("/"))
    firefox.execute_script(CLIENT, sandbox=None)
    result = firefox.execute_async_script(FAN_OUT, script_args=[box.api, subscribers, tcp_only], sandbox=None)
    assert "error" not in result, result
    mids = [{t["trackName"]: t["mid"] for t in pulled} for pulled in result["pulled"]]
    stats = until(lambda: firefox.execute_async_script(FAN_OUT_INBOUND, sandbox=None),
                  lambda got: all(flowing(s, m) for s, m in zip(got, mids)))
    assert all(flowing(s, m) for s, m in zip(stats, mids)), f"media never flowed to every subscriber: {stats}"


def test_firefox_five_subscribers_pull_one_publisher(appliance, firefox):
    _fan_out(appliance(), firefox, 5, tcp_only=False)


def test_firefox_pushes_and_pulls_over_ice_tcp_only(appliance, firefox):
    """ICE-TCP (RFC 6544 passive candidates on [sfu] tcp) when UDP cannot reach the box."""
    from tests.lab.appliance import box_config, free_port

    tcp = free_port("tcp")
    box = appliance(box_config(free_port("tcp"), free_port("udp"), free_port("udp", "tcp"))
                    .replace("[sfu]\n", f'[sfu]\ntcp = "127.0.0.1:{tcp}"\n'))
    _fan_out(box, firefox, 1, tcp_only=True)
    protocol = firefox.execute_async_script(REMOTE_PROTOCOL, sandbox=None)
    assert protocol == "tcp", protocol


REMOTE_PROTOCOL = """
const done = arguments[arguments.length - 1];
window.subs[0].pc.getStats().then(stats => {
  const pair = [...stats.values()].find(s => s.type === "candidate-pair" && s.nominated && s.state === "succeeded");
  done(pair ? stats.get(pair.remoteCandidateId).protocol : null);
}, e => done(String(e)));
"""

# Two PeerConnections in the page, relay only, through the box's TURN with credentials from its API.
RELAY = """
const [api, transport, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
(async () => {
  const res = await fetch(api + "/v1/turn/keys/test-key/credentials/generate-ice-servers", {
    method: "POST", headers: {Authorization: "Bearer test-key-token"}, body: JSON.stringify({ttl: 600}),
  });
  let servers = (await res.json()).iceServers.filter(s => s.username);
  servers = servers.map(s => ({...s, urls: s.urls.filter(u => u.startsWith("turn:") && u.endsWith("transport=" + transport))}));
  const config = {iceServers: servers, iceTransportPolicy: "relay"};
  const [a, b] = [new RTCPeerConnection(config), new RTCPeerConnection(config)];
  const gathered = (pc) => new Promise(r => {
    if (pc.iceGatheringState === "complete") r();
    pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && r());
  });
  const stream = await navigator.mediaDevices.getUserMedia({video: true});
  stream.getTracks().forEach(t => a.addTrack(t, stream));
  await a.setLocalDescription(await a.createOffer());
  await gathered(a);
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await gathered(b);
  await a.setRemoteDescription(b.localDescription);
  window.relayed = b;
  done({});
})().catch(e => done({error: String(e)}));
"""
RELAYED = """
const done = arguments[arguments.length - 1];
window.relayed.getStats().then(stats => {
  let frames = 0, type = null;
  for (const s of stats.values()) {
    if (s.type === "inbound-rtp" && s.kind === "video") frames = s.framesDecoded || 0;
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") type = stats.get(s.localCandidateId).candidateType;
  }
  done({frames, type});
}, e => done({error: String(e)}));
"""


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_firefox_connects_through_the_boxs_turn_only(appliance, firefox, transport):
    box = appliance()
    firefox.navigate(box.url("/"))
    result = firefox.execute_async_script(RELAY, script_args=[box.api, transport], sandbox=None)
    assert "error" not in result, result
    state = until(lambda: firefox.execute_async_script(RELAYED, sandbox=None), lambda s: s.get("frames", 0) > 10)
    assert state.get("frames", 0) > 10 and state["type"] == "relay", state
