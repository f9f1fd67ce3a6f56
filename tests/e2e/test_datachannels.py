"""Data channels in Chromium through the box's SFU (issue 4): a message published by one page arrives
at three subscriber pages, text and binary, in order."""
import asyncio

from tests.e2e.test_sfu import page_for, until
from tests.lab.browser import BROWSER_TEST

pytestmark = BROWSER_TEST

# The publisher takes the older flow (its first offer, with only an in-band data channel, goes to
# sessions/new), then publishes "chat" with datachannels/new.
PUBLISH = """
async () => {
  await calls.open({dataOffer: true});
  await calls.connected;
  const [chat] = await calls.dataChannels([{location: "local", dataChannelName: "chat"}]);
  return {id: calls.sessionId, chat};
}
"""
# Each subscriber has the SFU offer the m=application (datachannels/establish), then subscribes.
SUBSCRIBE = """
async (publisher) => {
  await calls.open();
  await calls.establish();
  await calls.connected;
  const [chat] = await calls.dataChannels([{location: "remote", sessionId: publisher, dataChannelName: "chat"}]);
  return chat;
}
"""
SEND = """
(messages) => {
  for (const m of messages) calls.channels.chat.send(typeof m === "string" ? m : new Uint8Array(m));
}
"""
OPEN = "() => calls.channels.chat.readyState"
RECEIVED = "() => calls.messages.chat"


def all_active(state):
    return bool(state["dataChannels"]) and all(c["status"] == "active" for c in state["dataChannels"])


async def test_a_message_published_by_one_page_arrives_at_three_subscribers(appliance, browser):
    box = appliance()
    contexts = []
    try:
        publisher = await page_for(browser, box, contexts)
        published = await publisher.evaluate(PUBLISH)
        pub_id = published["id"]
        assert published["chat"]["location"] == "local" and published["chat"]["id"] % 2 == 1
        subscribers = [await page_for(browser, box, contexts) for _ in range(3)]
        channels = await asyncio.gather(*(s.evaluate(SUBSCRIBE, pub_id) for s in subscribers))
        assert all(c["sessionId"] == pub_id and c["dataChannelName"] == "chat" for c in channels)
        for page in (publisher, *subscribers):
            await until(page, OPEN, lambda state: state == "open")
            await until(page, "() => calls.session()", all_active)

        # Text and binary, in order; the large one spans many SCTP packets both ways.
        large = "x" * 200_000
        messages = ["hello", [0, 1, 2, 255], "", large, "bye"]
        await publisher.evaluate(SEND, messages)
        for page in subscribers:
            received = await until(page, RECEIVED, lambda got: len(got) >= len(messages))
            assert received == messages

        # One-way: a subscriber without canReply reaches nobody.
        await subscribers[0].evaluate(SEND, ["not forwarded"])
        await publisher.evaluate(SEND, ["after"])
        for page in subscribers:
            await until(page, RECEIVED, lambda got: got[-1:] == ["after"])
        assert await publisher.evaluate(RECEIVED) == []
    finally:
        for context in contexts:
            await context.close()
