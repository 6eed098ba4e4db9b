// geolb status page. Reads /v1/status, /v1/ready and
// /v1/resolvers/summary every few seconds and renders them; the world
// answer map (/v1/map.svg) is asked for with its ETag, so it comes again
// only when the node's health recolours it. Every string from the API reaches the page as a text node
// (el() and text() below), never as markup.
"use strict";

const REFRESH_MS = 3000;
const TOKEN_KEY = "geolb-admin-token";
const RANK = { green: 0, grey: 0, amber: 1, red: 2 };

let paused = false;
let timer = null;
let last = null; // { status, ready, at (ms, this clock), skew (s: server - this clock) }
let previous = null; // the status before `last`, for rates
let pending = null; // the action the dialog confirms
// The map: the service shown, the SVG's ETag, the parsed SVG, why there is none.
const map = { service: null, etag: null, svg: null, error: null, epoch: null, loading: false };
// Tracked resolvers: the node's samples of their counts ({ t: unix s, s:
// { regions } }), fetched incrementally, and the newest summary.
let samples = [];
let tracking = null;
const MAX_SAMPLES = 720; // as many as the node keeps: an hour
// How long the timeline stays up after the last override came or went.
const LINGER_S = 15 * 60;
const SVGNS = "http://www.w3.org/2000/svg";
// Line colours of regions the map has not named (the map's palette).
const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#17becf", "#bcbd22", "#8c564b"];

// ---- DOM helpers: data only ever becomes text --------------------------

function el(tag, attrs, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") n.className = v;
    else if (k === "on") for (const [ev, f] of Object.entries(v)) n.addEventListener(ev, f);
    else if (k === "data") for (const [dk, dv] of Object.entries(v)) n.dataset[dk] = String(dv);
    else n.setAttribute(k, String(v));
  }
  for (const c of kids.flat()) {
    if (c === undefined || c === null || c === false) continue;
    n.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return n;
}

// The same for SVG elements (text only through text nodes, too).
function svgEl(tag, attrs, ...kids) {
  const n = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    n.setAttribute(k, String(v));
  }
  for (const c of kids.flat()) {
    if (c === undefined || c === null || c === false) continue;
    n.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return n;
}

function $(id) { return document.getElementById(id); }
function light(color, title) { return el("span", { class: "light " + color, title: title || color }); }
function badge(color, words) { return el("span", { class: "badge " + color }, words); }
function worst(colors) { return colors.reduce((a, b) => (RANK[b] > RANK[a] ? b : a), "green"); }

// Any JSON value in words (for shapes the page does not know field by field).
function words(v) {
  if (v === null || v === undefined) return "";
  if (typeof v !== "object") return String(v);
  if (Array.isArray(v)) return v.map(words).join(", ");
  return Object.entries(v).map(([k, x]) => (typeof x === "object" && x !== null ? k + " (" + words(x) + ")" : k + " " + words(x))).join(", ");
}

