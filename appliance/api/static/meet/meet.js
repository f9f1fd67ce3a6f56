// The meeting page: one room, built only on the box's JavaScript client (/sdk/edgecall.js) and the
// room's WebSocket (appliance/api/meet.py). The room says who is here and which tracks each person
// publishes; media and chat go through Calls sessions, one per page.
import { Edgecall } from "/sdk/edgecall.js";

const $ = (id) => document.getElementById(id);
const room = decodeURIComponent(location.pathname.split("/")[2] || "");
const query = new URLSearchParams(location.search);
const QUALITY_EVERY = 2000; // ms between connection-quality readings
const RETRY_PULLS = 1000;   // ms before pulling again what failed (a publisher a moment from ready)
// Simulcast layers for a camera: other pages take the one their tile and bandwidth suit.
const LAYERS = [{ rid: "f" }, { rid: "h", scaleResolutionDownBy: 2 }, { rid: "q", scaleResolutionDownBy: 4 }];

const state = {
  call: null, socket: null, me: null, name: "", left: false,
  local: {},             // trackName -> LocalTrack of the SDK ("mic", "cam")
  sources: { mic: "microphone", cam: "camera" },
  muted: { mic: false, cam: false },
  camera: null, screen: null, chat: null,
  peers: new Map(),      // participant id -> { name, sessionId, tile, pulls: Map(trackName -> RemoteTrack), chat, chatSession }
  roster: [], handling: null, again: false, timer: null,
};
window.meeting = state; // for the console and the tests

function status(text) { $("status").textContent = text; }

// --- joining and leaving -----------------------------------------------------------------------

async function join(name) {
  state.name = name;
  state.left = false;
  try { localStorage.setItem("edgecall.name", name); } catch { /* private mode */ }
  $("lobby").hidden = true;
  $("left").hidden = true;
  for (const id of ["grid", "controls"]) $(id).hidden = false;
  status("joining…");
  const res = await fetch(`/meet/${encodeURIComponent(room)}/join`, { method: "POST" });
  const joined = await res.json();
  if (!res.ok) throw new Error(`join: ${joined.errorDescription || res.status}`);
  state.me = joined.participant;
  const call = state.call = new Edgecall({
    base: `${location.origin}/v1/apps/${encodeURIComponent(joined.appId)}`, token: joined.token,
    iceServers: joined.iceServers,
  });
  call.addEventListener("statechange", () => status(call.state));
  // After a reconnection the client has a new session: the room hears of it (others pull anew), its
  // re-pulled tracks go back on their tiles, its data channels are new ones.
  call.addEventListener("reconnected", () => announce());
  call.addEventListener("track", (event) => {
    for (const peer of state.peers.values()) if ([...peer.pulls.values()].includes(event.detail)) show(peer);
  });
  // A data channel opened again: after a reconnection, or on a data-only session when the media session
  // lost its channels but not its media (a box failed). The chat is then published under that session:
  // the room hears of it, and the others subscribe to it there.
  call.addEventListener("datachannel", (event) => {
    const { channel, previous, location } = event.detail;
    if (previous && previous === state.chat) state.chat = channel;
    for (const peer of state.peers.values()) {
      if (previous && peer.chat === previous) { peer.chat = channel; listen(channel); }
    }
    if (location === "local") announce();
  });
  await call.connect();
  const media = await capture();
  selfTile(media);
  for (const track of media ? media.getTracks() : []) {
    const name = track.kind === "audio" ? "mic" : "cam";
    if (name === "cam") state.camera = track;
    state.local[name] = await call.push(track, name === "cam" && track.getSettings().width >= 640
      ? { name, simulcast: LAYERS } : { name });
  }
  state.chat = await call.publishData("chat");
  openSocket(joined.token);
  state.timer = setInterval(quality, QUALITY_EVERY);
}

async function capture() {
  // The camera may be missing or refused: join with what there is (a viewer with no devices too).
  for (const wanted of [{ audio: true, video: { width: 1280, height: 720 } }, { audio: true }, { video: true }]) {
    try { return await navigator.mediaDevices.getUserMedia(wanted); } catch { /* the next, smaller ask */ }
  }
  return null;
}

function openSocket(token) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = state.socket = new WebSocket(
    `${scheme}://${location.host}/meet/${encodeURIComponent(room)}/ws?token=${encodeURIComponent(token)}`);
  socket.addEventListener("open", announce);
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "roster") { state.roster = message.participants; handleRoster(); }
    if (message.type === "error") console.warn("room:", message.reason);
  });
  socket.addEventListener("close", () => { if (!state.left) status("room connection lost"); });
}

