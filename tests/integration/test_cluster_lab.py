"""One call across many boxes (issue 14, "done when"), with real parts: three boxes announce one
anycast address to FRR, which hashes every flow on its 5-tuple (ECMP, fib_multipath_hash_policy 1),
so a client's API requests (TCP) and its media (UDP) land on boxes chosen each on its own. The boxes
are clustered (own nats-server each, JetStream replicated, over a VXLAN backbone mesh); Chromium
clients, each in its own namespace, publish and pull through the Calls API at the anycast address.

The cluster makes it one SFU: the box a client's media reaches takes its session from the box that
served its API (handover), API requests go to the session's owner (forwarding), and a track crosses
the backbone once per receiving box (trunks), which fans it out to its own subscribers. Repair is per
hop: a loss on a subscriber's link is repaired by its box, a loss on a trunk is NACKed upstream by the
receiving box (nftables drops the packets on arrival). Data channel messages ride the trunks too.

tests/lab/cluster_lab.py builds the lab. Times are measured and printed (run with -s), never
asserted, except as generous bounds against a hang.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import json
import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio
from playwright.async_api import Error as PlaywrightError

from tests.e2e.test_sfu import ENOUGH, INBOUND, flowing, until
from tests.lab.browser import BROWSER_TEST
from tests.lab.cluster_lab import (ANY4, ANYCAST4, LOSS_PERCENT, MEDIA_PORT, TRUNK_PORT, URL, Client, ClusterBox, ClusterLab,
                                   build_cluster, chromium_in, dropping, overlay)
from tests.lab.media_lab import client as open_page
from tests.lab.netns import Lab, lab_unavailable, wait_for
from tests.e2e.test_whip_whep_browser import LOAD as WISH_LOAD
from tests.e2e.test_whip_whep_browser import PUBLISH as WHIP_PUBLISH
from tests.e2e.test_whip_whep_browser import VIEW as WHEP_VIEW
from tests.e2e.test_whip_whep_browser import whip_whep_clients

if TYPE_CHECKING:
    from playwright.async_api import Browser, BrowserContext, Page

pytestmark = [pytest.mark.lab, *BROWSER_TEST]

SUBSCRIBERS = 5  # each in a namespace (and a Chromium) of its own
# When the hashing put every client's API and media on one box, or every subscriber on the
# publisher's box, more subscriber pages join (each flow with new source ports), at most this many.
MORE_AT_MOST = 8
# The four-box test opens subscriber pages until one lands on each box but the publisher's: about 7
# are needed; the chance that this many miss a box is under 1 in 1000.
PAGES_AT_MOST = 32
WINDOW = 5.0  # seconds over which trunk packets are counted against the publisher's
LOSSY = 10.0  # seconds of media measured with loss on a link
# Pages opened for the data channel test (no media) until a subscriber is on every box, at most: when
# a box has none yet, the chance that this many pages all miss it is under 1 in 100.
CHAT_PAGES_AT_MOST = 12
# The repair counters the loss tests print, in this order.
REPAIR_EVENTS = (
    "nacked_by_subscribers", "retransmitted", "resent_unasked", "not_cached", "nacked_upstream", "given_up")
HANG = 30.0

PUBLISH = """
async ([names, audio]) => {
  await calls.open();
  const video = {width: 320, height: 240, frameRate: 15};
  const stream = await navigator.mediaDevices.getUserMedia({audio, video});
  const tracks = [...stream.getAudioTracks(), ...stream.getVideoTracks()];
  const pushed = await calls.push(tracks.map((t, i) => [t, names[i]]));
  await calls.connected;
  return {id: calls.sessionId, tracks: pushed};
}
"""
# The Calls pull flow (calls_client.js's pull), but a renegotiate answered 410 is sent again (at
# most 20 times, 0.1 s apart) and counted: the box that served the pull may just have handed the
# session to the box its media reached, and not know it yet (the first test shows it; the others
# measure what comes after).
PULL_COUNTING_410 = """
async (items) => {
  await calls.open();
  const pulled = await calls.call("POST", `/sessions/${calls.sessionId}/tracks/new`, {
    tracks: items.map(i => ({location: "remote", ...i})),
  });
  const gone = [];
  if (pulled.requiresImmediateRenegotiation) {
    await calls.pc.setRemoteDescription(pulled.sessionDescription);
    await calls.pc.setLocalDescription(await calls.pc.createAnswer());
    const body = {sessionDescription: {type: "answer", sdp: calls.pc.localDescription.sdp}};
    for (;;) {
      try {
        await calls.call("PUT", `/sessions/${calls.sessionId}/renegotiate`, body);
        break;
      } catch (e) {
        if (!e.message.includes("HTTP 410") || gone.length >= 20) throw e;
        gone.push(e.message);
        await new Promise(resolve => setTimeout(resolve, 100));
      }
    }
  }
  await calls.connected;
  return {session: calls.sessionId, tracks: pulled.tracks, gone};
}
"""
# The local end of the PeerConnection's selected candidate pair: the media flow's source port.
MEDIA_FLOW = """
async () => {
  const stats = await calls.pc.getStats();
  for (const s of stats.values())
    if (s.type === "transport" && s.selectedCandidatePairId) {
      const local = stats.get(stats.get(s.selectedCandidatePairId).localCandidateId);
      return {port: local.port, protocol: local.protocol};
    }
  return null;
}
"""
# MEDIA_FLOW of a page whose PeerConnection is the global `pc` (the WHIP and WHEP pages).
PC_FLOW = MEDIA_FLOW.replace("calls.pc", "pc")
SENT = """
async () => {
  let packets = 0;
  for (const s of (await calls.pc.getStats()).values()) if (s.type === "outbound-rtp") packets += s.packetsSent;
  return packets;
}
"""
AUDIO_ENERGY = """
async () => {
  for (const s of (await calls.pc.getStats()).values())
    if (s.type === "inbound-rtp" && s.kind === "audio") return s.totalAudioEnergy || 0;
  return 0;
}
"""
FRAMES = """
async () => {
  for (const s of (await calls.pc.getStats()).values())
    if (s.type === "inbound-rtp" && s.kind === "video") return s.framesDecoded || 0;
  return 0;
}
"""

# Each kind's receiving statistics: what a subscriber lost, asked again for and got again.
RECEIVED_BY_KIND = """
async () => {
  const out = {};
  for (const s of (await calls.pc.getStats()).values())
    if (s.type === "inbound-rtp") {
      const kind = out[s.kind] = out[s.kind] || {packetsReceived: 0, packetsLost: 0, nackCount: 0,
                                                 retransmittedPacketsReceived: 0, framesDecoded: 0, freezes: 0};
      for (const k of Object.keys(kind)) kind[k] += (k === "freezes" ? s.totalFreezesDuration : s[k]) || 0;
    }
  return out;
}
"""
# The NACKs that reached the publisher and what it sent again for them.
PUBLISHER_REPAIR = """
async () => {
  const out = {nackCount: 0, retransmittedPacketsSent: 0};
  for (const s of (await calls.pc.getStats()).values())
    if (s.type === "outbound-rtp") for (const k of Object.keys(out)) out[k] += s[k] || 0;
  return out;
}
"""
# The publisher adds a data channel to its session (the SFU offers the m=application), then
# publishes "chat"; a subscriber does the same and subscribes to it (a page of its own opens a session).
PUBLISH_CHAT = """
async () => {
  await calls.establish();
  const [chat] = await calls.dataChannels([{location: "local", dataChannelName: "chat"}]);
  return chat;
}
"""
# A request answered 410 is sent again (at most 20 times, 0.1 s apart) and counted: a new page's session
# may have just moved to the box its media reached, and the box asked not know it yet (the report says
# which requests met it).
SUBSCRIBE_CHAT = """
async (publisher) => {
  const gone = [];
  const call = calls.call.bind(calls);
  calls.call = async (...args) => {
    for (;;) {
      try {
        return await call(...args);
      } catch (e) {
        if (!e.message.includes("HTTP 410") || gone.length >= 20) throw e;
        gone.push(e.message);
        await new Promise(resolve => setTimeout(resolve, 100));
      }
    }
  };
  if (!calls.pc) await calls.open();
  await calls.establish();
  await calls.connected;
  const [chat] = await calls.dataChannels([{location: "remote", sessionId: publisher, dataChannelName: "chat"}]);
  return {chat, gone};
}
"""
SEND_CHAT = """
(messages) => {
  for (const m of messages) calls.channels.chat.send(typeof m === "string" ? m : new Uint8Array(m));
}
"""
CHAT_OPEN = "() => calls.channels && calls.channels.chat && calls.channels.chat.readyState"
CHAT_RECEIVED = "() => calls.messages.chat"
# Where a channel that does not open stands: its PeerConnection, SCTP transport and what the box says.
CHAT_CARRIER = """
async () => {
  const pc = calls.pc;
  let described;
  try {
    described = await calls.call("GET", `/sessions/${calls.sessionId}`);
  } catch (e) {
    described = String(e);
  }
  return {session: calls.sessionId, connection: pc && pc.connectionState, sctp: pc && pc.sctp && pc.sctp.state,
          channel: calls.channels.chat && calls.channels.chat.id, described};
}
"""


@dataclass
class Peer:
    """One page: its client host, the mids it pulled, the box its media flow lands on."""

    name: str
    client: Client
    page: Page
    context: BrowserContext
    mids: list[str] = field(default_factory=list)
    media_box: ClusterBox | None = None
    gone: list[str] = field(default_factory=list)  # renegotiates answered 410 before one succeeded
    session: str = ""


async def media_box(cluster: ClusterLab, peer: Peer) -> ClusterBox:
    flow = await until(peer.page, MEDIA_FLOW, lambda f: f is not None)
    assert flow["protocol"] == "udp", flow
    return cluster.landing(peer.client, "udp", flow["port"], MEDIA_PORT)


async def publish(cluster: ClusterLab, browser: Browser, names: list[str], audio: bool) -> tuple[Peer, str]:
    context, page = await open_page(browser, URL)
    peer = Peer("publisher", cluster.clients[0], page, context)
    published = await page.evaluate(PUBLISH, [names, audio])
    assert [t["trackName"] for t in published["tracks"]] == names, published
    peer.session = published["id"]
    peer.media_box = await media_box(cluster, peer)
    return peer, published["id"]


async def subscribe(cluster: ClusterLab, browser: Browser, client: Client, name: str, items: list[dict]) -> Peer:
    context, page = await open_page(browser, URL)
    peer = Peer(name, client, page, context)
    pulled = await page.evaluate(PULL_COUNTING_410, items)
    assert all("errorCode" not in t for t in pulled["tracks"]), pulled
    peer.mids = [t["mid"] for t in pulled["tracks"]]
    peer.gone, peer.session = pulled["gone"], pulled["session"]
    peer.media_box = await media_box(cluster, peer)
    return peer


def handovers(cluster: ClusterLab) -> dict[str, dict[str, float]]:
    return {box.name: box.metrics().by("edgecall_cluster_handover", "event") for box in cluster.boxes}


def describe(cluster: ClusterLab, peers: list[Peer]) -> list[str]:
    """One line per page: where its API connections and its media land."""
    lines = []
    for peer in peers:
        api = sorted({box.name for box in cluster.api_landings(peer.client)})
        assert peer.media_box is not None
        lines.append(f"  {peer.name} ({peer.client.host.name} {peer.client.address}): media -> {peer.media_box.name}, "
                     f"open API connections of its host -> {', '.join(api) or 'none now'}"
                     + (f"; renegotiate answered 410 {len(peer.gone)} times first" if peer.gone else ""))
    return lines


@contextlib.asynccontextmanager
async def logged_on_failure(cluster: ClusterLab):
    """The boxes' logs printed when setting up a call fails (the lab and its files go after)."""
    try:
        yield
    except Exception:
        print(cluster.logs())
        raise


