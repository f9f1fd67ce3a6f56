// node --test: how the SDK (appliance/api/static/sdk/edgecall.js) notices that the data channels lost
// their SCTP association while media goes on (a box carried the session on from a failed box, issue
// 19), and opens them again on a data-only session without touching the media PeerConnection.
//
// Node has no WebRTC, so the PeerConnection and the box are stand-ins: FakePeerConnection connects
// as soon as it has an answer; FakeBox answers the Calls API requests the client makes, keeps each
// session's data channels as GET sessions/{id} lists them, and `lose(session)` is what a box that
// carried a session on reports (every channel "inactive"). The Chromium test against real boxes is
// tests/integration/test_failover_datachannels.py. Timers are node's mock timers: no test waits.
import { afterEach, beforeEach, mock, test } from "node:test";
import assert from "node:assert/strict";

import { Edgecall } from "../../../appliance/api/static/sdk/edgecall.js";

const CHECK_MS = 3000; // CHANNEL_CHECK_MS
const GRACE_MS = 1000; // CHANNEL_RESET_GRACE_MS
const NEGOTIATION = ["createOffer", "createAnswer", "setLocalDescription", "setRemoteDescription", "restartIce"];

class FakeChannel extends EventTarget {
  constructor(label, init) {
    super();
    this.label = label;
    this.id = init.id ?? null;
    this.negotiated = Boolean(init.negotiated);
    this.readyState = "connecting";
    this.binaryType = "blob";
  }

  open() {
    if (this.readyState === "connecting") this.readyState = "open";
  }

  close() {
    this.closedBy = "client";
    this.#end();
  }

  // The far end reset the stream (the box ended the channel), or the association died.
  endFromAfar() {
    this.#end();
  }

  #end() {
    if (this.readyState === "closed") return;
    this.readyState = "closed";
    this.dispatchEvent(new Event("close"));
  }
}

class FakePeerConnection extends EventTarget {
  static made = [];

  constructor() {
    super();
    this.connectionState = "new";
    this.iceConnectionState = "new";
    this.signalingState = "stable";
    this.sctp = null;
    this.channels = [];
    this.calls = Object.fromEntries(NEGOTIATION.map((name) => [name, 0]));
    FakePeerConnection.made.push(this);
  }

  createDataChannel(label, init = {}) {
    const channel = new FakeChannel(label, init);
    this.channels.push(channel);
    if (this.connectionState === "connected") channel.open();
    return channel;
  }

  async createOffer() {
    this.calls.createOffer++;
    return { type: "offer", sdp: `offer with ${this.channels.length} channels` };
  }

  async createAnswer() {
    this.calls.createAnswer++;
    return { type: "answer", sdp: "answer" };
  }

  async setLocalDescription(description) {
    this.calls.setLocalDescription++;
    this.localDescription = description;
    this.signalingState = description.type === "offer" ? "have-local-offer" : "stable";
  }

  async setRemoteDescription(description) {
    this.calls.setRemoteDescription++;
    this.remoteDescription = description;
    this.signalingState = description.type === "offer" ? "have-remote-offer" : "stable";
    if (description.type === "answer" && this.connectionState === "new") {
      this.sctp = { state: "connected" };
      this.#set("connected");
      for (const channel of this.channels) channel.open();
    }
  }

  restartIce() {
    this.calls.restartIce++;
  }

  getTransceivers() {
    return [];
  }

  close() {
    this.#set("closed");
    if (this.sctp) this.sctp.state = "closed";
    for (const channel of this.channels) channel.endFromAfar();
  }

  // ICE failed (the box is gone for good).
  fail() {
    this.#set("failed");
  }

  // The browser gave up on the SCTP association: it closes every channel, media goes on.
  abortSctp() {
    this.sctp.state = "closed";
    for (const channel of this.channels) channel.endFromAfar();
  }

  #set(state) {
    this.connectionState = this.iceConnectionState = state;
    this.dispatchEvent(new Event("connectionstatechange"));
  }
}

// The Calls API of one box, as far as the client's data channels need it.
class FakeBox {
  constructor() {
    this.sessions = new Map();
    this.requests = [];
    this.count = 0;
    this.gets = 0; // GET requests answered or still pending
    this.hold = null; // a promise GETs wait for (an unanswered check)
    this.refuseNew = false;
  }

