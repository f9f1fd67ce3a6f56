// The operator dashboard: live snapshots from /dashboard/events, charts of the last hour from /v1/usage.
// Every value from the box is written as text (textContent), never as markup: customIdentifiers,
// labels and track names are chosen by clients.

const KEY = "edgecall-admin-token";
const CHART_EVERY = 10000; // ms; the box samples usage every 10 s
const STEP = 30; // s per chart point: 120 points for the hour
const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(KEY);
let events = null;
let chartTimer = null;

// --- formatting -------------------------------------------------------------------------------------

function unit(value, steps, suffix) {
  let i = 0;
  while (Math.abs(value) >= 1000 && i < steps.length - 1) { value /= 1000; i++; }
  return (i && value < 10 ? value.toFixed(1) : Math.round(value)) + " " + steps[i] + suffix;
}
const bytes = (v) => unit(v, ["", "k", "M", "G", "T"], "B");
const bits = (v) => unit(v, ["", "k", "M", "G"], "bit/s");
// An axis label: 1.5, 145k, 2.3M.
function compact(v) {
  let i = 0;
  while (v >= 1000 && i < 3) { v /= 1000; i++; }
  return (Number.isInteger(v) ? v : v < 10 ? v.toFixed(1) : Math.round(v)) + ["", "k", "M", "G"][i];
}
const count = (v) => (v ?? 0).toLocaleString("en");
const percent = (v) => (100 * v).toFixed(v && v < 0.1 ? 1 : 0) + " %";
const shortId = (id) => id.slice(0, 8);
function age(s) {
  if (s < 90) return Math.round(s) + " s";
  if (s < 5400) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

// --- elements ---------------------------------------------------------------------------------------

function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (cls) node.className = cls;
  return node;
}

// A table from a header row and rows of cells (a cell is text, or [text, class]).
function table(id, head, rows, empty = "none") {
  const target = $(id);
  const thead = el("thead");
  const tr = el("tr");
  head.forEach((h) => tr.append(el("th", h)));
  thead.append(tr);
  const tbody = el("tbody");
  for (const row of rows) {
    const line = el("tr");
    row.forEach((cell) => line.append(Array.isArray(cell) ? el("td", cell[0], cell[1]) : el("td", cell)));
    tbody.append(line);
  }
  if (!rows.length) {
    const line = el("tr");
    const td = el("td", empty, "muted");
    td.colSpan = head.length;
    line.append(td);
    tbody.append(line);
  }
  target.replaceChildren(thead, tbody);
}

const ok = (good, text) => [text, good ? "good" : "bad"];

// --- the live snapshot ------------------------------------------------------------------------------