// Tell the room who this page is and what it publishes (again after any change).
function announce() {
  if (!state.socket || state.socket.readyState !== WebSocket.OPEN) return;
  const tracks = Object.entries(state.local).map(([trackName, local]) => ({
    trackName, kind: local.kind, source: state.sources[trackName], muted: state.muted[trackName],
  }));
  state.socket.send(JSON.stringify({
    type: "update", name: state.name, sessionId: state.call.sessionId, dataSessionId: state.call.dataSessionId, tracks,
  }));
}

async function leave() {
  state.left = true;
  clearInterval(state.timer);
  state.socket?.close();
  await state.call?.close();
  for (const track of [state.camera, ...(state.screen ? state.screen.getTracks() : [])]) track?.stop();
  for (const local of Object.values(state.local)) local.track?.stop?.();
  Object.assign(state, { call: null, socket: null, local: {}, camera: null, screen: null, chat: null, roster: [] });
  state.peers.clear();
  $("grid").replaceChildren();
  for (const id of ["grid", "controls", "chat"]) $(id).hidden = true;
  $("lobby").hidden = false;
  $("join").hidden = true;
  $("left").hidden = false;
  $("people").textContent = "";
  status("left");
}

// --- the roster: tiles, pulls and chat channels follow it ------------------------------------------

function handleRoster() {
  // One pass at a time; a roster that arrives meanwhile is handled after, as the latest state.
  if (state.handling) { state.again = true; return; }
  state.handling = (async () => {
    do {
      state.again = false;
      try { await follow(state.roster); } catch (e) { console.warn("roster:", e); }
    } while (state.again && !state.left);
    state.handling = null;
  })();
}

async function follow(participants) {
  $("people").textContent = `${participants.length} here`;
  const present = new Set();
  let retry = false;
  for (const person of participants) {
    if (person.id === state.me || state.left) continue;
    present.add(person.id);
    let peer = state.peers.get(person.id);
    if (peer && peer.sessionId !== person.sessionId) { drop(person.id); peer = null; } // it reconnected
    if (!peer) {
      peer = { sessionId: person.sessionId, tile: tile(person.name), pulls: new Map(), chat: null, chatSession: null };
      state.peers.set(person.id, peer);
      $("grid").append(peer.tile);
    }
    peer.tile.querySelector(".name").textContent = person.name || "Guest";
    const audio = person.tracks.find((t) => t.kind === "audio");
    peer.tile.querySelector(".muted").hidden = !(audio && audio.muted);
    peer.tile.classList.toggle("screen", person.tracks.some((t) => t.kind === "video" && t.source === "screen"));
    if (!person.sessionId) continue;
    for (const [name, remote] of peer.pulls) {
      if (!person.tracks.some((t) => t.trackName === name)) { peer.pulls.delete(name); await remote.close(); }
    }
    const wanted = person.tracks.filter((t) => !peer.pulls.has(t.trackName));
    if (wanted.length) {
      try {
        const pulled = await state.call.pullMany(wanted.map((t) => ({ sessionId: person.sessionId, trackName: t.trackName })));
        pulled.forEach((remote, i) => peer.pulls.set(wanted[i].trackName, remote));
        show(peer);
      } catch (e) { console.warn("pull:", e); retry = true; }
    }
    // Its chat moved to another session (its box failed): subscribe to it there.
    const chatSession = person.dataSessionId || person.sessionId;
    if (peer.chat && peer.chatSession !== chatSession) { peer.chat.close(); peer.chat = null; }
    if (!peer.chat) {
      try {
        peer.chat = await state.call.subscribeData(chatSession, "chat");
        peer.chatSession = chatSession;
        listen(peer.chat);
      } catch { retry = true; }
    }
  }
  for (const id of [...state.peers.keys()]) if (!present.has(id)) drop(id);
  layout();
  if (retry) setTimeout(handleRoster, RETRY_PULLS);
}

function drop(id) {
  const peer = state.peers.get(id);
  state.peers.delete(id);
  peer.tile.remove();
  for (const remote of peer.pulls.values()) remote.close().catch(() => {});
  peer.chat?.close();
}

// --- tiles ---------------------------------------------------------------------------------------

function tile(name) {
  const figure = $("tile").content.firstElementChild.cloneNode(true);
  figure.querySelector(".name").textContent = name || "Guest";
  return figure;
}

function selfTile(media) {
  const figure = tile(`${state.name} (you)`);
  figure.classList.add("self");
  figure.dataset.self = "";
  figure.querySelector("video").srcObject = media ? new MediaStream(media.getVideoTracks()) : null;
  $("grid").append(figure);
}

function show(peer) {
  const video = peer.tile.querySelector("video");
  video.srcObject = new MediaStream([...peer.pulls.values()].map((remote) => remote.track).filter(Boolean));
  video.muted = false; // a remote tile plays its person's voice
  video.play().catch(() => {});
}