function fmtNum(n) {
  if (n === null || n === undefined) return "–";
  if (typeof n !== "number") return String(n);
  if (Math.abs(n) >= 1e9) return (n / 1e9).toFixed(1) + "G";
  if (Math.abs(n) >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (Math.abs(n) >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function fmtDur(s) {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  s = Math.max(0, Math.round(s));
  if (s < 120) return s + "s";
  if (s < 7200) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
  if (s < 172800) return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  return Math.floor(s / 86400) + "d" + Math.floor((s % 86400) / 3600) + "h";
}

// Server "now" in unix seconds, from the last fetch and this clock.
function serverNow() { return last ? Date.now() / 1000 + last.skew : Date.now() / 1000; }
function ago(unixS) { return unixS ? fmtDur(serverNow() - unixS) + " ago" : "never"; }
function when(unixS) { return unixS ? new Date(unixS * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z") : "–"; }

// A countdown to a deadline in server unix seconds, ticking every second.
function countdown(untilS) {
  return el("span", { class: "countdown mono", data: { until: untilS } }, fmtDur(untilS - serverNow()));
}
function tick() {
  for (const n of document.querySelectorAll(".countdown")) {
    n.textContent = fmtDur(Number(n.dataset.until) - serverNow());
  }
  if (last) $("updated").textContent = "updated " + fmtDur((Date.now() - last.at) / 1000) + " ago";
}

function table(head, rows) {
  return el("table", {},
    el("thead", {}, el("tr", {}, head.map((h) => el("th", { class: h.startsWith("#") ? "num" : null }, h.replace(/^#/, ""))))),
    el("tbody", {}, rows));
}
function num(v) { return el("td", { class: "num" }, fmtNum(v)); }

// ---- fetching ----------------------------------------------------------

function token() { return sessionStorage.getItem(TOKEN_KEY); }

async function getJson(path) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  const r = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  return { code: r.status, body, date: r.headers.get("Date") };
}

async function post(path, payload) {
  const headers = { "Content-Type": "application/json" };
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  const r = await fetch(path, { method: "POST", headers, body: JSON.stringify(payload), credentials: "omit" });
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  return { code: r.status, body };
}

async function refresh() {
  clearTimeout(timer);
  try {
    const [st, rd, rs] = await Promise.all([getJson("/v1/status"), getJson("/v1/ready"), getJson("/v1/resolvers/summary" + (samples.length ? "?since=" + samples[samples.length - 1].t : ""))]);
    if (st.code === 401) {
      askToken(token() ? "That token was refused." : "");
      return;
    }
    $("login").hidden = true;
    if (st.code !== 200 || !st.body) throw new Error("GET /v1/status answered " + st.code);
    const at = Date.now();
    previous = last;
    last = { status: st.body, ready: rd.body || {}, at, skew: (st.body.now || at / 1000) - at / 1000 };
    if (rs.code === 200 && rs.body) addSample(rs.body);
    $("banner").hidden = true;
    render();
    refreshMap();
  } catch (e) {
    const b = $("banner");
    b.hidden = false;
    b.textContent = "Cannot read this node's status: " + e.message + (last ? " — showing what it said " + fmtDur((Date.now() - last.at) / 1000) + " ago." : "");
    $("light").className = "light red";
  } finally {
    if (!paused && $("login").hidden) timer = setTimeout(refresh, REFRESH_MS);
  }
}

function askToken(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  $("main").replaceChildren();
  $("login").hidden = false;
  $("login-error").textContent = message;
  $("summary").textContent = "token needed";
  $("light").className = "light grey";
  $("token").focus();
}

// ---- rendering ---------------------------------------------------------

// Problems found while rendering, for the "needs attention" list on top.
let problems = [];
function note(color, what, why) {
  if (color !== "green" && color !== "grey") problems.push({ color, what, why });
  return color;
}

function render() {
  const s = last.status;
  const ready = last.ready;
  problems = [];
  const sections = [
    nodeCard(s, ready),
    healthCard(s.health || {}),
    timelineCard(s.health || {}),
    mapCard(s),
    tierCard(s.tier || { listeners: [], groups: [] }, s.health || {}),
    dnsCard(s),
  ];
  const overall = worst(problems.map((p) => p.color));
  $("light").className = "light " + overall;
  $("light").title = overall;
  $("node").textContent = s.nsid || "";
  $("summary").textContent = (ready.ready ? "ready" : "NOT READY") + " · generation " + s.generation + " · v" + s.version +
    " · " + (problems.length ? problems.length + " to look at" : "all green");
  document.title = (overall === "green" ? "✓ " : overall === "red" ? "✗ " : "! ") + "geolb " + (s.nsid || "");
  $("main").replaceChildren(attentionCard(), ...sections);
  tick();
}

function attentionCard() {
  if (!problems.length) {
    return el("section", { class: "card", id: "attention-ok" },
      el("h2", {}, light("green"), "Everything is green"));
  }
  const sorted = problems.slice().sort((a, b) => RANK[b.color] - RANK[a.color]);
  return el("section", { class: "card", id: "attention" },
    el("h2", {}, light(sorted[0].color), "Needs attention (" + problems.length + ")"),
    el("ul", {}, sorted.map((p) => el("li", {}, light(p.color), el("span", { class: "what" }, p.what), el("span", {}, p.why)))));
}

function nodeCard(s, ready) {
  const readyColor = note(ready.ready ? "green" : "red", "readiness", ready.reason || "not ready");
  const r = s.last_reload;
  let reload = el("span", { class: "muted" }, "no reload since start");
  if (r) {
    const c = note(r.ok ? (r.warnings.length ? "amber" : "green") : "red", "last reload",
      r.ok ? r.warnings.join("; ") : "refused (generation " + r.generation + " still serving): " + r.errors.join("; "));
    reload = el("div", {}, badge(c, r.ok ? "ok" : "failed"), " ", ago(r.at), " → generation " + r.generation,
      el("ul", { class: "mono" }, r.errors.map((e) => el("li", { class: "bad-text" }, e)), r.warnings.map((w) => el("li", {}, w))));
  }
  const g = s.geoip || {};
  const geoColor = note(g.last_error ? "amber" : "green", "GeoIP", g.last_error ? g.last_error + " (since " + ago(g.last_error_at) + "; the previous database keeps serving)" : "");
  const db = (name, d) => d
    ? el("div", {}, el("b", {}, name + " "), d.database_type, " · built " + when(d.build_epoch), " · ", el("span", { class: "mono" }, d.path), " (" + d.copy + ")",
      d.wrong_type_records ? el("span", { class: "bad-text" }, " · " + d.wrong_type_records + " records of the wrong type, first " + words(d.first_wrong_type)) : null)
    : null;
  return el("section", { class: "card", id: "node-card" },
    el("h2", {}, light(worst([readyColor, geoColor, r && !r.ok ? "red" : "green"])), "Node"),
    el("dl", { class: "kv" },
      el("dt", {}, "node"), el("dd", {}, (s.nsid || "–") + " · geolb " + s.version + " · up " + fmtDur(serverNow() - s.started_at)),
      el("dt", {}, "ready"), el("dd", {}, badge(readyColor, ready.ready ? "ready" : "not ready"), " ", ready.reason || ""),
      el("dt", {}, "config"), el("dd", {}, el("span", { class: "mono" }, s.config || "–"), " · generation " + s.generation + ", loaded " + ago(s.loaded_at)),
      el("dt", {}, "last reload"), el("dd", {}, reload),
      el("dt", {}, "GeoIP"), el("dd", {}, db("city", g.city), db("asn", g.asn),
        !g.city && !g.asn ? el("span", { class: "muted" }, "no database") : null,
        g.last_swap ? el("div", { class: "muted" }, "last swap " + ago(g.last_swap)) : null,
        g.building_since ? el("div", {}, badge("amber", "building"), " a new database since " + ago(g.building_since)) : null,
        g.last_error ? el("div", { class: "bad-text" }, g.last_error) : null)));
}

// The endpoint's colour and why.
function endpointVerdict(e) {
  const votes = Object.values(e.votes || {});
  // An operator's drain or forced state is intended: amber, whatever it does.
  if (e.override) return ["amber", e.reason || e.override.state];
  if (!e.up) return ["red", e.reason || e.last_error || "down"];
  if (votes.some((v) => v !== "up")) return ["amber", "votes: " + words(e.votes)];
  if (e.reason && !/^(up|healthy|ok)\b/i.test(e.reason) && e.checked_up === false) return ["amber", e.reason];
  return ["green", ""];
}

function voteChips(votes) {
  return el("span", { class: "votes" }, Object.entries(votes || {}).map(([name, v]) =>
    badge(v === "up" ? "green" : v === "down" ? "red" : "amber", name + ": " + v)));
}

// "drain", "force down", or "partial drain 10 %".
function overrideLabel(ov) {
  if (ov.state === "drain" && typeof ov.fraction === "number") return "partial drain " + Math.round(ov.fraction * 100) + " %";
  return ov.state.replace("_", " ");
}

function overrideCell(ov) {
  if (!ov) return el("td", {}, "");
  return el("td", {}, badge("amber", overrideLabel(ov)), " ",
    el("span", { class: "muted" }, ov.target),
    ov.until ? el("span", {}, " · reverts in ", countdown(ov.until)) : el("span", { class: "muted" }, " · until undone"));
}

function actionButtons(target, admin) {
  if (admin && admin !== "none") {
    return el("button", { class: "small", type: "button", on: { click: () => confirmAction("undrain", target) } }, "undo " + admin.replace("_", " "));
  }
  return el("button", { class: "small", type: "button", on: { click: () => confirmAction("drain", target) } }, "drain…");
}

function healthCard(h) {
  const regions = new Map();
  for (const p of h.pools || []) {
    if (!regions.has(p.region)) regions.set(p.region, []);
    regions.get(p.region).push(p);
  }
  const vantages = (h.vantages || []).map((v) => {
    const c = note(v.fresh ? "green" : "amber", "vantage " + v.vantage,
      "no fresh observations" + (v.last_ok ? " since " + ago(v.last_ok) : "") + (v.last_error ? ": " + v.last_error : ""));
    return el("tr", { class: c }, el("td", {}, v.vantage), el("td", {}, badge(c, v.fresh ? "fresh" : "stale")),
      el("td", { class: "mono" }, v.url), el("td", {}, v.last_ok ? ago(v.last_ok) : "never"), el("td", { class: "reason" }, v.last_error || ""));
  });
  const blocks = [];
  for (const [region, pools] of regions) {
    const poolBlocks = pools.map((p) => {
      const eps = (h.endpoints || []).filter((e) => e.pool === p.pool);
      const rows = eps.map((e) => {
        const [c, why] = endpointVerdict(e);
        note(c, e.endpoint, why);
        return el("tr", { class: c },
          el("td", { class: "addr" }, e.endpoint),
          el("td", {}, badge(c, e.override ? overrideLabel(e.override) : e.up ? "up" : "down")),
          el("td", { class: "reason" }, e.reason || "", e.last_error && e.last_error !== e.reason ? el("div", { class: "bad-text" }, e.last_error) : null),
          el("td", {}, voteChips(e.votes)),
          el("td", { class: "num" }, e.rtt_ewma_ms === null || e.rtt_ewma_ms === undefined ? "–" : e.rtt_ewma_ms.toFixed(1) + " ms"),
          overrideCell(e.override),
          el("td", {}, e.last_change ? ago(e.last_change) : ""),
          el("td", {}, actionButtons(e.endpoint, e.override && e.override.state)));
      });
      const pc = p.healthy ? (p.up < p.endpoints ? "amber" : "green") : "red";
      note(pc === "amber" ? "green" : pc, "pool " + p.pool, p.up + " of " + p.endpoints + " endpoints up, needs " + p.min_healthy);
      return el("div", { class: "pool" },
        el("h3", {}, light(pc), "pool " + p.pool, badge(pc, p.up + "/" + p.endpoints + " up"),
          el("span", { class: "muted" }, "min healthy " + p.min_healthy), actionButtons(p.pool, null)),
        table(["endpoint", "verdict", "reason", "votes", "#RTT", "admin", "changed", ""], rows));
    });
    const rc = worst(pools.map((p) => (p.healthy ? (p.up < p.endpoints ? "amber" : "green") : "red")));
    blocks.push(el("div", { class: "region" },
      el("h3", {}, light(rc), el("span", {}, "region " + region), actionButtons(region, null)), poolBlocks));
  }
  const overrides = (h.overrides || []).map((o) => el("li", {}, badge("amber", overrideLabel(o)), " ", el("span", { class: "mono" }, o.target),
    " set " + ago(o.set_at), o.until ? el("span", {}, " · reverts in ", countdown(o.until)) : " · until undone", " ",
    el("button", { class: "small", type: "button", on: { click: () => confirmAction("undrain", o.target) } }, "undo")));
  return el("section", { class: "card", id: "health-card" },
    el("h2", {}, "Health", el("span", { class: "muted" }, "epoch " + (h.epoch ? h.epoch.id : "–") + " · this vantage " + h.vantage + (h.local_checks === false ? " (no local checks)" : "") + " · quorum " + h.quorum)),
    vantages.length ? table(["vantage", "", "url", "last ok", "last error"], vantages) : null,
    overrides.length ? el("div", {}, el("h3", {}, "Operator overrides"), el("ul", {}, overrides)) : null,
    blocks.length ? blocks : el("p", { class: "muted" }, "no regions or pools configured"));
}

function classes(arr) {
  return (arr || []).map((n, i) => (i >= 4 && n > 0 ? el("b", { class: "bad-text" }, fmtNum(n)) : fmtNum(n)))
    .flatMap((x, i) => (i ? [" / ", x] : [x]));
}

function backendVerdict(b) {
  if (b.admin && b.admin !== "none") return ["amber", b.admin.replace("_", " ") + " by operator"];
  if (b.ejection) return ["red", "ejected: " + words(b.ejection.reason) + " (ejection " + b.ejection.count + ")"];
  if (!b.up) return ["red", b.health || "down"];
  if (b.drain) return ["amber", "draining: " + b.drain.remaining + " connections left"];
  if (!b.eligible) return ["amber", "not eligible"];
  if (b.effective_weight < 1) return ["amber", "slow start at " + Math.round(b.effective_weight * 100) + "% weight"];
  return ["green", ""];
}

function tierCard(t, h) {
  if (!(t.listeners || []).length && !(t.groups || []).length) {
    return el("section", { class: "card", id: "tier-card" }, el("h2", {}, "Tier"), el("p", { class: "muted" }, "no tier listeners on this node"));
  }
  const groupUp = new Map(t.groups.map((g) => [g.name, g.backends.some((b) => b.up && !b.ejection)]));
  const listeners = t.listeners.map((l) => {
    const full = l.max_connections && l.active >= 0.9 * l.max_connections;
    const c = groupUp.get(l.group) === false
      ? note("red", "listener " + l.name, "group " + l.group + " has no backend up: new connections are closed")
      : note(full ? "amber" : "green", "listener " + l.name, l.active + " of " + l.max_connections + " connections");
    return el("tr", { class: c },
      el("td", {}, l.name), el("td", {}, l.mode), el("td", { class: "addr" }, l.bind), el("td", {}, l.region), el("td", {}, l.group),
      el("td", { class: "num" }, fmtNum(l.active) + " / " + fmtNum(l.max_connections)), num(l.parked), num(l.accepted), num(l.requests),
      el("td", { class: "num" }, classes(l.responses)),
      num(l.refused_max), num(l.no_backend), num(l.errors));
  });
  const groups = t.groups.map((g) => {
    const rows = g.backends.map((b) => {
      const [c, why] = backendVerdict(b);
      note(c, g.name + "/" + b.address, why);
      const ov = overrideFor(h, [g.name + "/" + b.address, g.region + "/" + b.address, g.name, g.region]);
      return el("tr", { class: c },
        el("td", { class: "addr" }, b.address, b.backup ? el("span", { class: "muted" }, " backup") : null),
        el("td", {}, badge(c, b.admin && b.admin !== "none" ? b.admin.replace("_", " ") : b.ejection ? "ejected" : b.up ? "up" : "down")),
        el("td", { class: "reason" }, why || b.health,
          b.ejection_ends_in_s !== null && b.ejection_ends_in_s !== undefined ? el("span", {}, " · back in ", countdown(serverNow() + b.ejection_ends_in_s)) : null,
          b.drain ? el("span", {}, " · deadline in ", countdown(serverNow() + b.drain.deadline_in_s)) : null),
        el("td", {}, b.admin && b.admin !== "none" ? badge("amber", b.admin.replace("_", " ")) : "",
          ov && ov.until ? el("span", {}, " ", countdown(ov.until)) : null),
        num(b.active), num(b.idle_connections),
        el("td", { class: "num" }, b.weight + (b.effective_weight < 1 ? " × " + Math.round(b.effective_weight * 100) + "%" : "")),
        el("td", { class: "num" }, b.latency_ms === null || b.latency_ms === undefined ? "–" : b.latency_ms.toFixed(1) + " ms"),
        num(b.total), num(b.connect_errors), el("td", { class: "num" }, classes(b.http_responses)),
        el("td", {}, actionButtons(g.name + "/" + b.address, b.admin)));
    });
    const up = g.backends.filter((b) => b.up && !b.ejection).length;
    const gc = up === 0 ? "red" : up < g.backends.length ? "amber" : "green";
    if (up === 0) note("red", "group " + g.name, "no backend up");
    return el("div", { class: "group" },
      el("h3", {}, light(gc), "group " + g.name, badge(gc, up + "/" + g.backends.length + " up"),
        el("span", { class: "muted" }, g.region + " · " + g.algorithm + " · " + g.protocol + (g.persistence !== "none" ? " · sticky " + g.persistence : "") +
          (g.slow_start_s ? " · slow start " + fmtDur(g.slow_start_s) : "")), actionButtons(g.name, null)),
      table(["backend", "state", "reason", "admin", "#active", "#idle pool", "#weight", "#latency", "#conns", "#connect err", "#http 1xx/2xx/3xx/4xx/5xx", ""], rows));
  });
  return el("section", { class: "card", id: "tier-card" },
    el("h2", {}, "Tier"),
    table(["listener", "mode", "bind", "region", "group", "#active / max", "#parked", "#accepted", "#requests", "#1xx/2xx/3xx/4xx/5xx", "#refused", "#no backend", "#errors"], listeners),
    groups);
}

function overrideFor(h, targets) {
  for (const t of targets) {
    const o = (h.overrides || []).find((x) => x.target === t);
    if (o) return o;
  }
  return null;
}

// DNS counters: every counter /v1/status reports (new ones appear by
// themselves), with its rate since the previous refresh.
function dnsCard(s) {
  const prev = previous && previous.status.counters;
  const dt = previous ? (last.at - previous.at) / 1000 : 0;
  const rows = Object.entries(s.counters || {}).map(([k, v]) => {
    const rate = prev && dt > 0 && typeof prev[k] === "number" ? (v - prev[k]) / dt : null;
    const bad = /dropped|panic|restart|refused|error/.test(k);
    const c = bad && rate > 0 ? note("amber", k.replace(/_/g, " "), fmtNum(rate) + "/s now") : "green";
    return el("tr", { class: c }, el("td", {}, k.replace(/_/g, " ")), num(v), el("td", { class: "num" }, rate === null ? "–" : fmtNum(rate) + "/s"));
  });
  const zones = (s.zones || []).map((z) => el("tr", {}, el("td", {}, z.name), el("td", { class: "num" }, z.serial), num(z.records), el("td", { class: "mono" }, z.file)));
  const workers = (s.udp_workers || []).map((w) => el("tr", {}, el("td", {}, w.worker), el("td", { class: "addr" }, w.listener || "–"),
    el("td", {}, w.cpu === null || w.cpu === undefined ? "–" : w.cpu), num(w.queries)));
  return el("section", { class: "card", id: "dns-card" },
    el("h2", {}, "DNS", el("span", { class: "muted" }, "listening on " + ((s.listeners && s.listeners.dns) || []).join(", "))),
    el("div", { class: "grid2" },
      el("div", {}, table(["counter", "#total", "#rate"], rows)),
      el("div", {}, table(["zone", "#serial", "#records", "file"], zones), table(["udp worker", "listener", "cpu", "#queries"], workers))));
}

// ---- the world answer map ----------------------------------------------

// Asks for the map with the ETag of the one shown: 304 until the node's
// health recolours it. One request at a time.
async function refreshMap() {
  if (map.loading || !last) return;
  const services = last.status.services || [];
  if (!map.service || !services.includes(map.service)) map.service = services[0] || null;
  if (!map.service) {
    setMap(null, "this node's config has no service to draw");
    return;
  }
  map.loading = true;
  try {
    const headers = { Accept: "image/svg+xml" };
    const t = token();
    if (t) headers.Authorization = "Bearer " + t;
    if (map.etag && map.svg) headers["If-None-Match"] = map.etag;
    const r = await fetch("/v1/map.svg?service=" + encodeURIComponent(map.service), { headers, cache: "no-store", credentials: "omit" });
    if (r.status === 304) return;
    if (r.status !== 200) {
      let body = null;
      try { body = await r.json(); } catch (e) { body = null; }
      // Still drawing (503): keep the map shown, say so.
      setMap(r.status === 503 ? map.svg : null, (body && body.error) || "GET /v1/map.svg answered " + r.status);
      return;
    }
    const svg = parseSvg(await r.text());
    if (!svg) {
      setMap(null, "the map is not an SVG document");
      return;
    }
    map.etag = r.headers.get("ETag");
    map.epoch = r.headers.get("X-Geolb-Map-Epoch");
    setMap(svg, null);
  } catch (e) {
    setMap(map.svg, "cannot read the map: " + e.message);
  } finally {
    map.loading = false;
  }
}

// The SVG text as a node of this document, or null. It is parsed as XML
// (scripts in it never run, and the page's CSP forbids inline script and
// handlers anyway), and anything but drawing is taken out.
function parseSvg(text) {
  const doc = new DOMParser().parseFromString(text, "image/svg+xml");
  const root = doc.documentElement;
  if (!root || root.localName !== "svg" || root.namespaceURI !== SVGNS || doc.getElementsByTagName("parsererror").length) return null;
  for (const n of Array.from(root.querySelectorAll("script, foreignObject, iframe, image, a, use"))) n.remove();
  for (const n of [root, ...Array.from(root.querySelectorAll("*"))]) {
    for (const a of Array.from(n.attributes)) {
      if (/^on/i.test(a.name) || (/href$/i.test(a.name))) n.removeAttribute(a.name);
    }
  }
  const svg = document.importNode(root, true);
  svg.removeAttribute("width");
  svg.removeAttribute("height");
  svg.setAttribute("class", "worldmap");
  svg.setAttribute("role", "img");
  return svg;
}

function setMap(svg, error) {
  map.svg = svg;
  map.error = error;
  if (!svg) map.etag = null;
  const body = $("map-body");
  if (body) body.replaceChildren(...mapBody());
}

// The legend the map drew, as the page's own list: name, colour, share.
function mapLegend() {
  if (!map.svg) return [];
  return Array.from(map.svg.querySelectorAll("rect[data-legend]")).map((r) => ({
    name: r.getAttribute("data-legend"),
    fill: r.getAttribute("fill"),
    share: r.getAttribute("data-share") === "" ? null : Number(r.getAttribute("data-share")),
  }));
}

function regionColor(name, i) {
  const e = mapLegend().find((x) => x.name === name);
  return e && /^#[0-9a-f]{6}$/i.test(e.fill) ? e.fill : PALETTE[i % PALETTE.length];
}

function mapBody() {
  const legend = mapLegend().map((e) => el("li", {},
    svgEl("svg", { class: "swatch", viewBox: "0 0 10 10", width: 12, height: 12 }, svgEl("rect", { width: 10, height: 10, fill: /^#[0-9a-f]{6}$/i.test(e.fill) ? e.fill : "#888888" })),
    " " + e.name + (e.share === null || isNaN(e.share) ? "" : " " + (e.share * 100).toFixed(1) + "%")));
  return [
    map.error ? el("p", { class: map.svg ? "bad-text" : "muted" }, map.error) : null,
    map.svg ? el("ul", { class: "legend" }, legend) : null,
    map.svg ? el("div", { class: "map-wrap" }, map.svg) : (map.error ? null : el("p", { class: "muted" }, "drawing…")),
  ].filter((x) => x);
}

function mapCard(s) {
  const services = s.services || [];
  const select = el("select", { id: "map-service", on: { change: (ev) => { map.service = ev.target.value; setMap(null, null); refreshMap(); } } },
    services.map((n) => el("option", { value: n, selected: n === map.service }, n)));
  return el("section", { class: "card", id: "map-card" },
    el("h2", {}, "Answer map", services.length > 1 ? select : el("span", { class: "muted" }, map.service || ""),
      el("span", { class: "muted" }, "A answers by region under this node's live health" + (map.epoch ? " · epoch " + map.epoch : "") + " · redrawn when health changes")),
    el("div", { id: "map-body" }, mapBody()));
}

// ---- the drill timeline -------------------------------------------------

function addSample(summary) {
  if (tracking && tracking.armed_at !== summary.armed_at) samples = [];
  tracking = summary;
  for (const h of summary.history || []) {
    if (samples.length && h.at <= samples[samples.length - 1].t) continue;
    samples.push({ t: h.at, s: h });
  }
  while (samples.length > MAX_SAMPLES) samples.shift();
}

// The samples and, last, the counts of now.
function resolverPoints() {
  if (!tracking || !tracking.tracked) return samples;
  return samples.concat([{ t: tracking.now, s: tracking }]);
}

// What an event says, in words.
function eventWords(e) {
  const state = (x) => (x || "").replace("_", " ");
  const names = (list, more) => (list || []).join(", ") + (more ? " and " + more + " more" : "");
  if (e.kind === "override_set") return [state(e.state) + " " + e.target, e.until ? "until " + when(e.until) : "until undone"];
  if (e.kind === "override_removed") return ["undone: " + state(e.state) + " " + e.target, "set " + when(e.set_at)];
  if (e.kind === "override_expired") return ["expired: " + state(e.state) + " " + e.target, "set " + when(e.set_at)];
  if (e.kind === "epoch") {
    const parts = [];
    if ((e.down || []).length) parts.push("down: " + names(e.down, e.more_down));
    if ((e.up || []).length) parts.push("up: " + names(e.up, e.more_up));
    return ["epoch " + e.id, parts.join("; ") || "no endpoint went down or up (votes changed)"];
  }
  return [e.kind, ""];
}

// Whether the timeline is worth showing: an override with an expiry in
// force, one that came or went lately, or resolver tracking armed.
function timelineWanted(h, now) {
  const timed = (h.overrides || []).some((o) => o.until);
  const recent = (h.events || []).some((e) => e.kind !== "epoch" && now - e.at <= LINGER_S);
  const armed = tracking && tracking.armed;
  return timed || recent || armed;
}

function timelineCard(h) {
  const now = serverNow();
  if (!timelineWanted(h, now)) {
    const n = (h.events || []).length;
    return el("section", { class: "card", id: "timeline-card" },
      el("h2", {}, "Timeline", el("span", { class: "muted" }, "no drill, no expiring override and no resolver tracking in the last " + fmtDur(LINGER_S) +
        (n ? " · " + n + " health events kept" : ""))));
  }
  const events = (h.events || []).filter((e) => now - e.at <= 3600);
  const firstOverride = events.find((e) => e.kind !== "epoch");
  const pts = resolverPoints();
  let t0 = Math.min(firstOverride ? firstOverride.at : now, pts.length ? pts[0].t : now, ...(h.overrides || []).map((o) => o.set_at));
  t0 = Math.max(t0 - 10, now - 3600);
  // The future shown up to the latest expiry, but never longer than the past.
  const t1 = Math.min(Math.max(now + 5, ...(h.overrides || []).map((o) => o.until || 0)), now + Math.max(60, now - t0));
  const shown = events.filter((e) => e.at >= t0);
  return el("section", { class: "card", id: "timeline-card" },
    el("h2", {}, "Timeline", el("span", { class: "muted" }, "overrides, health epochs" + (pts.length ? " and tracked resolvers" : "") + " from " + when(t0) + " · now at the red line")),
    timelineSvg(h, shown, t0, t1, now),
    el("ul", { class: "events mono" }, shown.slice().reverse().map((e) => {
      const [what, detail] = eventWords(e);
      return el("li", { class: "event " + e.kind }, el("span", { class: "muted" }, when(e.at) + " "), el("b", {}, what), detail ? " · " + detail : "");
    })));
}

function timelineSvg(h, events, t0, t1, now) {
  const W = 1000, left = 150, right = 990;
  const x = (t) => left + ((t - t0) / Math.max(1, t1 - t0)) * (right - left);
  const kids = [];
  let y = 18;
  // Time axis.
  const step = [10, 30, 60, 120, 300, 600, 900, 1800, 3600].find((s) => (t1 - t0) / s <= 8) || 3600;
  for (let t = Math.ceil(t0 / step) * step; t <= t1; t += step) {
    kids.push(svgEl("line", { x1: x(t), x2: x(t), y1: 20, y2: "100%", class: "grid" }));
    kids.push(svgEl("text", { x: x(t), y: 12, class: "tick", "text-anchor": "middle" }, new Date(t * 1000).toISOString().slice(11, 19)));
  }
  y = 30;
  // One lane per override target: from when it was set to when it ended
  // (expired, undone) or will end.
  const lanes = new Map();
  for (const e of events) {
    if (e.kind === "epoch") continue;
    if (!lanes.has(e.target)) lanes.set(e.target, []);
    const spans = lanes.get(e.target);
    if (e.kind === "override_set") {
      // A new override of the same target replaces the one before.
      for (const sp of spans) if (sp.to === null) sp.to = e.at;
      spans.push({ from: e.at, to: null, until: e.until, state: e.state });
    }
    else {
      const open = spans.filter((sp) => sp.to === null).pop();
      if (open) open.to = e.at;
      else spans.push({ from: Math.max(t0, e.set_at), to: e.at, until: e.until, state: e.state });
    }
  }
  for (const o of h.overrides || []) {
    if (!lanes.has(o.target)) lanes.set(o.target, [{ from: Math.max(t0, o.set_at), to: null, until: o.until, state: o.state }]);
  }
  for (const [target, spans] of lanes) {
    kids.push(svgEl("text", { x: 4, y: y + 11, class: "lane" }, target));
    for (const sp of spans) {
      const end = sp.to !== null ? sp.to : now;
      kids.push(svgEl("rect", { x: x(sp.from), y, width: Math.max(2, x(end) - x(sp.from)), height: 14, class: "span " + sp.state },
        svgEl("title", {}, sp.state.replace("_", " ") + " " + target)));
      if (sp.to === null && sp.until && sp.until > now) {
        kids.push(svgEl("rect", { x: x(now), y, width: Math.max(1, Math.min(x(sp.until), right) - x(now)), height: 14, class: "span pending " + sp.state }));
        kids.push(svgEl("text", { x: Math.min(x(sp.until), right) - 2, y: y + 11, class: "tick", "text-anchor": "end" }, "expires " + (sp.until > t1 ? "in " + fmtDur(sp.until - now) : when(sp.until).slice(11))));
      }
      kids.push(svgEl("text", { x: x(sp.from) + 3, y: y + 11, class: "span-label" }, sp.state.replace("_", " ")));
    }
    y += 20;
  }
  // Health epochs: a mark per new epoch, red when it took something down.
  kids.push(svgEl("text", { x: 4, y: y + 11, class: "lane" }, "health epochs"));
  for (const e of events.filter((e) => e.kind === "epoch")) {
    const down = (e.down || []).length > 0;
    const [what, detail] = eventWords(e);
    kids.push(svgEl("rect", { x: x(e.at) - 2, y, width: 4, height: 14, class: down ? "mark down" : "mark up" }, svgEl("title", {}, what + " · " + detail)));
  }
  y += 24;
  // Tracked resolvers: per region of the first service, the share whose
  // latest answer came from it (solid) and the share holding it within its
  // TTL (dashed).
  const pts = resolverPoints().filter((p) => p.t >= t0);
  if (pts.length) {
    const service = map.service && pts[pts.length - 1].s.regions.some((r) => r.service === map.service)
      ? map.service : ((pts[pts.length - 1].s.regions[0] || {}).service);
    const regions = [];
    for (const p of pts) for (const r of p.s.regions) if (r.service === service && !regions.includes(r.region)) regions.push(r.region);
    const top = y, height = 110;
    const yv = (v) => top + height - v * height;
    kids.push(svgEl("text", { x: 4, y: top + 11, class: "lane" }, "tracked resolvers"));
    kids.push(svgEl("text", { x: 4, y: top + 25, class: "tick" }, (service || "").replace(/\.$/, "")));
    kids.push(svgEl("line", { x1: left, x2: right, y1: yv(0), y2: yv(0), class: "axis" }));
    kids.push(svgEl("line", { x1: left, x2: right, y1: yv(1), y2: yv(1), class: "grid" }));
    kids.push(svgEl("text", { x: left - 4, y: yv(1) + 4, class: "tick", "text-anchor": "end" }, "100%"));
    kids.push(svgEl("text", { x: left - 4, y: yv(0), class: "tick", "text-anchor": "end" }, "0%"));
    regions.forEach((region, i) => {
      const color = regionColor(region, i);
      for (const [field, dash] of [["resolvers", null], ["holding", "4 3"]]) {
        const line = pts.map((p) => {
          const all = p.s.regions.filter((r) => r.service === service).reduce((a, r) => a + r.resolvers, 0);
          const r = p.s.regions.find((r) => r.service === service && r.region === region);
          return x(p.t).toFixed(1) + "," + yv(all && r ? r[field] / all : 0).toFixed(1);
        }).join(" ");
        kids.push(svgEl("polyline", { points: line, fill: "none", stroke: color, "stroke-width": 2, "stroke-dasharray": dash, class: "share" },
          svgEl("title", {}, (region || "no region") + ": " + (field === "resolvers" ? "latest answer from it" : "holding it within its TTL"))));
        const end = line.split(" ").pop().split(",");
        if (field === "resolvers") kids.push(svgEl("circle", { cx: end[0], cy: end[1], r: 3, fill: color }));
      }
      const lastRow = pts[pts.length - 1].s.regions.find((r) => r.service === service && r.region === region) || { resolvers: 0, holding: 0 };
      kids.push(svgEl("text", { x: 4, y: top + 42 + i * 14, class: "tick", fill: color }, (region || "no region") + " " + lastRow.resolvers + " (" + lastRow.holding + " in TTL)"));
    });
    y = top + height + 10;
  }
  kids.push(svgEl("line", { x1: x(now), x2: x(now), y1: 20, y2: y, class: "now" }));
  return svgEl("svg", { class: "timeline", viewBox: "0 0 " + W + " " + y, role: "img" }, kids);
}

// ---- actions -----------------------------------------------------------

function confirmAction(kind, target) {
  pending = { kind, target };
  $("act-title").textContent = kind === "drain" ? "Drain " + target + "?" : "Undo the override of " + target + "?";
  $("act-text").textContent = kind === "drain"
    ? "It leaves DNS answers and takes no new tier connections until the time below runs out or someone undoes it."
    : "It goes back to what its health checks say.";
  $("act-for-label").hidden = kind !== "drain";
  $("act-for").disabled = kind !== "drain";
  $("act-error").textContent = "";
  $("act").showModal();
}

async function onConfirm(ev) {
  ev.preventDefault();
  if (!pending) return;
  const body = { target: pending.target };
  if (pending.kind === "drain") body.for = $("act-for").value.trim();
  const r = await post("/v1/" + pending.kind, body);
  if (r.code === 200) {
    $("act").close();
    pending = null;
    refresh();
  } else {
    $("act-error").textContent = "Refused (" + r.code + "): " + ((r.body && r.body.error) || "");
  }
}

// ---- start -------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    $("token").value = "";
    $("login").hidden = true;
    refresh();
  });
  $("pause").addEventListener("click", () => {
    paused = !paused;
    $("pause").textContent = paused ? "resume" : "pause";
    if (!paused) refresh();
    else clearTimeout(timer);
  });
  $("act-form").addEventListener("submit", onConfirm);
  $("act-cancel").addEventListener("click", () => { pending = null; $("act").close(); });
  setInterval(tick, 1000);
  refresh();
});