function render(s) {
  $("node").textContent = s.node;
  $("status").textContent = s.status;
  $("status").className = "badge " + (s.status === "ok" ? "good" : "bad");
  $("live").textContent = "live · " + new Date(s.t * 1000).toLocaleTimeString();
  const sfu = s.sfu || { sessions: 0, tracks: 0, legs: 0, forwardedPackets: 0, list: [] };
  $("sessions").textContent = count(sfu.sessions);
  $("tracks").textContent = count(sfu.tracks);
  $("legs").textContent = count(sfu.legs);
  $("allocations").textContent = s.turn ? count(s.turn.allocations) : "off";
  $("forwarded").textContent = count(sfu.forwardedPackets);

  table("nodes", ["node", "sessions", "state", "API"], s.nodes.map((n) => [
    n.id + (n.self ? " (this box)" : ""), count(n.sessions),
    n.self ? ok(s.status === "ok", s.status) : ok(!n.draining, n.draining ? "draining" : "heartbeating"), n.api,
  ]));
  $("services").textContent = "services: " + Object.entries(s.services).map(([k, v]) => k + " " + v).join(", ");
  const agent = s.agent;
  $("agent").textContent = agent
    ? `health agent (${agent.age_seconds.toFixed(1)} s ago): ${agent.state}; ` + Object.entries(agent.probes || {})
        .map(([name, p]) => `${name} ${p.ok ? "ok" : "failing"}`).join(", ")
    : "health agent: no report (is `appliance announce` running?)";

  const bgp = s.bgp || { sessions: [], announced: [] };
  table("bgp", ["neighbor", "state", "exports", "AS", "since", "session"], bgp.sessions.map((b) => [
    b.neighbor, ok(b.established, b.info || b.state), b.exported.join(", ") || "nothing", b.asn, b.since, b.name,
  ]), bgp.error || (s.bgp ? "no sessions" : "no report from the health agent"));
  $("announced").textContent = "announced: " + ((bgp.announced || []).join(", ") || "nothing");

  table("backbone", ["peer", "tunnel", "state", "slice", "forwarded", "dropped"],
    Object.entries(s.backbone || {}).map(([node, p]) => [
      node, p.interface, ok(p.up, p.state), p.forwarding ? "forwarded" : p.forwarding === false ? "dropped here" : "–",
      p.forwarded ?? "–", p.dropped ?? "–",
    ]), "no backbone peers reported");
  const trunks = (s.cluster && s.cluster.trunk_peers) || {};
  table("trunks", ["trunk peer", "packets in", "packets out", "errors"], Object.entries(trunks).map(([node, c]) => [
    node, count(c.packets_in), count(c.packets_out), ok(!c.errors, count(c.errors)),
  ]), "no trunks (single box)");

  // One row per session: who it is, then a line per track it publishes (↑) and receives (↓).
  table("session-list", ["session", "tracks"], sfu.list.map((x) => [
    [`${shortId(x.id)}${x.label ? " " + x.label : ""}\n${x.app} · ${x.state} · ${age(x.ageSeconds)}`,
      "lines " + (x.state === "connected" ? "good" : "bad")],
    [[...x.published.map((t) => `↑ ${t.track} (${t.kind}) ${bits(t.bitrate)}, loss ${
      percent(Math.max(0, ...t.layers.map((l) => l.loss)))}`),
      ...x.pulled.map((p) => `↓ ${shortId(p.session)}/${p.track}${p.layer ? " [" + p.layer + "]" : ""} ` +
        `${bits(p.bitrate)}, loss ${percent(p.loss)}, RTT ${Math.round(p.rttMs)} ms`)].join("\n") || "none",
      "lines wide"],
  ]), "no sessions");

  const turn = s.turn || { identifiers: [], issuers: [] };
  const used = turn.identifiers.filter((i) => i.identifier !== "other" || i.allocations);
  table("identifiers", ["customIdentifier", "now", "made", "from clients", "to clients"], used.map((i) => [
    i.identifier || "(none)", count(i.allocationsNow), count(i.allocations), bytes(i.bytesFromClient),
    bytes(i.bytesToClient),
  ]), s.turn ? "no allocations yet" : "TURN is off");
  table("issuers", ["issuer", "now", "from clients", "to clients"], turn.issuers.map((i) => [
    i.issuer, count(i.allocationsNow), bytes(i.bytesFromClient), bytes(i.bytesToClient),
  ]), "none");
  table("apps", ["app", "sessions", "ingress", "egress"], Object.entries(s.usage.app).map(([app, u]) => [
    app, count(u.sessions), bytes(u.ingressBytes), bytes(u.egressBytes),
  ]), "no apps");
}

// --- charts of the last hour ------------------------------------------------------------------------

