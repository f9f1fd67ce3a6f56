// Edgecall's JavaScript client: one ES module, no dependencies, no build step. It speaks only the
// Calls HTTP API (CALLS_API.md: Cloudflare's Realtime SFU API), so it runs against an Edgecall box or
// Cloudflare's service alike: `base` is ".../v1/apps/<appId>", `token` the bearer token.
//
// One session is one RTCPeerConnection. Every change to it (push, pull, close, data channels) is an
// operation on one queue, so offers and answers never interleave: an SFU offer is answered before
// the next change starts, as the API requires (a change during a pending offer gets HTTP 406).
// edgecall.d.ts documents the public API; keep both in step (tests/unit/test_sdk_types.py checks).

// How long a PeerConnection may stay "disconnected" before it counts as failed (ICE consent
// freshness often recovers within a few seconds; a box that went away never answers again).
const DISCONNECTED_GRACE_MS = 5000;
// Waits before each attempt to rebuild the session after a failure; then the call has "failed".
const RECONNECT_DELAYS_MS = [0, 1000, 2000, 4000, 8000];
// A rebuilt session's PeerConnection must connect within this, or the attempt failed.
const RECONNECT_CONNECT_MS = 10000;
// A request that has had no answer in this time failed (fetch itself never gives up).
const REQUEST_TIMEOUT_MS = 15000;
// HTTP 425 "session_error" means "not connected yet, retry" (CALLS_API.md 1.5): this many retries.
const NOT_READY_RETRIES = 10;
const NOT_READY_DELAY_MS = 500;
// push() resolves once the first packets went out, so that a pull right after it finds the track
// (Cloudflare answers not_found_track_error before the SFU has seen packets); bounded.
const SENDING_WAIT_MS = 10000;
// Pulled tracks are looked at every STALL_TICK_MS: when one has received nothing since the last look,
// GET session says whether its publisher's track is gone (at most every ENDED_CHECK_MS). Browsers do
// not end or even mute a track on the RTCP BYE the SFU sends when its publisher closes it.
const STALL_TICK_MS = 1000;
const ENDED_CHECK_MS = 2000;
// A forced close of the tracks on close(), best effort, so subscribers learn at once.
const CLOSE_WAIT_MS = 2000;
// While data channels are open, the session they ride on is looked at this often (GET): a box that
// carried a session on from a failed box (cluster failover) has no SCTP association for it, and says
// its channels are "inactive" while the browser still has them open. They move to a new data-only
// session; the media PeerConnection is not renegotiated.
const CHANNEL_CHECK_MS = 3000;
// A channel the box says is inactive and the browser still has open is lost only if it is still open
// this much later: the stream reset of a channel its publisher ended arrives within a round trip.
const CHANNEL_RESET_GRACE_MS = 1000;
// The in-band channel whose only job is to make the browser offer an m=application (the SCTP
// association every negotiated channel rides on).
const SCTP_BOOTSTRAP = "edgecall-sctp";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** An error of the API (errorCode as CALLS_API.md 1.5 lists them) or of this client. */
export class EdgecallError extends Error {
  constructor(errorCode, message, { status = 0, failures = [] } = {}) {
    super(message ? `${errorCode}: ${message}` : errorCode);
    this.name = "EdgecallError";
    this.errorCode = errorCode;
    this.status = status;
    this.failures = failures; // pullMany: each failed item's error
  }
}

/**
 * Tasks run one at a time, in order. `batch` items that arrive while their batch waits join it, so
 * that, say, three pulls asked for in one tick cost one renegotiation. `first` goes ahead of what
 * waits (a reconnection must not queue behind operations of the dead session).
 */
export class OperationQueue {
  #waiting = [];
  #busy = false;

  run(task) {
    return this.#add(task, false);
  }

  first(task) {
    return this.#add(task, true);
  }

  /** `task(items)` resolves to one result per item (an Error rejects that item's promise). Items
   * join the batch only while it is the last task waiting, so tasks keep their order. */
  batch(key, item, task) {
    let entry = this.#waiting.at(-1);
    if (!entry || entry.key !== key) {
      const items = [];
      const settlers = [];
      entry = {
        key, items, settlers,
        task: () => task(items),
        resolve: (results) => settlers.forEach((s, i) => {
          const result = results[i];
          if (result instanceof Error) s.reject(result); else s.resolve(result);
        }),
        reject: (error) => settlers.forEach((s) => s.reject(error)),
      };
      this.#waiting.push(entry);
      this.#drain();
    }
    return new Promise((resolve, reject) => {
      entry.items.push(item);
      entry.settlers.push({ resolve, reject });
    });
  }

  #add(task, first) {
    return new Promise((resolve, reject) => {
      const entry = { task, resolve, reject };
      if (first) this.#waiting.unshift(entry); else this.#waiting.push(entry);
      this.#drain();
    });
  }

  async #drain() {
    if (this.#busy) return;
    this.#busy = true;
    // Start on a later microtask: what is added in the same tick joins a batch before it starts.
    await null;
    while (this.#waiting.length) {
      const entry = this.#waiting.shift();
      try {
        entry.resolve(await entry.task());
      } catch (error) {
        entry.reject(error);
      }
    }
    this.#busy = false;
  }
}

/** A track this client publishes. The Edgecall that made it does the work behind its methods. */
class LocalTrack {
  #control;

  constructor(record, control) {
    this.name = record.name;
    this.kind = record.track.kind;
    this.mid = null;
    this.sessionId = null;
    this.#control = control;
  }

  /** The MediaStreamTrack being sent. */
  get track() {
    return this.#control.track();
  }

  get muted() {
    return this.#control.muted();
  }

  /** Send another track of the same kind on the same m-section (camera to screen): no renegotiation. */
  replace(track) {
    return this.#control.replace(track);
  }