  session(id = `s${++this.count}`) {
    const session = { id, channels: [], nextId: 1, lost: false };
    this.sessions.set(id, session);
    return session;
  }

  // A box that carried `id` on from a failed box: no SCTP association, every channel inactive.
  lose(id) {
    this.sessions.get(id).lost = true;
  }

  channel(id, name) {
    return this.sessions.get(id).channels.find((c) => c.name === name && !c.closed);
  }

  async fetch(url, init = {}) {
    const method = init.method || "GET";
    const path = new URL(url).pathname.replace(/^\/v1\/apps\/demo/, "");
    const body = init.body ? JSON.parse(init.body) : undefined;
    this.requests.push(`${method} ${path}`);
    const [status, json] = await this.#answer(method, path.split("/").slice(2), body);
    return { status, ok: status >= 200 && status < 300, text: async () => JSON.stringify(json) };
  }

  async #answer(method, [id, ...rest], body) {
    if (id === "new") {
      if (this.refuseNew) return [503, { errorCode: "internal_error" }];
      return [201, { sessionId: this.session().id }];
    }
    const session = this.sessions.get(id);
    if (!session) return [410, { errorCode: "session_error" }];
    const operation = rest.join("/");
    if (method === "GET" && operation === "") {
      this.gets++;
      if (this.hold) await this.hold;
      return [200, { tracks: [], dataChannels: session.channels.map((c) => ({
        id: c.id, dataChannelName: c.name, location: c.location,
        status: session.lost || c.closed ? "inactive" : "active",
      })) }];
    }
    if (operation === "tracks/new") return [200, { sessionDescription: { type: "answer", sdp: "answer" }, tracks: [] }];
    if (operation === "datachannels/new") {
      if (session.lost) return [409, { errorCode: "transport_unavailable_error", errorDescription: "carried on" }];
      return [200, { dataChannels: body.dataChannels.map((wanted) => {
        if (wanted.location === "remote" && !this.channel(wanted.sessionId, wanted.dataChannelName)) {
          return { ...wanted, errorCode: "not_found_track_error" };
        }
        const channel = { ...wanted, name: wanted.dataChannelName, id: session.nextId++, closed: false };
        session.channels.push(channel);
        return { ...wanted, id: channel.id };
      }) }];
    }
    if (operation === "datachannels/close") {
      for (const { id: channelId } of body.dataChannels) {
        const channel = session.channels.find((c) => c.id === channelId);
        if (channel) channel.closed = true;
      }
      return [200, { dataChannels: body.dataChannels }];
    }
    return [404, { errorCode: "not_found" }];
  }
}

// Every promise chain that can move does (the fake box answers at once; timers are mocked).
async function settle() {
  for (let i = 0; i < 100; i++) await new Promise((resolve) => setImmediate(resolve));
}

async function elapse(ms) {
  mock.timers.tick(ms);
  await settle();
}

// The next check finds open channels that the box reports inactive, and after the grace they move.
async function checkAndGrace() {
  await elapse(CHECK_MS);
  await elapse(GRACE_MS);
}

let box;

beforeEach(() => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval"] });
  box = new FakeBox();
  FakePeerConnection.made = [];
  globalThis.RTCPeerConnection = FakePeerConnection;
  globalThis.fetch = (url, init) => box.fetch(url, init);
});

afterEach(() => {
  mock.timers.reset();
});

// A connected call that publishes "chat" and subscribes to "news" of another session.
async function callWithChannels() {
  const other = box.session("publisher");
  other.channels.push({ id: 1, name: "news", location: "local", closed: false });
  const call = new Edgecall({ base: "http://box/v1/apps/demo", token: "secret" });
  const events = [];
  call.addEventListener("datachannel", (event) => events.push(event.detail));
  await call.connect();
  const chat = await call.publishData("chat");
  const news = await call.subscribeData("publisher", "news");
  const media = FakePeerConnection.made[0];
  assert.equal(call.pc, media);
  assert.deepEqual([chat.readyState, news.readyState], ["open", "open"]);
  return { call, events, chat, news, media, negotiated: { ...media.calls } };
}