@dataclass
class Call:
    cluster: ClusterLab
    publisher: Peer
    subscribers: list[Peer]
    taken: int  # sessions a box took over from the box that served their API
    browsers: list[Browser]  # one per client host, in the clients' order


@pytest_asyncio.fixture(scope="class", loop_scope="session")
async def call():
    """Three boxes; a publisher (camera and microphone) and subscribers, each in its own namespace,
    connected; more subscriber pages join until at least one client's API and media boxes differed
    and at least one subscriber's media is on another box than the publisher's."""
    if reason := lab_unavailable():
        pytest.skip(reason)
    with Lab() as lab:
        started = time.monotonic()
        cluster = build_cluster(lab, boxes=3, clients=SUBSCRIBERS + 1)
        built = time.monotonic() - started
        async with chromium_in([c.host for c in cluster.clients]) as browsers, logged_on_failure(cluster):
            publisher, pub_id = await publish(cluster, browsers[0], ["mic", "cam"], audio=True)
            items = [{"sessionId": pub_id, "trackName": n} for n in ("mic", "cam")]
            subscribers = list(await asyncio.gather(*(
                subscribe(cluster, browsers[i], cluster.clients[i], f"subscriber {i}", items)
                for i in range(1, SUBSCRIBERS + 1))))
            for extra in range(MORE_AT_MOST + 1):
                taken = sum(events.get("taken", 0) for events in handovers(cluster).values())
                remote = [s for s in subscribers if s.media_box is not publisher.media_box]
                if taken and remote:
                    break
                assert extra < MORE_AT_MOST, (f"after {len(subscribers)} subscribers: {taken} sessions taken over, "
                                              f"{len(remote)} subscribers on another box than the publisher's")
                index = 1 + extra % SUBSCRIBERS
                print(f"\nno crossing yet ({taken} taken, {len(remote)} remote): one more page in c{index + 1}")
                subscribers.append(await subscribe(cluster, browsers[index], cluster.clients[index],
                                                   f"subscriber {len(subscribers) + 1}", items))
            print(f"\nlab built in {built:.1f} s; call set up {time.monotonic() - started - built:.1f} s later")
            yield Call(cluster, publisher, subscribers, int(taken), browsers)


