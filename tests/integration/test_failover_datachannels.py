"""Data channels after a box dies mid-call (issue 19), in Chromium with the JavaScript client, on
loopback: two appliance processes clustered through a real nats-server, and the UDP switch standing in
for the anycast router (tests/lab/udp_switch.py), as in tests/integration/test_failover.py.

The publisher page's media reaches box A through the switch (its answers' candidates are rewritten
to name the switch, as an anycast address would be named); its API requests and the subscriber page
go to box B. A is killed with SIGKILL and the switch moves the flow to B, which carries the media
PeerConnection on but has no SCTP association for it: GET session says its data channels are
"inactive". The client opens them again on a data-only session (a second PeerConnection): its remote
channel is subscribed again, and its local one published under the new session, which the app
announces (here the test) so that the subscriber subscribes there. Messages flow both ways again, and
the media PeerConnection saw no offer, no answer and no ICE restart. The meeting page does the same
through the room: its chat moves, the roster names the new session (dataSessionId), and the other
page subscribes there and hears it again."""
from __future__ import annotations

import asyncio
import signal
import time
from typing import TYPE_CHECKING

from tests.e2e.test_sfu import until
from tests.integration.test_cluster_calls import media_port, metric
from tests.integration.test_failover import boxes
from tests.lab.browser import BROWSER_TEST
from tests.lab.failover import NEGOTIATION, REPORT, SAMPLE_MS, WATCH, Watched
from tests.lab.nats import nats_servers
from tests.lab.udp_switch import UdpSwitch

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Page

__all__ = ["boxes", "nats_servers"]  # fixtures, used below by name

pytestmark = BROWSER_TEST

APP = "/v1/apps/test-app"
TRIES = 300  # `until` polls every 0.2 s: a bound against a hang, never a measure
# The client, in `window.call` (and `window.calls`, the name tests/lab/failover.py's watcher reads);
# every "datachannel" event is recorded, and each channel the page listens to, old or new, records
# what it receives under the channel's name. `rewrite` [from, to] edits every answer of the API: the
# box's media port in the SFU's candidates becomes the switch's.
SETUP = """
async ([module, base, rewrite]) => {
  const { Edgecall } = await import(module);
  if (rewrite) {
    const fetch0 = window.fetch.bind(window);
    window.fetch = async (url, init) => {
      const response = await fetch0(url, init);
      const text = (await response.text()).replaceAll(` ${rewrite[0]} typ host`, ` ${rewrite[1]} typ host`);
      return new Response(text, {status: response.status, headers: response.headers});
    };
  }
  window.received = {};
  window.channels = {};
  window.moves = [];
  window.listen = (channel) => {
    channels[channel.label] = channel;
    channel.addEventListener("message", (e) => (received[channel.label] ||= []).push(e.data));
  };
  window.call = window.calls = new Edgecall({base, token: "test-app-secret"});
  call.addEventListener("datachannel", (e) => {
    const d = e.detail;
    moves.push({name: d.name, location: d.location, sessionId: d.sessionId, moved: d.moved,
                replaced: d.previous !== null && d.previous !== d.channel, previousState: d.previous.readyState,
                at: Date.now()});
    listen(d.channel);
  });
  await call.connect();
  return call.sessionId;
}
"""
PUSH_CAMERA = """
async () => {
  const stream = await navigator.mediaDevices.getUserMedia({video: {width: 320, height: 240, frameRate: 15}});
  await call.push(stream.getVideoTracks()[0], {name: "cam"});
}
"""
PUBLISH = "async (name) => { listen(await call.publishData(name)); }"
SUBSCRIBE = "async ([session, name]) => { listen(await call.subscribeData(session, name)); }"
STATES = "() => Object.fromEntries(Object.entries(channels).map(([name, c]) => [name, c.readyState]))"
SEND = "([name, text]) => channels[name].send(text)"
RECEIVED = "(name) => received[name] || []"


# The meeting page of a person whose media goes through the switch: the same rewrite, installed before
# the page's scripts run.
REWRITE = """
(() => {
  const fetch0 = window.fetch.bind(window);
  window.fetch = async (url, init) => {
    const response = await fetch0(url, init);
    const text = (await response.text()).replaceAll(" %d typ host", " %d typ host");
    return new Response(text, {status: response.status, headers: response.headers});
  };
})();
"""
ROOM = "failover"
MESSAGES = "() => [...document.querySelectorAll('#messages li')].map(li => li.textContent)"
CHAT_OPEN = "() => [meeting.chat, ...[...meeting.peers.values()].map(p => p.chat)].map(c => c && c.readyState)"


async def sdk_page(browser, box, contexts, rewrite=None):
    context = await browser.new_context()
    contexts.append(context)
    page = await context.new_page()
    await page.goto(box.url("/"))
    session = await page.evaluate(SETUP, [box.url("/sdk/edgecall.js"), box.url(APP), rewrite])
    return page, session