test("channels the box reports inactive while the browser has them open move to a data-only session", async () => {
  const { call, events, chat, news, media, negotiated } = await callWithChannels();
  const main = call.sessionId;
  await elapse(CHECK_MS);
  assert.equal(FakePeerConnection.made.length, 1, "nothing moves while the box reports the channels active");

  box.lose(main);
  box.requests.length = 0;
  await elapse(CHECK_MS);
  assert.deepEqual(box.requests, [`GET /sessions/${main}`], "the browser's channels are open: a grace first");
  await elapse(GRACE_MS);

  const [, data] = FakePeerConnection.made;
  const moved = call.dataSessionId;
  assert.ok(data && moved !== main && call.sessionId === main && call.pc === media);
  assert.deepEqual(box.requests.slice(1), [
    "POST /sessions/new", `POST /sessions/${moved}/tracks/new`, `POST /sessions/${moved}/datachannels/new`,
    `POST /sessions/${moved}/datachannels/new`, `PUT /sessions/${main}/datachannels/close`]);
  // The media PeerConnection saw no offer, no answer, no ICE restart; the data-only one has only the
  // SCTP bootstrap channel and the two channels opened again.
  assert.deepEqual(media.calls, negotiated);
  assert.equal(media.connectionState, "connected");
  assert.deepEqual(data.channels.map((c) => [c.label, c.negotiated]),
    [["edgecall-sctp", false], ["chat", true], ["news", true]]);
  assert.deepEqual(events.map((e) => [e.name, e.location, e.sessionId, e.moved]),
    [["chat", "local", moved, true], ["news", "remote", "publisher", true]]);
  assert.equal(events[0].previous, chat);
  assert.equal(events[1].previous, news);
  assert.deepEqual(events.map((e) => e.channel.readyState), ["open", "open"]);
  assert.deepEqual([chat.readyState, news.readyState, chat.closedBy], ["closed", "closed", "client"]);
  // "chat" is published under the new session, "news" subscribed again there; the old ones are closed
  // on the box, so that subscribers of the old "chat" learn that it ended.
  assert.ok(box.channel(moved, "chat") && box.channel(moved, "news"));
  assert.equal(box.channel(main, "chat"), undefined);

  // The data-only session fails over in turn: the channels move again, its PeerConnection closes.
  box.lose(moved);
  await checkAndGrace();
  assert.equal(FakePeerConnection.made.length, 3);
  assert.equal(data.connectionState, "closed");
  assert.notEqual(call.dataSessionId, moved);
  assert.deepEqual(events.slice(2).map((e) => [e.name, e.moved, e.previous === events[events.indexOf(e) - 2].channel]),
    [["chat", true, true], ["news", true, true]]);
  assert.deepEqual(media.calls, negotiated);
  await call.close();
  assert.equal(FakePeerConnection.made[2].connectionState, "closed");
});

test("a channel that the browser closes while the media PeerConnection is up is checked at once", async () => {
  const { call, events, media } = await callWithChannels();
  box.requests.length = 0;
  media.abortSctp(); // the browser gave up on the association: no interval needs to pass
  await settle();
  // The session lives (a gone one would be a reconnection), and no grace: the browser closed them.
  assert.deepEqual(box.requests.slice(0, 2), [`GET /sessions/${call.sessionId}`, "POST /sessions/new"]);
  assert.deepEqual(events.map((e) => [e.name, e.moved]), [["chat", true], ["news", true]]);
  assert.notEqual(call.dataSessionId, call.sessionId);
  await call.close();
});

test("a channel its publisher ended is forgotten, not opened again", async () => {
  const { call, events, news } = await callWithChannels();
  const main = call.sessionId;
  box.channel(main, "news").closed = true; // the box reset the stream: the browser's channel closes
  box.requests.length = 0;
  news.endFromAfar();
  await settle();
  await elapse(GRACE_MS + CHECK_MS);
  assert.deepEqual(box.requests, [`GET /sessions/${main}`, `GET /sessions/${main}`]);
  assert.deepEqual(events, []);
  assert.equal(FakePeerConnection.made.length, 1);
  await call.close();
});