def repairs(cluster: ClusterLab) -> dict[str, dict[str, float]]:
    """Each box's edgecall_sfu_repair counters, by event."""
    return {box.name: box.metrics().by("edgecall_sfu_repair", "event") for box in cluster.boxes}


def change(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: value - before.get(key, 0) for key, value in after.items()}


def changes_by_kind(after: dict[str, dict[str, float]],
                    before: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {kind: change(figures, before.get(kind, {})) for kind, figures in after.items()}


def repair_line(events: dict[str, float]) -> str:
    return ", ".join(f"{event} {events.get(event, 0):.0f}" for event in REPAIR_EVENTS)


def receiving_box(call: Call) -> ClusterBox:
    """The box other than the publisher's with the most subscribers (the fixture makes one)."""
    counted = collections.Counter(s.media_box.name for s in call.subscribers
                                  if s.media_box is not None and s.media_box is not call.publisher.media_box)
    return call.cluster.box(sorted(counted, key=lambda name: (-counted[name], name))[0])


class TestThreeBoxes:
    async def test_every_subscriber_decodes_and_hears_whichever_boxes_its_flows_land_on(self, call):
        cluster = call.cluster
        for peer in call.subscribers:
            await until(peer.page, INBOUND, flowing(peer.mids))
            # Not silence: the fake microphone's beeps reach the subscriber's audio output.
            await until(peer.page, AUDIO_ENERGY, lambda energy: energy > 0)
        events = handovers(cluster)
        sessions = {box.name: box.metrics().value("edgecall_sfu_sessions") for box in cluster.boxes}
        landed = collections.Counter(p.media_box.name for p in [call.publisher, *call.subscribers] if p.media_box)
        print(f"\n{len(call.subscribers)} subscribers decode video and hear audio "
              f"(more than {ENOUGH['video']} frames and {ENOUGH['audio']} samples each)")
        print("\n".join(describe(cluster, [call.publisher, *call.subscribers])))
        print(f"sessions whose API box and media box differed (taken over just in time): {call.taken}")
        for box in cluster.boxes:
            print(f"  {box.name}: sessions {sessions[box.name]:.0f}, handover {events[box.name]}")
        assert call.taken >= 1
        # What was taken was given: no session was lost or doubled on the way.
        assert sum(e.get("taken", 0) for e in events.values()) == sum(e.get("given", 0) for e in events.values())
        # Every session lives on the box its media reaches (where the router sends its 5-tuple).
        assert sessions == {box.name: float(landed.get(box.name, 0)) for box in cluster.boxes}
        # A client never learns that its session moved: no request of the Calls flow fails for it.
        gone = [peer for peer in call.subscribers if peer.gone]
        assert not gone, "renegotiate answered 410 while the session moved to its media box:\n" + "\n".join(
            f"{peer.name}: {peer.gone[0]}\n" + cluster.mentions(peer.session) for peer in gone)

    async def test_the_backbone_carries_one_copy_per_track_and_receiving_box(self, call):
        cluster, origin = call.cluster, call.publisher.media_box
        assert origin is not None
        receivers = collections.Counter(s.media_box.name for s in call.subscribers
                                        if s.media_box is not None and s.media_box is not origin)
        others = [box for box in cluster.boxes if box is not origin]
        for peer in call.subscribers:
            await until(peer.page, INBOUND, flowing(peer.mids))

        async def sample() -> tuple[float, dict[str, float], dict[str, dict[str, float]]]:
            # Same order at both ends of the window, so the small skew between readings cancels.
            sent = await call.publisher.page.evaluate(SENT)
            out = origin.metrics().by("edgecall_cluster_trunk_packets_out", "node")
            at = {}
            for box in others:
                scrape = box.metrics()
                at[box.name] = {"in": scrape.value("edgecall_cluster_trunk_packets_in", node=origin.name),
                                "forwarded": scrape.value("edgecall_sfu_forwarded_packets")}
            return sent, out, at

        idle = [box for box in others if not receivers[box.name]]

        def quiet() -> bool:
            """No trunk packets toward the boxes without subscribers: a box that served a subscriber's
            API pulled the track for it until its media box took the session over, and lets that
            trunk go only after a grace period."""
            before = origin.metrics().by("edgecall_cluster_trunk_packets_out", "node")
            time.sleep(1.0)
            after = origin.metrics().by("edgecall_cluster_trunk_packets_out", "node")
            return all(after.get(box.name, 0) == before.get(box.name, 0) for box in idle)

        if idle:
            waited = time.monotonic()
            wait_for(quiet, "no trunk toward the boxes without subscribers", HANG)
            print(f"\ntrunks toward {', '.join(b.name for b in idle)} (no subscribers there) quiet after "
                  f"{time.monotonic() - waited:.1f} s more")
        sent0, out0, at0 = await sample()
        await asyncio.sleep(WINDOW)
        sent1, out1, at1 = await sample()
        sent = sent1 - sent0
        assert sent > 0
        print(f"\npublisher on {origin.name} sent {sent:.0f} RTP packets (audio and video) in {WINDOW:.0f} s")
        for box in others:
            copies = (out1.get(box.name, 0) - out0.get(box.name, 0)) / sent
            received = at1[box.name]["in"] - at0[box.name]["in"]
            forwarded = at1[box.name]["forwarded"] - at0[box.name]["forwarded"]
            print(f"  {origin.name} -> {box.name} ({receivers[box.name]} subscribers there): trunk packets out "
                  f"{copies:.3f} x the publisher's; {box.name} received {received:.0f} on its trunk and forwarded "
                  f"{forwarded:.0f} to its subscribers ({forwarded / max(received, 1):.2f} per packet received)")
            if receivers[box.name]:
                assert 0.8 <= copies <= 1.2, (box.name, copies)
                # Fanned out on the receiving box: one copy in, one out per subscriber (two tracks each).
                assert forwarded >= 0.8 * receivers[box.name] * received
            else:
                assert copies == 0, (box.name, copies)
        assert receivers, "no subscriber's media landed on another box than the publisher's"

    async def test_a_lossy_subscriber_link_is_repaired_by_the_subscribers_own_box(self, call):
        """5% of what box C sends one of its subscribers is dropped on arrival: C answers that
        subscriber's NACKs from its own cache, and the publisher's box (and the publisher) hear of none."""
        cluster, origin = call.cluster, call.publisher.media_box
        assert origin is not None
        box = receiving_box(call)
        peer = next(s for s in call.subscribers if s.media_box is box)
        await until(peer.page, INBOUND, flowing(peer.mids))
        flow = await peer.page.evaluate(MEDIA_FLOW)
        before, seen_before = repairs(cluster), await peer.page.evaluate(RECEIVED_BY_KIND)
        sent_before = await call.publisher.page.evaluate(PUBLISHER_REPAIR)
        # Only the page's own media flow, only toward it: its NACKs reach the box untouched.
        with dropping(peer.client.host, f"ip saddr {ANY4} udp sport {MEDIA_PORT} udp dport {flow['port']}") as dropped:
            await asyncio.sleep(LOSSY)
            lost = dropped()
            after = repairs(cluster)
            seen = changes_by_kind(await peer.page.evaluate(RECEIVED_BY_KIND), seen_before)
            sent = change(await call.publisher.page.evaluate(PUBLISHER_REPAIR), sent_before)
        repaired = {name: change(after[name], before[name]) for name in after}
        print(f"\n{LOSS_PERCENT}% of {box.name}'s media to {peer.name} dropped for {LOSSY:.0f} s: {lost} packets")
        for each in cluster.boxes:
            role = " (the subscriber's)" if each is box else " (the publisher's)" if each is origin else ""
            print(f"  {each.name}{role}: {repair_line(repaired[each.name])}")
        print(f"  {peer.name} received: {seen}\n  the publisher: {sent}")
        assert lost > 10  # the loss took effect
        # Repaired by its own box: answers to its NACKs, and packets that transport-wide feedback showed
        # lost and no NACK asked for (audio: Chrome NACKs only video).
        assert repaired[box.name]["retransmitted"] + repaired[box.name]["resent_unasked"] >= 0.5 * lost, repaired
        # Nothing of it went upstream: no NACK reached the publisher's box over the clean trunk, nor the publisher.
        assert repaired[box.name]["nacked_upstream"] == 0, repaired
        assert repaired[origin.name]["nacked_by_subscribers"] == 0 and repaired[origin.name]["retransmitted"] == 0
        assert sent["nackCount"] == 0, sent
        assert seen["video"]["framesDecoded"] > 0, seen

    async def test_a_lossy_trunk_is_nacked_upstream_once_per_loss_and_hidden_from_the_subscribers(self, call):
        """5% of the trunk's RTP from the publisher's box A to box C is dropped as it arrives in C
        (after VXLAN decapsulation): C NACKs A once per lost packet, whatever its number of
        subscribers, A answers from its cache (the publisher hears nothing), and C's subscribers
        receive the recovered packets as if nothing was lost."""
        cluster, origin = call.cluster, call.publisher.media_box
        assert origin is not None
        box = receiving_box(call)
        watched = [s for s in call.subscribers if s.media_box is box]
        for peer in watched:
            await until(peer.page, INBOUND, flowing(peer.mids))
        before = repairs(cluster)
        trunk_before = box.metrics().value("edgecall_cluster_trunk_packets_in", node=origin.name)
        seen_before = [await peer.page.evaluate(RECEIVED_BY_KIND) for peer in watched]
        sent_before = await call.publisher.page.evaluate(PUBLISHER_REPAIR)
        # The trunk's RTP only (SRTP leaves its header clear): an RTCP packet's second byte is 192-223
        # (RFC 5761), a data channel datagram's first byte 64.
        rtp = f"ip saddr {overlay(origin.index)} udp dport {TRUNK_PORT} @th,64,8 >= 128 @th,72,8 != 192-223"
        with dropping(box.host, rtp) as dropped:
            await asyncio.sleep(LOSSY)
            lost = dropped()
            after = repairs(cluster)
            trunk = box.metrics().value("edgecall_cluster_trunk_packets_in", node=origin.name) - trunk_before
            seen = [changes_by_kind(await peer.page.evaluate(RECEIVED_BY_KIND), b)
                    for peer, b in zip(watched, seen_before)]
            sent = change(await call.publisher.page.evaluate(PUBLISHER_REPAIR), sent_before)
        repaired = {name: change(after[name], before[name]) for name in after}
        print(f"\n{LOSS_PERCENT}% of the trunk's RTP {origin.name} -> {box.name} dropped for {LOSSY:.0f} s: {lost} "
              f"packets (the nftables counter; {box.name} received {trunk:.0f} on that trunk meanwhile)")
        for each in cluster.boxes:
            role = " (the receiving box)" if each is box else " (the publisher's)" if each is origin else ""
            print(f"  {each.name}{role}: {repair_line(repaired[each.name])}")
        print(f"  {box.name} NACKed upstream {repaired[box.name]['nacked_upstream'] / max(lost, 1):.2f} times per "
              f"packet lost, for {len(watched)} subscribers")
        for peer, figures in zip(watched, seen):
            print(f"  {peer.name} on {box.name}: {figures}")
        print(f"  the publisher: {sent}")
        assert lost > 10  # the loss took effect
        # Once per loss, not once per subscriber (a lost retransmission is asked for again).
        assert 0.5 * lost <= repaired[box.name]["nacked_upstream"] <= 1.5 * lost, (repaired, lost)
        assert repaired[origin.name]["retransmitted"] >= 0.5 * lost, (repaired, lost)
        # A's cache answered: nothing was asked of the publisher.
        assert repaired[origin.name]["nacked_upstream"] == 0 and sent["nackCount"] == 0, (repaired, sent)
        for figures in seen:
            # What stays lost for a subscriber once NACKs did their work (Chrome counts packets that RTX
            # recovered as lost too): a small part of what the trunk lost.
            unrecovered = sum(f["packetsLost"] - f["retransmittedPacketsReceived"] for f in figures.values())
            assert unrecovered <= 0.2 * lost, (seen, lost)
            assert figures["video"]["framesDecoded"] > 0, seen

    async def test_whep_players_on_every_box_join_a_whip_stream_within_a_glance(self, call):
        """A WHIP publisher (whip.js, from npm) on one client and a WHEP player (whep.js) on each other
        client, through the anycast address: wherever their API requests and media land, every player
        decodes, and the time from its POST to its first frame on a <video> is printed."""
        cluster, browsers = call.cluster, call.browsers
        clients = whip_whep_clients()
        contexts = []
        try:
            context = await browsers[0].new_context()
            contexts.append(context)
            publisher = await context.new_page()
            await publisher.goto(URL + "/")
            await publisher.evaluate(WISH_LOAD, clients)
            await publisher.evaluate(WHIP_PUBLISH, [f"{URL}/v1/apps/test-app/whip/lab", "test-app-secret", None, None])
            flow = await until(publisher, PC_FLOW, lambda f: f is not None)
            published_on = cluster.landing(cluster.clients[0], "udp", flow["port"], MEDIA_PORT).name
            joins = []
            for index in range(1, len(browsers)):
                context = await browsers[index].new_context()
                contexts.append(context)
                player = await context.new_page()
                await player.goto(URL + "/")
                await player.evaluate(WISH_LOAD, clients)
                joined = await player.evaluate(WHEP_VIEW, [f"{URL}/v1/apps/test-app/whep/lab", "test-app-secret"])
                flow = await until(player, PC_FLOW, lambda f: f is not None)
                box = cluster.landing(cluster.clients[index], "udp", flow["port"], MEDIA_PORT).name
                joins.append((joined["joinMs"], box, joined))
            print(f"\nWHEP join, POST to first frame (the publisher's media on {published_on}): " + ", ".join(
                f"{ms:.0f} ms ({box}; answered {j['answeredMs']:.0f}, connected {j['connectedMs']:.0f})"
                for ms, box, j in joins))
            times = sorted(ms for ms, _, _ in joins)
            print(f"  median {times[len(times) // 2]:.0f} ms, worst {times[-1]:.0f} ms; players on another box "
                  f"than the publisher's: {sum(box != published_on for _, box, _ in joins)} of {len(joins)}")
        finally:
            for context in contexts:
                await context.close()

    async def test_the_dashboard_and_usage_show_bgp_the_backbone_and_every_box(self, call):
        """What the operator sees of a real cluster: each box's dashboard snapshot has its BGP session
        to the router established with the anycast prefix announced, its backbone peers, and every box
        of the cluster; the usage asked of one box covers the three."""
        cluster = call.cluster
        for box in cluster.boxes:
            snapshot = json.loads(await asyncio.to_thread(box.admin, "/dashboard/events"))
            assert snapshot["node"] == box.name
            assert snapshot["bgp"]["announced"] == [ANYCAST4], snapshot["bgp"]
            assert [s["established"] for s in snapshot["bgp"]["sessions"]] == [True], snapshot["bgp"]
            assert sorted(snapshot["backbone"]) == sorted(b.name for b in cluster.boxes if b is not box)
            assert sorted(n["id"] for n in snapshot["nodes"]) == [b.name for b in cluster.boxes]
        usage = json.loads(await asyncio.to_thread(cluster.boxes[0].admin, "/v1/usage?by=box&step=60"))
        assert usage["missing"] == [] and sorted(line["box"] for line in usage["series"]) == [
            b.name for b in cluster.boxes], usage
        sessions = sum(max(p["sessions"] for p in line["points"]) for line in usage["series"])
        print(f"\nusage asked of {cluster.boxes[0].name}: {sessions} sessions across the three boxes "
              f"({len(call.subscribers) + 1} pages)")
        assert sessions >= len(call.subscribers) + 1

    async def test_a_data_channel_message_reaches_subscribers_on_every_box(self, call):
        """The publisher adds a data channel to its session and publishes "chat"; every subscriber
        page subscribes, and pages with no media join until a subscriber is on every box (bounded).
        Its messages arrive, in order, at every one of them: over the trunks for those on other boxes."""
        cluster, origin = call.cluster, call.publisher.media_box
        assert origin is not None
        chat = await call.publisher.page.evaluate(PUBLISH_CHAT)
        assert chat["location"] == "local", chat
        pub_id = call.publisher.session
        readers = list(call.subscribers)
        gone: dict[str, list[str]] = {}  # by page: its requests answered 410

        async def subscribe_chat(peer: Peer) -> None:
            try:
                subscribed = await peer.page.evaluate(SUBSCRIBE_CHAT, pub_id)
            except PlaywrightError as e:
                session = await peer.page.evaluate("() => calls.sessionId")
                raise AssertionError(f"{peer.name} could not subscribe to the channel: {e.message}\nwhat the boxes "
                                     f"logged of its session:\n{cluster.mentions(session)}") from None
            assert subscribed["chat"]["sessionId"] == pub_id, subscribed
            gone[peer.name] = subscribed["gone"]
            peer.session = peer.session or await peer.page.evaluate("() => calls.sessionId")

        for peer in readers:
            await subscribe_chat(peer)
        for extra in range(CHAT_PAGES_AT_MOST):
            if {peer.media_box.name for peer in readers if peer.media_box} >= {box.name for box in cluster.boxes}:
                break
            index = 1 + extra % SUBSCRIBERS
            context, page = await open_page(call.browsers[index], URL)
            peer = Peer(f"chat page {extra + 1}", cluster.clients[index], page, context)
            await subscribe_chat(peer)
            peer.media_box = await media_box(cluster, peer)
            readers.append(peer)
        for peer in (call.publisher, *readers):
            try:
                await until(peer.page, CHAT_OPEN, lambda state: state == "open")
            except AssertionError as e:
                state = await peer.page.evaluate(CHAT_CARRIER)
                raise AssertionError(f"{peer.name}'s channel never opened ({e}); its PeerConnection: {state}\n"
                                     f"what the boxes logged of its session:\n{cluster.mentions(peer.session)}"
                                     ) from None

        # Text and binary, in order; one message of many SCTP packets, in pieces across the backbone.
        messages = ["hello", [0, 1, 2, 255], "", "x" * 30_000, "bye"]
        sent_at = time.monotonic()
        await call.publisher.page.evaluate(SEND_CHAT, messages)
        arrived = {}
        for peer in readers:
            received = await until(peer.page, CHAT_RECEIVED, lambda got: len(got) >= len(messages))
            assert received == messages, (peer.name, received[:3])
            arrived[peer.name] = time.monotonic() - sent_at
        held = collections.Counter(peer.media_box.name for peer in readers if peer.media_box is not None)
        missed = sorted({box.name for box in cluster.boxes} - set(held))
        print(f"\nthe publisher's session on {origin.name}; {len(readers)} subscribers' sessions: "
              + ", ".join(f"{name} {held[name]}" for name in sorted(held))
              + (f" (none on {', '.join(missed)} after {CHAT_PAGES_AT_MOST} more pages)" if missed else ""))
        for peer in readers:
            assert peer.media_box is not None
            print(f"  {peer.name} on {peer.media_box.name}: all {len(messages)} messages in order, the last "
                  f"{arrived[peer.name]:.2f} s after sending (read one page after another)")
        for peer in readers:
            if gone[peer.name]:
                print(f"  {peer.name}: answered 410 {len(gone[peer.name])} times before it succeeded, first: "
                      f"{gone[peer.name][0]}\n" + cluster.mentions(peer.session))
        assert len(held) >= 2 and set(held) - {origin.name}, held


def gap(series: list[tuple[float, int]], at_least: float = 1.0) -> tuple[float, float] | None:
    """From (seconds since the kill, frames decoded) samples: the first stretch of at least
    `at_least` s without a new frame, as (last frame before it, first frame after it)."""
    last_change_at, last = series[0]
    for at, frames in series[1:]:
        if frames > last:
            if at - last_change_at >= at_least:
                return last_change_at, at
            last_change_at, last = at, frames
    return None


async def test_a_tree_two_deep_heals_when_its_intermediate_box_dies(lab):
    """Four boxes with trunk_fanout = 2: the publisher's box sends the track to two boxes, the third
    receiving box takes it from one of those (depth 2). That intermediate box's appliance is killed;
    the box below it re-attaches at the root (which takes it, or redirects it to a box it feeds) and
    its subscriber decodes again.

    The intermediate box's health agent dies with it, so its announcement stays: the router keeps
    sending its flows there. Withdrawing one next hop of a hash-threshold ECMP route moves flows
    between the surviving boxes too, and a PeerConnection that moves after it connected is the
    later failover work: the test keeps the tree's repair apart from that (and prints, at the end,
    how many surviving flows the withdrawal would have moved)."""
    cluster = build_cluster(lab, boxes=4, clients=4, fanout=2)
    async with chromium_in([c.host for c in cluster.clients]) as browsers:
        publisher, pub_id = await publish(cluster, browsers[0], ["cam"], audio=False)
        root = publisher.media_box
        assert root is not None
        items = [{"sessionId": pub_id, "trackName": "cam"}]
        # One subscriber on each other box, in the order they join the tree: pages whose media
        # lands on the root or on a box that has one already are closed again.
        below: dict[str, Peer] = {}
        for attempt in range(PAGES_AT_MOST):
            index = 1 + attempt % 3
            peer = await subscribe(cluster, browsers[index], cluster.clients[index], f"attempt {attempt + 1}", items)
            assert peer.media_box is not None
            if peer.media_box is root or peer.media_box.name in below:
                await peer.context.close()
                continue
            peer.name = f"subscriber on {peer.media_box.name}"
            below[peer.media_box.name] = peer
            await until(peer.page, INBOUND, flowing(peer.mids))
            if len(below) == 3:
                break
        assert len(below) == 3, f"the hashing put no subscriber on some box in {PAGES_AT_MOST} pages: {sorted(below)}"

        def fed(names: list[str]) -> dict[str, str] | None:
            """Each box's parent (the box its trunk packets come from, over half a second), once
            every one of `names` has one."""
            before = {name: cluster.box(name).metrics().by("edgecall_cluster_trunk_packets_in", "node")
                      for name in names}
            time.sleep(0.5)
            tree = {}
            for name in names:
                after = cluster.box(name).metrics().by("edgecall_cluster_trunk_packets_in", "node")
                tree[name] = ",".join(sorted(node for node, count in after.items() if count > before[name].get(node, 0)))
            return tree if all(tree.values()) else None

        tree = wait_for(lambda: fed(list(below)), "every receiving box fed", HANG)
        assert tree is not None
        print(f"\nroot {root.name}; the tree: {tree}")
        deep = [name for name, parent in tree.items() if parent != root.name]
        assert deep and all(tree[name] in below for name in deep), tree  # depth 2: a box under another
        middle = cluster.box(tree[deep[0]])
        child = cluster.box(deep[0])
        watched = below[child.name]

        killed, killed_at = time.monotonic(), datetime.datetime.now(datetime.timezone.utc)
        for process in (middle.agent, middle.service):
            assert process is not None
            process.send_signal(signal.SIGKILL)
        series = [(0.0, await watched.page.evaluate(FRAMES))]
        # Two seconds of video more than at the kill: more than a jitter buffer holds.
        while series[-1][1] < series[0][1] + 30 and series[-1][0] < HANG:
            await asyncio.sleep(0.1)
            series.append((time.monotonic() - killed, await watched.page.evaluate(FRAMES)))
        stall = gap(series)
        print(f"SIGKILL of {middle.name}'s appliance (the intermediate box) at {killed_at:%H:%M:%S.%f}: " + (
            f"{child.name}'s subscriber stopped decoding (its last frame {stall[0]:.2f} s after the kill) and "
            f"decoded again {stall[1]:.2f} s after the kill" if stall else
            f"{child.name}'s subscriber never went 1 s without a frame") +
            f" (frames {series[0][1]} -> {series[-1][1]} in {series[-1][0]:.1f} s)")
        assert series[-1][1] >= series[0][1] + 30, f"{child.name}'s subscriber stopped decoding: {series[-10:]}"
        after = wait_for(lambda: fed([child.name]), f"{child.name} fed again", HANG)
        assert after is not None
        print(f"{child.name}'s parent after: {after[child.name]}; what {child.name} logged of {middle.name}:")
        print(cluster.mentions(middle.name, [child]))
        # Re-attached at the root, which took it or redirected it to one of its other children.
        assert after[child.name] in {root.name, *below} - {middle.name, child.name}, after

        # What withdrawing the dead box's route does to the others' flows (printed, not asserted).
        survivors = [publisher, *(p for name, p in below.items() if name != middle.name)]
        flows = {p.name: await p.page.evaluate(MEDIA_FLOW) for p in survivors}
        middle.host.run(["ip", "link", "set", "eth0", "down"])
        wait_for(lambda: middle.router_side not in cluster.next_hops(), f"{middle.name}'s route withdrawn", HANG)
        moved = [p.name for p in survivors
                 if cluster.landing(p.client, "udp", flows[p.name]["port"], MEDIA_PORT) is not p.media_box]
        print(f"withdrawing {middle.name}'s route would move {len(moved)} of {len(survivors)} surviving media flows "
              f"to another box: {moved}")