  /** Muted, the track sends black frames or silence: it stays alive on the SFU, which ends tracks
   * that send nothing for 30 s. */
  mute(muted = true) {
    return this.#control.mute(muted);
  }

  close() {
    return this.#control.close();
  }
}

/** A track this client pulls. `track` is replaced after a reconnection ("track" fires again). */
class RemoteTrack {
  #control;

  constructor(item, control) {
    this.sessionId = item.sessionId;
    this.trackName = item.trackName;
    this.mid = null;
    this.kind = null;
    this.track = null;
    this.preferredRid = item.preferredRid ?? null;
    this.ended = false;
    this.#control = control;
  }

  /** Ask the SFU for another simulcast layer (tracks/update preferredRid). */
  setLayer(rid) {
    return this.#control.setLayer(rid);
  }

  close() {
    return this.#control.close();
  }
}

export class Edgecall extends EventTarget {
  #base;
  #token;
  #iceServers;
  #queue = new OperationQueue();
  #state = "new";
  #pc = null;
  #sessionId = null;
  #sctp = false; // whether this PeerConnection negotiated its m=application
  #locals = new Set(); // records of pushed tracks: {local, name, track, encodings, muted, transceiver, closed}
  #remotes = new Set(); // records of pulled tracks: {remote, item, transceiver, closed}
  // records of data channels: {name, location, sessionId, options, channel, closed, id, home}; `home` is
  // the session the channel is negotiated on, `id` its SFU id there
  #channels = new Set();
  // The data-only session {pc, sessionId} the channels moved to when the media session lost its SCTP
  // association (its box failed and another carried it on); null while they ride the media session.
  #data = null;
  #channelTimer = null;
  #channelCheck = null; // the check running: {again}, set when another check was asked for meanwhile
  #disconnectedTimer = null;
  #stallTimer = null;
  #stallBusy = false;
  #lastEndedCheck = 0;
  #reconnecting = false;
  #previous = new Map(); // stats key -> {bytes, timestamp}: bitrates between two stats() calls

  /**
   * @param {{base: string, token: string | (() => string | Promise<string>), iceServers?: RTCIceServer[]}} options
   */
  constructor({ base, token, iceServers = [] }) {
    super();
    if (!base || !token) throw new TypeError("Edgecall: base and token are required");
    this.#base = base.replace(/\/+$/, "");
    this.#token = token;
    this.#iceServers = iceServers;
  }

  /** "new", "connecting", "connected", "reconnecting", "failed" or "closed". */
  get state() {
    return this.#state;
  }

  get sessionId() {
    return this.#sessionId;
  }

  /** The current RTCPeerConnection (a new one after each reconnection), for inspection. */
  get pc() {
    return this.#pc;
  }

  /** The session the data channels ride on, and that local channels are published under: sessionId,
   * or the data-only session they moved to when the media session lost its SCTP association. */
  get dataSessionId() {
    return this.#channelCarrier().sessionId;
  }