test("checks never overlap, and stop when no channel is left", async () => {
  const { call, chat, news } = await callWithChannels();
  let answer;
  box.hold = new Promise((resolve) => { answer = resolve; });
  await elapse(CHECK_MS);
  await elapse(CHECK_MS);
  await elapse(CHECK_MS);
  assert.equal(box.gets, 1, "a check whose GET has no answer yet is not joined by another");
  box.hold = null;
  answer();
  await settle();
  await elapse(CHECK_MS);
  assert.equal(box.gets, 2);

  chat.close();
  news.close();
  await elapse(CHECK_MS);
  await elapse(CHECK_MS);
  assert.equal(box.gets, 2, "no GET once the app closed its channels");
  await call.close();
});

test("a move that fails changes nothing, and the next check tries again", async () => {
  const { call, events, chat } = await callWithChannels();
  const main = call.sessionId;
  box.lose(main);
  box.refuseNew = true;
  box.requests.length = 0;
  await checkAndGrace();
  assert.deepEqual(box.requests, [`GET /sessions/${main}`, "POST /sessions/new"]);
  assert.deepEqual(events, []);
  assert.equal(call.dataSessionId, main);
  assert.equal(chat.readyState, "open");
  box.refuseNew = false;
  await checkAndGrace();
  assert.deepEqual(events.map((e) => [e.name, e.moved]), [["chat", true], ["news", true]]);
  await call.close();
});

test("after a move, new channels open on the data-only session", async () => {
  const { call, media, negotiated } = await callWithChannels();
  box.lose(call.sessionId);
  await checkAndGrace();
  const moved = call.dataSessionId;
  box.requests.length = 0;
  const more = await call.publishData("more");
  assert.deepEqual(box.requests, [`POST /sessions/${moved}/datachannels/new`]);
  assert.equal(FakePeerConnection.made[1].channels.at(-1), more);
  assert.deepEqual(media.calls, negotiated);
  await call.close();
});

test("a media session the box answers 410 for is neither moved nor rebuilt by the check", async () => {
  // In a cluster, a box may answer 410 for a failed box's session a moment before it carries it on:
  // only the PeerConnection's own failure starts a reconnection, which opens the channels again.
  const { call, events, media } = await callWithChannels();
  const main = call.sessionId;
  const reconnected = [];
  call.addEventListener("reconnected", (event) => reconnected.push(event.detail));
  box.sessions.delete(main);
  media.abortSctp();
  await settle();
  await elapse(CHECK_MS + GRACE_MS);
  assert.deepEqual(box.requests.slice(-2), [`GET /sessions/${main}`, `GET /sessions/${main}`]);
  assert.deepEqual([events, reconnected, call.state, FakePeerConnection.made.length], [[], [], "connected", 1]);

  media.fail();
  await settle();
  await elapse(0); // the reconnection's first attempt waits 0 ms
  assert.deepEqual(reconnected, [{ sessionId: call.sessionId, previousSessionId: main }]);
  assert.equal(call.dataSessionId, call.sessionId);
  assert.deepEqual(events.map((e) => [e.name, e.moved, e.sessionId]),
    [["chat", false, call.sessionId], ["news", false, "publisher"]]);
  await call.close();
});


test("a channel asked of a media session that a box carried on opens on a data-only session", async () => {
  // The box refuses channels it could never open (no SCTP association): the client does not wait for
  // a check to find them dead, it opens them where they can work, and the media is not renegotiated.
  const call = new Edgecall({ base: "http://box/v1/apps/demo", token: "secret" });
  await call.connect();
  const media = FakePeerConnection.made[0];
  await call.publishData("first");
  const negotiated = { ...media.calls };
  const main = call.sessionId;
  box.lose(main);
  box.requests.length = 0;
  const chat = await call.publishData("chat");
  const moved = call.dataSessionId;
  assert.notEqual(moved, main);
  assert.deepEqual(box.requests, [`POST /sessions/${main}/datachannels/new`, "POST /sessions/new",
    `POST /sessions/${moved}/tracks/new`, `POST /sessions/${moved}/datachannels/new`]);
  assert.equal(FakePeerConnection.made[1].channels.at(-1), chat);
  assert.equal(chat.readyState, "open");
  assert.deepEqual(media.calls, negotiated);
  await call.close();
});
