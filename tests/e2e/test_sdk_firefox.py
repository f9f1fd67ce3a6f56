"""The box's JavaScript client (/sdk/edgecall.js) in Firefox ESR, the second engine (Chromium's tests are
test_sdk.py). Marionette runs page functions through tests/lab/firefox.py's EVALUATE wrapper."""
import time

import pytest

from tests.e2e.test_sdk import APP
from tests.lab.firefox import EVALUATE

pytestmark = pytest.mark.browser

# A module script imports the client into the page (Marionette's scripts are not modules).
FIREFOX_LOAD = """
async (module) => {
  const script = Object.assign(document.createElement("script"), {type: "module"});
  script.textContent = `import { Edgecall } from ${JSON.stringify(module)}; window.Edgecall = Edgecall;`;
  document.head.append(script);
  for (let i = 0; i < 100 && !window.Edgecall; i++) await new Promise(r => setTimeout(r, 50));
  return typeof window.Edgecall;
}
"""
# Two calls in one page: one pushes camera and microphone and publishes "chat", the other pulls and
# subscribes. getUserMedia comes first: Firefox gathers no host candidates (so never connects to a
# box on loopback) in a page that has not been granted camera or microphone (../shared/TESTING.md).
FIREFOX_CALL = """
async (base) => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
  const pub = new Edgecall({base, token: "test-app-secret"});
  const sub = new Edgecall({base, token: "test-app-secret"});
  await Promise.all([pub.connect(), sub.connect()]);
  const [mic, cam] = await Promise.all([pub.push(stream.getAudioTracks()[0], {name: "mic"}),
                                        pub.push(stream.getVideoTracks()[0], {name: "cam"})]);
  const pulled = await sub.pullMany(["mic", "cam"].map(trackName => ({sessionId: pub.sessionId, trackName})));
  const chat = await pub.publishData("chat");
  const incoming = await sub.subscribeData(pub.sessionId, "chat");
  window.received = [];
  incoming.addEventListener("message", (e) => received.push(e.data));
  window.ended = [];
  sub.addEventListener("trackended", (e) => ended.push(e.detail.trackName));
  Object.assign(window, {pub, sub, cam, chat, incoming});
  return Object.fromEntries(pulled.map(r => [r.trackName, r.mid]));
}
"""


def test_firefox_pushes_pulls_and_sends_on_a_data_channel(appliance, firefox):
    def evaluate(script, arg=None):
        result = firefox.execute_async_script(EVALUATE % script, script_args=[arg], sandbox=None)
        assert "error" not in result, result["error"]
        return result["value"]

    def wait_for(script, condition):
        value = evaluate(script)
        for _ in range(150):  # bounded: 30 s
            if condition(value):
                return value
            time.sleep(0.2)
            value = evaluate(script)
        raise AssertionError(f"condition never held; last value {value!r}")

    box = appliance()
    firefox.navigate(box.url("/"))
    assert evaluate(FIREFOX_LOAD, box.url("/sdk/edgecall.js")) == "function"
    mids = evaluate(FIREFOX_CALL, box.url(APP))
    wait_for("async () => (await sub.stats()).inbound",
             lambda s: (s[mids["cam"]]["framesDecoded"] or 0) > 10 and s[mids["mic"]]["packetsReceived"] > 50)
    wait_for("() => [chat.readyState, incoming.readyState]", lambda state: state == ["open", "open"])
    messages = ["hello", "x" * 100_000, "bye"]
    evaluate("(messages) => { for (const m of messages) chat.send(m); }", messages)
    assert wait_for("() => received", lambda got: len(got) >= len(messages)) == messages
    # The publisher closes its camera: the subscriber's copy ends.
    evaluate("() => cam.close()")
    assert wait_for("() => ended", lambda got: len(got) > 0) == ["cam"]