  async connect() {
    if (this.#state !== "new") throw new EdgecallError("invalid_state", `connect() on a call that is ${this.#state}`);
    this.#setState("connecting");
    try {
      await this.#queue.run(() => this.#open());
    } catch (error) {
      this.#setState("failed");
      throw error;
    }
    this.#setState("connected");
  }

  /**
   * Publish `track` under `options.name` (default: its kind); simulcast layers as sendEncodings.
   * Resolves once negotiated and sending (bounded wait), with a LocalTrack.
   */
  async push(track, { name = track.kind, simulcast = null } = {}) {
    this.#check();
    const record = { name, track, encodings: simulcast, muted: false, transceiver: null, closed: false, local: null };
    record.local = new LocalTrack(record, {
      track: () => record.track,
      muted: () => record.muted,
      replace: (next) => this.#replace(record, next),
      mute: async (muted) => {
        record.muted = Boolean(muted);
        record.track.enabled = !record.muted;
      },
      close: () => this.#closeLocal(record),
    });
    await this.#queue.batch("push", record, (records) => this.#run(() => this.#push(records)));
    await this.#sending(record);
    return record.local;
  }

  /** Pull one track of another session; `preferredRid` picks a simulcast layer. */
  async pull(item, { preferredRid } = {}) {
    const [remote] = await this.pullMany([{ ...item, preferredRid }]);
    return remote;
  }

  /**
   * Pull several tracks in one renegotiation. All or nothing: if any item fails, those that were
   * pulled are closed again and the promise rejects (error.failures has every item's error).
   */
  async pullMany(items) {
    this.#check();
    if (!items.length) return [];
    const group = items.map((item) => ({
      sessionId: item.sessionId, trackName: item.trackName, preferredRid: item.preferredRid ?? null,
    }));
    const remotes = await this.#queue.batch("pull", group, (groups) => this.#run(() => this.#pullGroups(groups)));
    for (const remote of remotes) this.#emit("track", remote);
    return remotes;
  }

  /** A data channel this session publishes on (datachannels/new, location "local"). */
  publishData(name, options = {}) {
    this.#check();
    const record = { name, location: "local", sessionId: null, options, channel: null, closed: false, id: null, home: null };
    return this.#queue.run(() => this.#run(() => this.#openChannels([record]))).then(() => record.channel);
  }

  /** The data channel `name` that session `sessionId` publishes (location "remote"). */
  subscribeData(sessionId, name, options = {}) {
    this.#check();
    const record = { name, location: "remote", sessionId, options, channel: null, closed: false, id: null, home: null };
    return this.#queue.run(() => this.#run(() => this.#openChannels([record]))).then(() => record.channel);
  }

  /** Figures of the connection and of each track; bitrates are since the previous call. */
  async stats() {
    this.#check();
    const pc = this.#pc;
    if (!pc) return { connection: { state: this.#state, rtt: null }, outbound: {}, inbound: {} };
    const report = await pc.getStats();
    const pair = selectedPair(report);
    const connection = { state: pc.connectionState, rtt: pair ? pairRtt(pair) : null };
    const outbound = {};
    for (const record of this.#locals) {
      if (record.closed || !record.transceiver) continue;
      outbound[record.name] = this.#outbound(record, await record.transceiver.sender.getStats());
    }
    const inbound = {};
    for (const record of this.#remotes) {
      if (record.closed || !record.transceiver) continue;
      inbound[record.remote.mid] = this.#inbound(record, await record.transceiver.receiver.getStats(), connection.rtt);
    }
    return { connection, outbound, inbound };
  }

  /** Leave: a forced close of every track tells subscribers at once, then the PeerConnection closes. */
  async close() {
    if (this.#state === "closed") return;
    const pc = this.#pc;
    const sessionId = this.#sessionId;
    this.#setState("closed");
    clearTimeout(this.#disconnectedTimer);
    clearInterval(this.#stallTimer);
    clearInterval(this.#channelTimer);
    const mids = [...this.#locals, ...this.#remotes].filter((r) => !r.closed && r.transceiver?.mid)
      .map((r) => ({ mid: r.transceiver.mid }));
    for (const record of [...this.#locals, ...this.#remotes, ...this.#channels]) record.closed = true;
    for (const record of this.#remotes) record.remote.ended = true;
    if (pc && sessionId && mids.length && pc.connectionState === "connected") {
      await this.#api("PUT", `/sessions/${sessionId}/tracks/close`, { tracks: mids, force: true },
        { timeout: CLOSE_WAIT_MS }).catch(() => {});
    }
    pc?.close();
    this.#data?.pc.close();
    this.#data = null;
  }

  // --- the session and its PeerConnection ---------------------------------------------------------

  async #open() {
    const { sessionId } = await this.#api("POST", "/sessions/new");
    const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle", iceServers: this.#iceServers });
    const watch = () => this.#watch(pc);
    pc.addEventListener("connectionstatechange", watch);
    pc.addEventListener("iceconnectionstatechange", watch);
    this.#pc = pc;
    this.#sessionId = sessionId;
    this.#sctp = false;
  }

  // Failed, or disconnected past the grace period: the session is rebuilt (a new one, on whichever
  // box answers). A box that restarted has forgotten the session, so ICE restarts cannot help.
  #watch(pc) {
    if (pc !== this.#pc || this.#reconnecting || this.#state === "closed") return;
    const states = [pc.connectionState, pc.iceConnectionState];
    if (states.includes("failed")) {
      this.#reconnect();
    } else if (states.includes("disconnected")) {
      if (this.#disconnectedTimer === null) {
        this.#disconnectedTimer = setTimeout(() => {
          this.#disconnectedTimer = null;
          if (pc === this.#pc && pc.connectionState !== "connected") this.#reconnect();
        }, DISCONNECTED_GRACE_MS);
      }
    } else {
      clearTimeout(this.#disconnectedTimer);
      this.#disconnectedTimer = null;
    }
  }

  #reconnect() {
    if (this.#reconnecting || this.#state === "closed" || this.#state === "failed") return;
    this.#reconnecting = true;
    clearTimeout(this.#disconnectedTimer);
    this.#disconnectedTimer = null;
    this.#setState("reconnecting");
    const previousSessionId = this.#sessionId;
    this.#retire();
    this.#queue.first(async () => {
      for (const delay of RECONNECT_DELAYS_MS) {
        await sleep(delay);
        if (this.#state === "closed") return;
        try {
          await this.#open();
          await this.#restore();
          if (this.#state === "closed") {
            this.#retire();
            return;
          }
          this.#reconnecting = false;
          this.#setState("connected");
          this.#emit("reconnected", { sessionId: this.#sessionId, previousSessionId });
          return;
        } catch {
          this.#retire();
        }
      }
      this.#reconnecting = false;
      this.#setState("failed");
    });
  }

  // Forget the current PeerConnection: what ran on it is redone on the next one.
  #retire() {
    const pc = this.#pc;
    this.#pc = null;
    for (const record of [...this.#locals, ...this.#remotes]) record.transceiver = null;
    pc?.close();
    // The channels of a data-only session are opened again on the next media session, with the rest.
    this.#data?.pc.close();
    this.#data = null;
  }

  // The live tracks and channels again, on the new session: the same names, the same publishers.
  async #restore() {
    const locals = [...this.#locals].filter((r) => !r.closed);
    const channels = [...this.#channels].filter((r) => !r.closed);
    if (locals.length || channels.length) {
      // A track the new session refuses is dropped (its record closed): a retry would be refused too.
      await this.#push(locals, channels.length > 0);
      await this.#connected(this.#pc);
    }
    const remotes = [...this.#remotes].filter((r) => !r.closed);
    if (remotes.length) {
      const results = await this.#pull(remotes.map((r) => r.item));
      results.forEach((result, i) => {
        if (result instanceof Error) this.#ended(remotes[i]);
        else this.#attach(remotes[i], result);
      });
      if (results.some((r) => !(r instanceof Error))) await this.#connected(this.#pc);
      results.forEach((result, i) => {
        if (!(result instanceof Error)) this.#emit("track", remotes[i].remote);
      });
    }
    for (const location of ["local", "remote"]) {
      const again = channels.filter((r) => r.location === location);
      const previous = again.map((r) => r.channel);
      if (!again.length) continue;
      const results = await this.#openChannels(again, { settle: true });
      again.forEach((record, i) => {
        if (results[i] instanceof Error) {
          record.closed = true;
          return;
        }
        this.#emitChannel(record, previous[i], false);
      });
    }
  }

  #connected(pc) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new EdgecallError("connect_timeout", "the PeerConnection did not connect")),
        RECONNECT_CONNECT_MS);
      const check = () => {
        if (pc.connectionState === "connected") done();
        else if (["failed", "closed"].includes(pc.connectionState)) {
          done(new EdgecallError("connect_failed", pc.connectionState));
        }
      };
      const done = (error) => {
        clearTimeout(timer);
        pc.removeEventListener("connectionstatechange", check);
        if (error) reject(error); else resolve();
      };
      pc.addEventListener("connectionstatechange", check);
      check();
    });
  }

  // --- pushing ------------------------------------------------------------------------------------

  // One offer for every record (and the m=application when `withSctp`): tracks/new with location
  // "local", then the SFU's answer. Per record: the record itself, or the Error of its item.
  async #push(records, withSctp = false) {
    const pc = this.#pc;
    const created = [];
    for (const record of records) {
      const init = { direction: "sendonly" };
      if (record.encodings) init.sendEncodings = record.encodings.map((e) => ({ ...e }));
      record.transceiver = pc.addTransceiver(record.track, init);
      if (record.muted) record.track.enabled = false;
      created.push(record.transceiver);
    }
    if (withSctp && !this.#sctp) pc.createDataChannel(SCTP_BOOTSTRAP);
    const answer = await this.#offer(pc, "POST", "tracks/new", (sdp) => ({
      sessionDescription: { type: "offer", sdp },
      tracks: records.map((r) => ({ location: "local", mid: r.transceiver.mid, trackName: r.name })),
    }), created);
    if (withSctp) this.#sctp = true;
    const results = matchResults(records, answer.tracks || [], (r, t) => t.trackName === r.name);
    return records.map((record, i) => {
      const result = results[i];
      if (result instanceof Error) {
        stop(record.transceiver);
        record.transceiver = null;
        record.closed = true;
        this.#locals.delete(record);
        return result;
      }
      record.local.mid = record.transceiver.mid;
      record.local.sessionId = this.#sessionId;
      this.#locals.add(record);
      return record;
    });
  }

  // Resolves once the sender has sent a packet, or after SENDING_WAIT_MS (connectivity trouble is
  // the reconnection's business, and statechange tells the app).
  async #sending(record) {
    const deadline = Date.now() + SENDING_WAIT_MS;
    while (Date.now() < deadline && record.transceiver && !record.closed) {
      const report = await record.transceiver.sender.getStats();
      for (const s of report.values()) if (s.type === "outbound-rtp" && s.bytesSent > 0) return;
      await sleep(50);
    }
  }

  async #replace(record, track) {
    if (track.kind !== record.track.kind) {
      throw new EdgecallError("invalid_params", `replace: a ${track.kind} track for a ${record.track.kind} one`);
    }
    track.enabled = !record.muted;
    record.track = track;
    if (record.transceiver) await record.transceiver.sender.replaceTrack(track);
  }

  #closeLocal(record) {
    if (record.closed) return Promise.resolve();
    record.closed = true;
    this.#locals.delete(record);
    return this.#closeTransceivers([record]);
  }

  // --- pulling ------------------------------------------------------------------------------------

  // Each group is one pullMany: all its items pulled (RemoteTrack[]) or an Error, its pulled items
  // closed again.
  async #pullGroups(groups) {
    const records = groups.map((group) => group.map((item) => ({ item, transceiver: null, closed: false })));
    const results = await this.#pull(records.flat().map((r) => r.item));
    let index = 0;
    const out = [];
    const undo = [];
    for (const group of records) {
      const mine = results.slice(index, index + group.length);
      index += group.length;
      const failures = mine.filter((r) => r instanceof Error);
      if (failures.length) {
        group.forEach((record, i) => { if (!(mine[i] instanceof Error)) undo.push({ transceiver: mine[i] }); });
        out.push(new EdgecallError(failures[0].errorCode,
          `${failures.length} of ${group.length} tracks could not be pulled (first: ${failures[0].message})`,
          { failures: mine.map((r) => (r instanceof Error ? r : null)) }));
        continue;
      }
      out.push(group.map((record, i) => {
        record.remote = new RemoteTrack(record.item, {
          setLayer: (rid) => this.#queue.run(() => this.#run(() => this.#setLayer(record, rid))),
          close: () => this.#closeRemote(record),
        });
        this.#attach(record, mine[i]);
        this.#remotes.add(record);
        return record.remote;
      }));
    }
    if (undo.length) await this.#closeMids(undo);
    return out;
  }

  // tracks/new with location "remote", and the answer to the SFU's offer. Per item: the
  // transceiver that receives it, or the Error of its item.
  async #pull(items) {
    const pc = this.#pc;
    const result = await this.#api("POST", `/sessions/${this.#sessionId}/tracks/new`, {
      tracks: items.map((item) => {
        const wanted = { location: "remote", sessionId: item.sessionId, trackName: item.trackName };
        if (item.preferredRid) wanted.simulcast = { preferredRid: item.preferredRid };
        return wanted;
      }),
    });
    if (result.requiresImmediateRenegotiation) await this.#answer(pc, result.sessionDescription);
    const matched = matchResults(items, result.tracks || [],
      (item, t) => t.sessionId === item.sessionId && t.trackName === item.trackName);
    return matched.map((track) => {
      if (track instanceof Error) return track;
      const transceiver = pc.getTransceivers().find((t) => t.mid === track.mid);
      return transceiver || new EdgecallError("internal_error", `no transceiver with mid ${track.mid}`);
    });
  }

  #attach(record, transceiver) {
    const remote = record.remote;
    record.transceiver = transceiver;
    remote.mid = transceiver.mid;
    remote.track = transceiver.receiver.track;
    remote.kind = remote.track.kind;
    record.packets = undefined;
    if (this.#stallTimer === null) this.#stallTimer = setInterval(() => this.#lookForStalls(), STALL_TICK_MS);
  }

  async #setLayer(record, rid) {
    if (record.closed || !record.transceiver) throw new EdgecallError("invalid_state", "the track is not pulled");
    const result = await this.#api("PUT", `/sessions/${this.#sessionId}/tracks/update`, {
      tracks: [{
        location: "remote", mid: record.transceiver.mid, sessionId: record.item.sessionId,
        trackName: record.item.trackName, simulcast: { preferredRid: rid },
      }],
    });
    const item = (result.tracks || [])[0];
    if (item?.errorCode) throw itemError(item);
    record.item.preferredRid = rid;
    record.remote.preferredRid = rid;
  }

  #closeRemote(record) {
    if (record.closed) return Promise.resolve();
    record.closed = true;
    record.remote.ended = true;
    this.#remotes.delete(record);
    return this.#closeTransceivers([record]);
  }

  // The publisher's track ended (or could not be pulled again after a reconnection).
  #ended(record) {
    if (record.closed) return;
    record.closed = true;
    record.remote.ended = true;
    this.#remotes.delete(record);
    this.#emit("trackended", record.remote);
    if (record.transceiver) this.#closeTransceivers([record]).catch(() => {});
  }

  async #lookForStalls() {
    const live = [...this.#remotes].filter((r) => !r.closed);
    if (!live.length || this.#state === "closed") {
      clearInterval(this.#stallTimer);
      this.#stallTimer = null;
      return;
    }
    if (this.#state !== "connected" || this.#stallBusy) return;
    this.#stallBusy = true;
    try {
      let stalled = false;
      for (const record of live) {
        if (!record.transceiver) continue;
        let packets = 0;
        for (const s of (await record.transceiver.receiver.getStats()).values()) {
          if (s.type === "inbound-rtp") packets += s.packetsReceived || 0;
        }
        if (packets === record.packets) stalled = true;
        record.packets = packets;
      }
      if (stalled && Date.now() - this.#lastEndedCheck >= ENDED_CHECK_MS) {
        this.#lastEndedCheck = Date.now();
        await this.#checkEnded();
      }
    } catch {
      // A PeerConnection closed meanwhile (a reconnection): the next look is on the new one.
    } finally {
      this.#stallBusy = false;
    }
  }

  async #checkEnded() {
    const sessionId = this.#sessionId;
    const described = await this.#api("GET", `/sessions/${sessionId}`).catch(() => null);
    if (!described || sessionId !== this.#sessionId) return;
    const inactive = new Set((described.tracks || []).filter((t) => t.location === "remote" && t.status === "inactive")
      .map((t) => t.mid));
    for (const record of [...this.#remotes]) {
      if (!record.closed && record.transceiver && inactive.has(record.transceiver.mid)) this.#ended(record);
    }
  }

  // --- closing tracks -----------------------------------------------------------------------------

  // Closes of one tick share one renegotiation (batched like pushes and pulls).
  async #closeTransceivers(records) {
    const pending = records.filter((r) => r.transceiver && r.transceiver.mid);
    const transceivers = pending.map((r) => r.transceiver);
    for (const record of records) record.transceiver = null;
    await Promise.all(transceivers.map((transceiver) =>
      this.#queue.batch("close", { transceiver }, (batch) => this.#closeMids(batch))));
  }

  // A negotiated close (CALLS_API.md 1.3): stop the transceivers, offer, tracks/close, answer. A
  // transceiver of an older (or closed) PeerConnection is gone with it: nothing to do.
  async #closeMids(batch) {
    const pc = this.#pc;
    const live = this.#state === "closed" || !pc ? [] : batch.filter(({ transceiver }) =>
      pc.getTransceivers().includes(transceiver) && transceiver.currentDirection !== "stopped");
    if (live.length) {
      const mids = live.map(({ transceiver }) => transceiver.mid);
      for (const { transceiver } of live) stop(transceiver);
      await this.#offer(pc, "PUT", "tracks/close", (sdp) => ({
        tracks: mids.map((mid) => ({ mid })), force: false, sessionDescription: { type: "offer", sdp },
      }), []);
    }
    return batch.map(() => undefined);
  }

  // --- data channels ------------------------------------------------------------------------------

  // The Calls way: the SCTP association comes with the first m=application the client pushes; each
  // channel is then datachannels/new and a negotiated RTCDataChannel on the id the SFU returns. The
  // records are of one location. With `settle`, per record: undefined or its Error; without, the first
  // Error throws.
  async #openChannels(records, { settle = false } = {}) {
    let carrier = this.#channelCarrier();
    if (!this.#data && !this.#sctp) await this.#push([], true);
    let matched;
    try {
      matched = await this.#requestChannels(carrier.sessionId, records);
    } catch (error) {
      // A media session a box carried on after another failed has no SCTP association: its channels
      // go on a data-only session, as channels do that such a failover finds open.
      if (error.errorCode !== "transport_unavailable_error" || carrier === this.#data) throw error;
      carrier = this.#data = await this.#openDataSession();
      matched = await this.#requestChannels(carrier.sessionId, records);
    }
    const out = records.map((record, i) => {
      if (matched[i] instanceof Error) return matched[i];
      this.#attachChannel(carrier, record, matched[i].id);
      return undefined;
    });
    const failed = out.find((r) => r instanceof Error);
    if (failed && !settle) throw failed;
    return out;
  }

  // datachannels/new on session `sessionId` for records of one location: per record, the SFU's item
  // (its id) or its Error.
  async #requestChannels(sessionId, records) {
    const location = records[0].location;
    const result = await this.#api("POST", `/sessions/${sessionId}/datachannels/new`, {
      dataChannels: records.map((r) => {
        const wanted = { location, dataChannelName: r.name, ...channelOptions(r.options) };
        if (location === "remote") wanted.sessionId = r.sessionId;
        return wanted;
      }),
    });
    return matchResults(records, result.dataChannels || [], (r, c) => c.dataChannelName === r.name);
  }

  #attachChannel(carrier, record, id) {
    record.channel = this.#negotiated(carrier, record, id);
    record.id = id;
    record.home = carrier.sessionId;
    this.#channels.add(record);
    if (this.#channelTimer === null) this.#channelTimer = setInterval(() => this.#checkChannels(), CHANNEL_CHECK_MS);
  }

  // Where channels ride: the data-only session once they moved there, else the media session.
  #channelCarrier() {
    return this.#data ?? { pc: this.#pc, sessionId: this.#sessionId };
  }

  #negotiated({ pc, sessionId }, record, id) {
    const channel = pc.createDataChannel(record.name, { ...channelOptions(record.options), negotiated: true, id });
    channel.binaryType = "arraybuffer";
    // The app's close() ends the channel for good: it is not opened again after a reconnection,
    // and the SFU hears of it. (A channel that closes because its PeerConnection went is reopened.)
    const close = channel.close.bind(channel);
    channel.close = () => {
      if (!record.closed && record.channel === channel) {
        record.closed = true;
        this.#channels.delete(record);
        if (pc === this.#pc || pc === this.#data?.pc) {
          this.#api("PUT", `/sessions/${sessionId}/datachannels/close`, { dataChannels: [{ id }] }).catch(() => {});
        }
      }
      close();
    };
    // Closed by neither the app nor the client while its PeerConnection is up: the SCTP association
    // may have gone (or the publisher ended the channel), which a check tells apart at once.
    channel.addEventListener("close", () => {
      if (!record.closed && record.channel === channel && pc.connectionState === "connected") this.#checkChannels(true);
    });
    return channel;
  }

  // --- data channels whose association is lost ------------------------------------------------------

  // One check at a time. An `urgent` one (a channel closed) asked for while a check runs runs right
  // after it; the timer's are skipped then.
  #checkChannels(urgent = false) {
    if (this.#channelCheck) {
      if (urgent) this.#channelCheck.again = true;
      return;
    }
    const check = this.#channelCheck = { again: true };
    (async () => {
      while (check.again) {
        check.again = false;
        try {
          await this.#lookForLostChannels();
        } catch {
          // The move failed (a request, or the new PeerConnection): the next check tries again.
        }
      }
      this.#channelCheck = null;
    })();
  }

  async #lookForLostChannels() {
    const live = [...this.#channels].filter((r) => !r.closed);
    if (!live.length || this.#state === "closed" || this.#state === "failed") {
      clearInterval(this.#channelTimer);
      this.#channelTimer = null;
      return;
    }
    const carrier = this.#channelCarrier();
    // A reconnection opens every channel again on its new session by itself.
    if (this.#state !== "connected" || this.#reconnecting || !carrier.pc) return;
    const riding = live.filter((r) => r.home === carrier.sessionId);
    if (riding.length && await this.#associationLost(carrier, riding)) {
      await this.#queue.run(() => this.#run(() => this.#moveChannels(carrier)));
    }
  }

  // Whether the SCTP association under `carrier`'s channels is gone while its session lives: a
  // data-only PeerConnection failed or its session is gone, the browser closed the association, or the
  // box says channels are inactive that the browser still has open (a box that carried the session on
  // from a failed box has no association for it). A channel the box ended while the association is up
  // (its publisher closed it) is forgotten.
  async #associationLost(carrier, records) {
    const dataOnly = carrier === this.#data;
    if (dataOnly && carrier.pc.connectionState === "failed") return true;
    let described;
    try {
      // A 410 for the media session is no reason to rebuild it here: in a cluster, a box may answer it
      // for a failed box's session a moment before it carries that session on. If the session is
      // really gone, its PeerConnection fails and the reconnection opens the channels again.
      described = await this.#api("GET", `/sessions/${carrier.sessionId}`, undefined, { reconnect: false });
    } catch (error) {
      return dataOnly && error.status === 410;
    }
    if (carrier.pc.sctp?.state === "closed") return true;
    const inactive = new Set((described.dataChannels || []).filter((c) => c.status === "inactive").map((c) => c.id));
    const suspects = [];
    for (const record of records) {
      if (record.closed || !inactive.has(record.id)) continue;
      if (isOpen(record.channel)) {
        suspects.push(record);
      } else {
        record.closed = true;
        this.#channels.delete(record);
      }
    }
    if (!suspects.length) return false;
    await sleep(CHANNEL_RESET_GRACE_MS);
    return suspects.some((r) => !r.closed && r.home === carrier.sessionId && isOpen(r.channel));
  }

  // Every live channel of `from` again on a new data-only session (its own PeerConnection with only
  // an m=application): local channels published anew under it, remote ones subscribed again. The
  // media PeerConnection sees no offer, no answer and no ICE restart. Nothing changes unless every
  // request succeeded (then a later check tries again); an item the SFU refuses (a remote channel
  // whose publisher is gone) closes its channel.
  async #moveChannels(from) {
    if (this.#channelCarrier().sessionId !== from.sessionId) return;
    const records = [...this.#channels].filter((r) => !r.closed && r.home === from.sessionId);
    if (!records.length) return;
    const to = await this.#openDataSession();
    const batches = [];
    try {
      for (const location of ["local", "remote"]) {
        const again = records.filter((r) => r.location === location);
        if (again.length) batches.push([again, await this.#requestChannels(to.sessionId, again)]);
      }
    } catch (error) {
      to.pc.close();
      throw error;
    }
    if (this.#reconnecting || this.#state !== "connected") {
      to.pc.close(); // the reconnection opens the channels again on its own session
      return;
    }
    this.#data = to;
    const gone = [];
    const unwanted = [];
    for (const [again, results] of batches) {
      again.forEach((record, i) => {
        const previous = record.channel;
        const result = results[i];
        if (record.closed) { // the app closed it meanwhile, and the box heard of it on `from`
          if (!(result instanceof Error)) unwanted.push({ id: result.id });
          return;
        }
        gone.push({ id: record.id });
        if (result instanceof Error) {
          record.closed = true;
          this.#channels.delete(record);
        } else {
          this.#attachChannel(to, record, result.id);
          this.#emitChannel(record, previous, true);
        }
        previous.close();
      });
    }
    if (from.pc !== this.#pc) from.pc.close();
    // The old channels end on the box: subscribers of a local one learn that it ended.
    for (const [sessionId, dataChannels] of [[from.sessionId, gone], [to.sessionId, unwanted]]) {
      if (!dataChannels.length) continue;
      await this.#api("PUT", `/sessions/${sessionId}/datachannels/close`, { dataChannels },
        { timeout: CLOSE_WAIT_MS }).catch(() => {});
    }
  }

  // sessions/new and a PeerConnection that carries only the SCTP association, connected.
  async #openDataSession() {
    const { sessionId } = await this.#api("POST", "/sessions/new");
    const pc = new RTCPeerConnection({ bundlePolicy: "max-bundle", iceServers: this.#iceServers });
    try {
      pc.createDataChannel(SCTP_BOOTSTRAP);
      await pc.setLocalDescription(await pc.createOffer());
      const answer = await this.#api("POST", `/sessions/${sessionId}/tracks/new`, {
        sessionDescription: { type: "offer", sdp: pc.localDescription.sdp }, tracks: [],
      });
      await pc.setRemoteDescription(answer.sessionDescription);
      await this.#connected(pc);
    } catch (error) {
      pc.close();
      throw negotiationError(error);
    }
    pc.addEventListener("connectionstatechange", () => {
      if (pc.connectionState === "failed") this.#checkChannels(true);
    });
    return { pc, sessionId };
  }

  #emitChannel(record, previous, moved) {
    this.#emit("datachannel", {
      channel: record.channel, name: record.name, location: record.location,
      sessionId: record.location === "local" ? record.home : record.sessionId, previous, moved,
    });
  }

  // --- negotiation helpers ------------------------------------------------------------------------

  // The client offers: setLocalDescription, the request `body(sdp)`, then the SFU's answer. On any
  // failure the offer is rolled back and `created` transceivers stopped, so the next change starts
  // from a stable state.
  async #offer(pc, method, operation, body, created) {
    try {
      await pc.setLocalDescription(await pc.createOffer());
      const path = `/sessions/${this.#sessionId}/${operation}`;
      const result = await this.#api(method, path, body(pc.localDescription.sdp));
      await pc.setRemoteDescription(result.sessionDescription);
      return result;
    } catch (error) {
      if (pc.signalingState === "have-local-offer") await pc.setLocalDescription({ type: "rollback" }).catch(() => {});
      for (const transceiver of created) stop(transceiver);
      throw negotiationError(error);
    }
  }

  // The SFU offers: apply it and answer through renegotiate. The SFU takes no other change until
  // it has the answer, so a session whose answer failed cannot go on: it is rebuilt.
  async #answer(pc, offer) {
    try {
      await pc.setRemoteDescription(offer);
      await pc.setLocalDescription(await pc.createAnswer());
      await this.#api("PUT", `/sessions/${this.#sessionId}/renegotiate`, {
        sessionDescription: { type: "answer", sdp: pc.localDescription.sdp },
      });
    } catch (error) {
      if (!this.#reconnecting) this.#reconnect();
      throw negotiationError(error);
    }
  }

  // An operation of the queue: refused once the call is closed, or while its session is being
  // rebuilt by a reconnection that has not got this far.
  async #run(operation) {
    if (this.#state === "closed") throw new EdgecallError("closed", "the call is closed");
    if (!this.#pc) throw new EdgecallError("not_connected", "connect() first, or wait for the reconnection");
    return operation();
  }

  #check() {
    const state = this.#state;
    if (state === "new" || state === "connecting") throw new EdgecallError("not_connected", "connect() first");
    if (state === "closed" || state === "failed") throw new EdgecallError(state, `the call has ${state}`);
  }

  // One request of the Calls API. Errors carry the API's errorCode; 425 (not connected yet) is
  // retried; 410 (the session is gone) starts a reconnection unless `reconnect` is false.
  async #api(method, path, body, { timeout = REQUEST_TIMEOUT_MS, reconnect = true } = {}) {
    const token = typeof this.#token === "function" ? await this.#token() : this.#token;
    for (let attempt = 0; ; attempt++) {
      let response;
      try {
        response = await fetch(this.#base + path, {
          method,
          headers: body === undefined ? { Authorization: `Bearer ${token}` }
            : { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(timeout),
        });
      } catch (error) {
        throw new EdgecallError("network_error", `${method} ${path}: ${error.message}`);
      }
      const text = await response.text();
      let json = {};
      try {
        json = text ? JSON.parse(text) : {};
      } catch {
        json = { errorCode: "decoding_error", errorDescription: text.slice(0, 200) };
      }
      if (response.status === 425 && attempt < NOT_READY_RETRIES) {
        await sleep(NOT_READY_DELAY_MS);
        continue;
      }
      if (response.ok && !json.errorCode) return json;
      // The session is gone (expired, or its box restarted): a new one is made.
      if (reconnect && response.status === 410 && path.split("/")[2] === this.#sessionId) this.#reconnect();
      throw new EdgecallError(json.errorCode || `http_${response.status}`, json.errorDescription || `${method} ${path}`,
        { status: response.status });
    }
  }

  // --- stats ----------------------------------------------------------------------------------

  #outbound(record, report) {
    const layers = {};
    let remote = null;
    for (const s of report.values()) {
      if (s.type === "outbound-rtp") layers[s.rid || ""] = s;
      if (s.type === "remote-inbound-rtp") remote = s;
    }
    const streams = Object.values(layers);
    const bytes = streams.reduce((sum, s) => sum + (s.bytesSent || 0), 0);
    const widest = streams.reduce((best, s) => (s.frameWidth || 0) > (best?.frameWidth || 0) ? s : best, null);
    const out = {
      kind: record.track.kind, mid: record.transceiver.mid, muted: record.muted,
      bitrate: this.#bitrate(`out:${record.name}`, bytes, streams[0]?.timestamp),
      bytesSent: bytes, packetsSent: streams.reduce((sum, s) => sum + (s.packetsSent || 0), 0),
      frameWidth: widest?.frameWidth ?? null, frameHeight: widest?.frameHeight ?? null,
      framesPerSecond: widest?.framesPerSecond ?? null,
      packetsLost: remote?.packetsLost ?? null, rtt: remote?.roundTripTime ?? null,
    };
    if (record.encodings) {
      out.layers = {};
      for (const [rid, s] of Object.entries(layers)) {
        out.layers[rid] = {
          bitrate: this.#bitrate(`out:${record.name}:${rid}`, s.bytesSent || 0, s.timestamp),
          frameWidth: s.frameWidth ?? null, frameHeight: s.frameHeight ?? null,
          framesPerSecond: s.framesPerSecond ?? null,
        };
      }
    }
    return out;
  }

  #inbound(record, report, connectionRtt) {
    let s = null;
    let remote = null;
    for (const stat of report.values()) {
      if (stat.type === "inbound-rtp") s = stat;
      if (stat.type === "remote-outbound-rtp") remote = stat;
    }
    const { remote: track } = record;
    return {
      sessionId: track.sessionId, trackName: track.trackName, kind: track.kind,
      bitrate: s ? this.#bitrate(`in:${track.mid}`, s.bytesReceived || 0, s.timestamp) : null,
      bytesReceived: s?.bytesReceived ?? 0, packetsReceived: s?.packetsReceived ?? 0,
      packetsLost: s?.packetsLost ?? 0, jitter: s?.jitter ?? null,
      // A receive-only endpoint seldom has an RTCP round trip of its own: the connection's then.
      rtt: remote?.roundTripTime ?? connectionRtt,
      frameWidth: s?.frameWidth ?? null, frameHeight: s?.frameHeight ?? null,
      framesDecoded: s?.framesDecoded ?? null, framesPerSecond: s?.framesPerSecond ?? null,
    };
  }

  // Bits per second since the previous reading under `key`; null on the first.
  #bitrate(key, bytes, timestamp) {
    const previous = this.#previous.get(key);
    this.#previous.set(key, { bytes, timestamp });
    if (!previous || timestamp === undefined || timestamp <= previous.timestamp || bytes < previous.bytes) return null;
    return Math.round((8 * (bytes - previous.bytes) * 1000) / (timestamp - previous.timestamp));
  }

  // --- events -------------------------------------------------------------------------------------

  #setState(state) {
    if (state === this.#state) return;
    this.#state = state;
    this.#emit("statechange", { state });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

// Results of a batch, one per request item: the response item `matches` picks (in order, each
// used once), or an Error for the item the response failed or left out.
function matchResults(requested, returned, matches) {
  const unused = [...returned];
  return requested.map((wanted) => {
    const index = unused.findIndex((item) => matches(wanted, item));
    if (index < 0) return new EdgecallError("internal_error", "the response has no result for this item");
    const [item] = unused.splice(index, 1);
    return item.errorCode ? itemError(item) : item;
  });
}

// stop() throws once the PeerConnection is closed, where there is nothing left to stop.
function stop(transceiver) {
  try {
    transceiver.stop();
  } catch {
    // closed with its PeerConnection
  }
}

// The browser's own errors (a description it refuses) as this client's, so apps test one errorCode.
function negotiationError(error) {
  if (error instanceof EdgecallError) return error;
  return new EdgecallError("negotiation_error", `${error.name}: ${error.message}`);
}

function itemError(item) {
  return new EdgecallError(item.errorCode, item.errorDescription || "");
}

function isOpen(channel) {
  return channel.readyState === "connecting" || channel.readyState === "open";
}

function channelOptions(options) {
  const out = {};
  for (const key of ["ordered", "maxRetransmits", "maxPacketLifeTime"]) {
    if (options[key] !== undefined) out[key] = options[key];
  }
  return out;
}

function selectedPair(report) {
  for (const s of report.values()) {
    if (s.type === "transport" && s.selectedCandidatePairId) return report.get(s.selectedCandidatePairId);
  }
  // Firefox has no transport stats: its selected pair says so itself.
  for (const s of report.values()) {
    if (s.type === "candidate-pair" && (s.selected || (s.nominated && s.state === "succeeded"))) return s;
  }
  return null;
}

function pairRtt(pair) {
  if (pair.currentRoundTripTime !== undefined) return pair.currentRoundTripTime;
  return pair.responsesReceived ? pair.totalRoundTripTime / pair.responsesReceived : null;
}