const W = 320, H = 150, PAD = { l: 30, r: 6, t: 8, b: 20 };
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// Lines over [since, until]; each series is {name, cls, values: [[t, v]]}.
function chart(id, title, series, since, until, format) {
  const max = Math.max(1, ...series.flatMap((s) => s.values.map((p) => p[1])));
  const x = (t) => PAD.l + ((t - since) / (until - since)) * (W - PAD.l - PAD.r);
  const y = (v) => H - PAD.b - (v / max) * (H - PAD.t - PAD.b);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  for (const v of [0, max / 2, max]) {
    root.append(svg("line", { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: "grid" }));
    root.append(svg("text", { x: PAD.l - 4, y: y(v) + 3, "text-anchor": "end" }, compact(v)));
  }
  root.append(svg("text", { x: PAD.l, y: H - 4 }, "−60 min"));
  root.append(svg("text", { x: W - PAD.r, y: H - 4, "text-anchor": "end" }, "now"));
  for (const s of series) {
    if (!s.values.length) continue;
    const points = s.values.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    root.append(svg("polyline", { points, class: "line " + s.cls }));
    const [t, v] = s.values[s.values.length - 1]; // a dot on the latest: one point alone draws no line
    root.append(svg("circle", { cx: x(t).toFixed(1), cy: y(v).toFixed(1), r: 2.5, class: "dot " + s.cls }));
  }
  const caption = el("figcaption", title + ": ");
  for (const s of series) {
    const last = s.values.length ? s.values[s.values.length - 1][1] : 0;
    caption.append(el("span", `${s.name} ${format(last)}`, "key " + s.cls), " ");
  }
  $(id).replaceChildren(root, caption);
}

async function usage() {
  const res = await fetch("/v1/usage?by=box&step=" + STEP, { headers: { Authorization: "Bearer " + token } });
  const body = await res.json();
  if (!res.ok) throw Object.assign(new Error(body.errorDescription || res.statusText), { status: res.status });
  return body;
}

async function drawCharts() {
  const data = await usage();
  const points = data.series.length ? data.series[0].points : [];
  const until = data.until, since = data.since;
  // The last bucket is still filling: its rate is over the time it has run.
  const rate = (p, key) => (8 * p[key]) / Math.max(1, Math.min(data.step, until - p.t));
  chart("chart-traffic", "Traffic", [
    { name: "in", cls: "a", values: points.map((p) => [p.t + data.step / 2, rate(p, "ingressBytes")]) },
    { name: "out", cls: "b", values: points.map((p) => [p.t + data.step / 2, rate(p, "egressBytes")]) },
  ], since, until, bits);
  chart("chart-load", "Peak at once", [
    { name: "sessions", cls: "a", values: points.map((p) => [p.t + data.step / 2, p.sessions]) },
    { name: "allocations", cls: "b", values: points.map((p) => [p.t + data.step / 2, p.allocations]) },
  ], since, until, (v) => count(Math.round(v)));
}

// --- signing in and staying live --------------------------------------------------------------------

function signedOut(message) {
  token = null;
  sessionStorage.removeItem(KEY);
  if (events) events.close();
  events = null;
  clearInterval(chartTimer);
  $("board").hidden = true;
  $("signout").hidden = true;
  $("login").hidden = false;
  $("status").textContent = "signed out";
  $("status").className = "badge";
  $("login-error").textContent = message || "";
  $("token").focus();
}

async function connect() {
  if (events) events.close();
  clearInterval(chartTimer);
  try {
    await drawCharts(); // also checks the token before the stream opens
  } catch (e) {
    if (e.status === 401) return signedOut(e.message);
    $("live").textContent = "box unreachable: " + e.message;
  }
  $("login").hidden = true;
  $("board").hidden = false;
  $("signout").hidden = false;
  events = new EventSource("/dashboard/events?token=" + encodeURIComponent(token));
  events.onmessage = (e) => render(JSON.parse(e.data));
  events.onerror = () => {
    $("live").textContent = "reconnecting…";
    // A refused stream is not retried by the browser: find out why (a token changed on the box?).
    if (events.readyState !== EventSource.CLOSED) return;
    usage().then(connect, (e) => (e.status === 401 ? signedOut(e.message) : setTimeout(connect, 5000)));
  };
  chartTimer = setInterval(() => drawCharts().catch(() => {}), CHART_EVERY);
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("token").value.trim();
  sessionStorage.setItem(KEY, token);
  $("token").value = "";
  connect();
});
$("signout").addEventListener("click", () => signedOut());

if (token) connect();
else signedOut();