async def exchange(sender, receiver, name: str, text: str) -> None:
    """`text` sent on `name` until the receiver's channel of that name has it (a channel that has just
    opened on the box may miss the first message: sent again, bounded)."""
    for _ in range(TRIES // 5):
        await sender.evaluate(SEND, [name, text])
        for _ in range(5):
            if text in await receiver.evaluate(RECEIVED, name):
                return
            await asyncio.sleep(0.2)
    raise AssertionError(f"{text!r} on {name!r} never arrived")


async def test_data_channels_open_again_on_a_data_only_session_when_the_box_dies(boxes, browser):
    box_a, box_b = boxes
    switch = await UdpSwitch.start(media_port(box_a))
    contexts: list[BrowserContext] = []
    try:
        publisher, pub_id = await sdk_page(browser, box_b, contexts, [media_port(box_b), switch.port])
        subscriber, sub_id = await sdk_page(browser, box_b, contexts)
        await publisher.evaluate(PUSH_CAMERA)
        await publisher.evaluate(PUBLISH, "chat")
        await subscriber.evaluate(PUBLISH, "back")
        await subscriber.evaluate(SUBSCRIBE, [pub_id, "chat"])
        await publisher.evaluate(SUBSCRIBE, [sub_id, "back"])
        for page in (publisher, subscriber):
            await until(page, STATES, lambda s: set(s.values()) == {"open"}, tries=TRIES)
        await exchange(publisher, subscriber, "chat", "before")
        await exchange(subscriber, publisher, "back", "before, back")
        # The publisher's PeerConnection is box A's (its media came through the switch), the
        # subscriber's box B's.
        assert metric(box_a, "edgecall_cluster_handover", event="taken") == 1
        assert metric(box_a, "edgecall_sfu_sessions") == 1

        await publisher.evaluate(WATCH, [SAMPLE_MS, list(NEGOTIATION)])
        await asyncio.sleep(2.5)  # a checkpoint or two of the session's media in the store
        killed = time.time()
        box_a.stop(signal.SIGKILL)
        switch.move_to(media_port(box_b))  # the router withdraws the dead box's route

        moves = await until(publisher, "() => moves", lambda m: len(m) == 2, tries=TRIES)
        moved_after = max(m.pop("at") for m in moves) / 1000 - killed
        data_id = await publisher.evaluate("() => call.dataSessionId")
        assert data_id not in (pub_id, sub_id)
        assert await publisher.evaluate("() => call.sessionId") == pub_id
        # The channels still looked open to the browser: only the box knew that they were lost.
        assert sorted(moves, key=lambda m: m["name"]) == [
            {"name": "back", "location": "remote", "sessionId": sub_id, "moved": True, "replaced": True,
             "previousState": "open"},
            {"name": "chat", "location": "local", "sessionId": data_id, "moved": True, "replaced": True,
             "previousState": "open"}]
        assert metric(box_b, "edgecall_cluster_handover", event="carried_on") == 1

        # The remote channel works again on its own: the subscriber's messages reach the new one.
        await until(publisher, STATES, lambda s: s == {"chat": "open", "back": "open"}, tries=TRIES)
        await exchange(subscriber, publisher, "back", "after, back")
        # Announced the new session (the meeting page does it through the room's roster), the subscriber
        # drops its subscription to the old one, subscribes there and hears the publisher again.
        await subscriber.evaluate("() => channels.chat.close()")
        await subscriber.evaluate(SUBSCRIBE, [data_id, "chat"])
        await until(subscriber, STATES, lambda s: s == {"chat": "open", "back": "open"}, tries=TRIES)
        await exchange(publisher, subscriber, "chat", "after")
        assert await subscriber.evaluate("() => moves") == []  # its box lived: nothing of it moved

        # The media PeerConnection was carried on untouched: no offer, no answer, no ICE restart.
        watched = Watched(await publisher.evaluate(REPORT))
        assert watched.negotiation_problems() == []
        print(f"\npublisher after SIGKILL of its box: channels opened again {moved_after:.2f} s later; "
              f"{watched.state_line()}")
    finally:
        for context in contexts:
            await context.close()
        switch.close()


async def test_the_meeting_chat_moves_and_the_room_follows_when_the_box_dies(boxes, browser):
    box_a, box_b = boxes
    switch = await UdpSwitch.start(media_port(box_a))
    contexts: list[BrowserContext] = []
    pages: list[Page] = []
    try:
        for name, rewrite in (("P1", True), ("P2", False)):
            context = await browser.new_context()
            contexts.append(context)
            if rewrite:
                await context.add_init_script(REWRITE % (media_port(box_b), switch.port))
            page = await context.new_page()
            await page.goto(box_b.url(f"/meet/{ROOM}?name={name}&autojoin=1"))
            pages.append(page)
        p1, p2 = pages
        for page in pages:
            await until(page, CHAT_OPEN, lambda states: states == ["open", "open"], tries=TRIES)
        await until(p1, "() => meeting.send('before')", bool, tries=TRIES)
        await until(p2, MESSAGES, lambda texts: "P1before" in texts, tries=TRIES)
        assert metric(box_a, "edgecall_sfu_sessions") == 1  # P1's media session
        media = await p1.evaluate("() => meeting.call.sessionId")

        await asyncio.sleep(2.5)  # a checkpoint or two of the session's media in the store
        box_a.stop(signal.SIGKILL)
        switch.move_to(media_port(box_b))

        # P1's chat moved to a data-only session, and the room says so; P2 subscribes to it there.
        data = await until(p1, "() => meeting.call.dataSessionId", lambda session: session != media, tries=TRIES)
        assert await p1.evaluate("() => meeting.call.sessionId") == media
        await until(p2, "() => meeting.roster.map(p => p.dataSessionId)", lambda sessions: data in sessions,
                    tries=TRIES)
        await until(p2, CHAT_OPEN, lambda states: states == ["open", "open"], tries=TRIES)
        await until(p1, "() => meeting.send('after')", bool, tries=TRIES)
        await until(p2, MESSAGES, lambda texts: "P1after" in texts, tries=TRIES)
        # And the other way: P1's subscription to P2's chat moved with it.
        await until(p2, "() => meeting.send('back')", bool, tries=TRIES)
        await until(p1, MESSAGES, lambda texts: "P2back" in texts, tries=TRIES)
        assert await p1.evaluate("() => meeting.call.pc.signalingState") == "stable"
    finally:
        for context in contexts:
            await context.close()
        switch.close()