function layout() {
  const count = $("grid").children.length;
  const narrow = innerWidth < innerHeight;
  const cols = count <= 1 ? 1 : narrow ? (count <= 2 ? 1 : 2) : Math.ceil(Math.sqrt(count));
  $("grid").style.setProperty("--cols", cols);
}
addEventListener("resize", layout);

async function quality() {
  if (!state.call) return;
  const stats = await state.call.stats();
  for (const peer of state.peers.values()) {
    const readings = [...peer.pulls.values()].map((r) => stats.inbound[r.mid] || stats.inbound[r.trackName]).filter(Boolean);
    if (!readings.length) continue;
    const lost = readings.reduce((sum, r) => sum + (r.packetsLost || 0), 0);
    const previous = peer.lost ?? lost;
    peer.lost = lost;
    const rtt = stats.connection && stats.connection.rtt || 0;
    const grade = lost - previous > 20 || rtt > 0.4 ? "poor" : lost - previous > 2 || rtt > 0.15 ? "fair" : "good";
    const dot = peer.tile.querySelector(".quality");
    dot.className = `quality ${grade}`;
    dot.title = `${grade}: ${lost - previous} packets lost in ${QUALITY_EVERY / 1000} s, round trip ${Math.round(rtt * 1000)} ms`;
  }
}

// --- controls ------------------------------------------------------------------------------------

async function toggle(name, button) {
  const local = state.local[name];
  if (!local) return;
  state.muted[name] = !state.muted[name];
  await local.mute(state.muted[name]);
  button.setAttribute("aria-pressed", String(state.muted[name]));
  announce();
}

// Sharing replaces the camera on the same track: the other pages' tiles show the screen at once,
// with no renegotiation.
async function share(track) {
  if (!state.local.cam) state.local.cam = await state.call.push(track, { name: "cam" });
  else await state.local.cam.replace(track);
  state.sources.cam = "screen";
  track.addEventListener("ended", unshare);
  document.querySelector(".tile.self").classList.add("screen");
  document.querySelector(".tile.self video").srcObject = new MediaStream([track]);
  $("screen").setAttribute("aria-pressed", "true");
  announce();
}
state.share = share;

async function unshare() {
  if (!state.screen && state.sources.cam !== "screen") return;
  for (const track of state.screen ? state.screen.getTracks() : []) track.stop();
  state.screen = null;
  state.sources.cam = "camera";
  if (state.camera) await state.local.cam.replace(state.camera);
  document.querySelector(".tile.self").classList.remove("screen");
  document.querySelector(".tile.self video").srcObject = state.camera ? new MediaStream([state.camera]) : null;
  $("screen").setAttribute("aria-pressed", "false");
  announce();
}
state.unshare = unshare;

async function toggleScreen() {
  if (state.sources.cam === "screen") return unshare();
  state.screen = await navigator.mediaDevices.getDisplayMedia({ video: true });
  await share(state.screen.getVideoTracks()[0]);
}

// --- chat over data channels: each page publishes "chat", and subscribes to everyone else's ----------

function listen(channel) {
  channel.addEventListener("message", (event) => {
    try { const { from, text } = JSON.parse(event.data); say(from, text); } catch { /* not a chat message */ }
  });
}

function say(from, text) {
  const item = document.createElement("li");
  const who = document.createElement("b");
  who.textContent = from || "Guest";
  item.append(who, document.createTextNode(String(text)));
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
}

function send(text) {
  if (!text || !state.chat || state.chat.readyState !== "open") return false;
  state.chat.send(JSON.stringify({ from: state.name, text }));
  say(state.name, text);
  return true;
}
state.send = send;

// --- the page --------------------------------------------------------------------------------------

$("room").textContent = room;
document.title = `${room} · Edgecall`;
$("name").value = query.get("name") || (() => { try { return localStorage.getItem("edgecall.name") || ""; } catch { return ""; } })();
const start = (name) => join(name).catch((e) => { status(String(e.message || e)); console.error(e); });
$("join").addEventListener("submit", (event) => { event.preventDefault(); start($("name").value.trim()); });
$("rejoin").addEventListener("click", () => start(state.name));
$("mic").addEventListener("click", (event) => toggle("mic", event.currentTarget));
$("cam").addEventListener("click", (event) => toggle("cam", event.currentTarget));
$("screen").addEventListener("click", () => toggleScreen().catch((e) => status(String(e.message || e))));
$("talk").addEventListener("click", () => { $("chat").hidden = !$("chat").hidden; $("talk").setAttribute("aria-pressed", String(!$("chat").hidden)); });
$("say").addEventListener("submit", (event) => { event.preventDefault(); if (send($("text").value.trim())) $("text").value = ""; });
$("leave").addEventListener("click", leave);
addEventListener("pagehide", () => state.socket?.close());
if (query.get("autojoin") === "1" && $("name").value) start($("name").value);
