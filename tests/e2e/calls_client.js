// A Calls API client as browser apps write it (CALLS_API.md section 2): sessions/new, push with an
// offer, pull without one and answer the SFU's offer through renegotiate. Loaded into test pages.
window.Calls = class Calls {
  constructor(base, appId, secret, {tcpOnly = false} = {}) {
    this.api = `${base}/v1/apps/${appId}`;
    this.headers = {Authorization: `Bearer ${secret}`};
    this.tcpOnly = tcpOnly;  // as on a network that blocks UDP: the SFU's UDP candidates never work
  }
  remote(description) {
    if (!this.tcpOnly) return description;
    const sdp = description.sdp.split("\r\n").filter(l => !/^a=candidate:\S+ \d+ udp /i.test(l)).join("\r\n");
    return {type: description.type, sdp};
  }
  async call(method, path, body) {
    const res = await fetch(this.api + path, {method, headers: this.headers, body: body && JSON.stringify(body)});
    const json = await res.json();
    if (!res.ok || json.errorCode) throw new Error(`${method} ${path}: HTTP ${res.status} ${JSON.stringify(json)}`);
    return json;
  }
  async open({dataOffer = false} = {}) {
    this.pc = new RTCPeerConnection({bundlePolicy: "max-bundle"});
    this.received = {};  // mid -> remote track
    this.pc.addEventListener("track", (e) => {
      this.received[e.transceiver.mid] = e.track;
      // Chrome plays out (and counts totalSamplesReceived for) remote audio only when something renders it.
      if (e.track.kind === "audio") {
        const audio = new Audio();
        audio.srcObject = new MediaStream([e.track]);
        audio.play().catch(() => {});
      }
    });
    this.connected = new Promise((resolve, reject) => {
      this.pc.addEventListener("connectionstatechange", () => {
        if (this.pc.connectionState === "connected") resolve();
        if (this.pc.connectionState === "failed") reject(new Error("PeerConnection failed"));
      });
    });
    if (!dataOffer) {
      this.sessionId = (await this.call("POST", "/sessions/new")).sessionId;
      return this.sessionId;
    }
    // The older flow (CALLS_API.md 2, step 6): the first offer goes to sessions/new, holding only an
    // in-band data channel (what makes the browser offer an m=application).
    this.pc.createDataChannel("bootstrap");
    await this.pc.setLocalDescription(await this.pc.createOffer());
    const created = await this.call("POST", "/sessions/new", {
      sessionDescription: {type: "offer", sdp: this.pc.localDescription.sdp},
    });
    this.sessionId = created.sessionId;
    await this.pc.setRemoteDescription(this.remote(created.sessionDescription));
    return this.sessionId;
  }
  async push(tracks) {  // [[track, name, sendEncodings (optional: simulcast layers)], ...]
    const transceivers = tracks.map(([track, , sendEncodings]) =>
      this.pc.addTransceiver(track, {direction: "sendonly", ...(sendEncodings ? {sendEncodings} : {})}));
    await this.pc.setLocalDescription(await this.pc.createOffer());
    const answer = await this.call("POST", `/sessions/${this.sessionId}/tracks/new`, {
      sessionDescription: {type: "offer", sdp: this.pc.localDescription.sdp},
      tracks: transceivers.map((t, i) => ({location: "local", mid: t.mid, trackName: tracks[i][1]})),
    });
    await this.pc.setRemoteDescription(this.remote(answer.sessionDescription));
    return answer.tracks;
  }
  async pull(items) {  // [{sessionId, trackName}, ...]
    const result = await this.call("POST", `/sessions/${this.sessionId}/tracks/new`, {
      tracks: items.map(i => ({location: "remote", ...i})),
    });
    if (result.requiresImmediateRenegotiation) await this.answer(result.sessionDescription);
    return result.tracks;
  }
  async update(items) {  // [{mid, sessionId, trackName, simulcast}, ...]: tracks/update, no renegotiation
    const result = await this.call("PUT", `/sessions/${this.sessionId}/tracks/update`, {
      tracks: items.map(i => ({location: "remote", ...i})),
    });
    return result.tracks;
  }
  async answer(offer) {  // apply an SFU offer and give it the answer through renegotiate
    await this.pc.setRemoteDescription(this.remote(offer));
    await this.pc.setLocalDescription(await this.pc.createAnswer());
    await this.call("PUT", `/sessions/${this.sessionId}/renegotiate`, {
      sessionDescription: {type: "answer", sdp: this.pc.localDescription.sdp},
    });
  }
  async establish() {  // datachannels/establish without an offer: the SFU offers the m=application
    const result = await this.call("POST", `/sessions/${this.sessionId}/datachannels/establish`, {
      dataChannel: {location: "remote", dataChannelName: "server-events"},
    });
    if (result.requiresImmediateRenegotiation) await this.answer(result.sessionDescription);
    return this.negotiated(result.dataChannel);
  }
  async dataChannels(items) {  // datachannels/new, then each channel on the id the SFU gave it
    const result = await this.call("POST", `/sessions/${this.sessionId}/datachannels/new`, {dataChannels: items});
    for (const c of result.dataChannels) if (!c.errorCode) this.negotiated(c);
    return result.dataChannels;
  }
  negotiated({dataChannelName, id}) {  // channels by name; their messages as JSON-able values, in order
    const channel = this.pc.createDataChannel(dataChannelName, {negotiated: true, id});
    channel.binaryType = "arraybuffer";
    this.channels = this.channels || {};
    this.messages = this.messages || {};
    this.channels[dataChannelName] = channel;
    this.messages[dataChannelName] = [];
    channel.addEventListener("message", (e) => this.messages[dataChannelName].push(
      typeof e.data === "string" ? e.data : Array.from(new Uint8Array(e.data))));
    return channel;
  }
  async close(mids) {  // a negotiated close: stop the transceivers, offer, apply the SFU's answer
    for (const t of this.pc.getTransceivers()) if (mids.includes(t.mid)) t.stop();
    await this.pc.setLocalDescription(await this.pc.createOffer());
    const result = await this.call("PUT", `/sessions/${this.sessionId}/tracks/close`, {
      tracks: mids.map(mid => ({mid})), force: false,
      sessionDescription: {type: "offer", sdp: this.pc.localDescription.sdp},
    });
    await this.pc.setRemoteDescription(this.remote(result.sessionDescription));
    return result.tracks;
  }
  async session() {
    return this.call("GET", `/sessions/${this.sessionId}`);
  }
  async inbound() {  // mid -> {kind, frames decoded or audio samples received}
    const out = {};
    for (const s of (await this.pc.getStats()).values())
      if (s.type === "inbound-rtp")
        out[s.mid] = {kind: s.kind, count: (s.kind === "video" ? s.framesDecoded : s.totalSamplesReceived) || 0};
    return out;
  }
};
